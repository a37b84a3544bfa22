"""Online judges in the one check loop, on a real database: grades are judged at once, and harm rolls back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from rollout.app.loop import Hooks, drive
from rollout.app.plans import load_plan
from rollout.app.reconcile import CheckResult, RolloutRun, claim
from rollout.app.status import rollout_history, rollout_status
from rollout.core.controller import Status
from rollout.store import flags as flag_store
from rollout.store.db import transaction
from rollout.store.models import Outcome
from rollout.store.outcomes import flag_ids
from rollout.store.samples import insert_samples
from rollout.testing import FakeClock

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def quoted_score(_input: str, output: str) -> float:
    """A deterministic judge: the answer ends with the score it deserves."""
    return float(output.rsplit(" ", 1)[-1])


@dataclass(frozen=True)
class _Grade:
    score: float
    cost_usd: float


class PricedJudge:
    """A deterministic judge whose every grade costs a cent, like an LLM call would."""

    def grade(self, _input: str, output: str) -> _Grade:
        return _Grade(quoted_score(_input, output), 0.01)

    def __call__(self, _input: str, output: str) -> float:
        return self.grade(_input, output).score


PRICED = PricedJudge()


def plan_doc(scorer: str = f"{__name__}:quoted_score", budget: dict[str, float] | None = None,
             first: dict[str, Any] | None = None) -> dict[str, Any]:
    judge: dict[str, Any] = {"name": "faithfulness", "scorer": scorer, "sample": 1.0,
                             "metric": {"kind": "continuous", "better": "higher", "margin": 0.05}}
    if budget is not None:
        judge["budget"] = budget
    return {
        "flag": "summarizer", "baseline": "current", "candidate": "new-model",
        "stages": [first or {"name": "canary", "kind": "ramp", "percent": 50, "min_samples": 20},
                   {"name": "full", "kind": "full"}],
        "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.05}],
        "online_evals": [judge], "check_interval": "30s",
    }


def keep_answers(engine: Engine, run: RolloutRun, stage: int, n: int, *, candidate_score: float) -> None:
    """What the SDK keeps for the judges (inputs and answers of both arms, one unit each), and the errors the
    app recorded for the same requests (equal in both arms: only the judge's grades can tell them apart)."""
    with transaction(engine) as s:
        flag_id = flag_ids(s)["summarizer"]
    rows, errors = [], []
    for i in range(n):
        candidate = i % 2 == 0
        variant = "new-model" if candidate else "current"
        score = (candidate_score if candidate else 0.85) + (i % 5) * 0.02
        rows.append({"flag_id": flag_id, "rollout_id": run.rollout_id, "stage": stage, "variant": variant,
                     "stratum": "default", "unit_hash": 10_000 + i, "source": "online", "input": f"ticket {i}",
                     "output": f"summary {i} {score:.2f}", "created_at": START})
        errors.append({"flag_id": flag_id, "rollout_id": run.rollout_id, "stage": stage, "variant": variant,
                       "stratum": "default", "unit_hash": 10_000 + i, "metric": "error",
                       "value": 0.0, "recorded_at": START})
    insert_samples(engine, rows)
    with transaction(engine) as s:
        s.execute(insert(Outcome), errors)


class Driven:
    """The loop on a fake clock; answers are kept once, right after the check that entered the ramp stage."""

    def __init__(self, engine: Engine, doc: dict[str, Any], *, candidate_score: float, answers: int = 200) -> None:
        self.engine, self.clock = engine, FakeClock(START)
        self.run = claim(engine, load_plan(doc), doc, owner="ctl", actor="alice", clock=self.clock)
        self.results: list[CheckResult] = []
        self.graded_before: list[int] = []   # results seen when each grading round started
        self.candidate_score, self.answers, self.kept_at = candidate_score, answers, -1

    def on_check(self, run: RolloutRun, result: CheckResult) -> None:
        self.results.append(result)
        state = result.step.state
        if self.kept_at < 0 and state.status is Status.RAMPING:
            keep_answers(self.engine, run, state.stage_index, self.answers, candidate_score=self.candidate_score)
            self.kept_at = len(self.results)

    def sleep(self, seconds: float) -> None:
        if len(self.results) > 40:
            raise RuntimeError("the rollout never ended: " + self.results[-1].step.reason)
        self.clock.sleep(seconds)

    def grade(self, run: RolloutRun) -> Any:
        from rollout.app.online_evals import grade_online

        self.graded_before.append(len(self.results))
        return grade_online(run)

    def drive(self) -> Any:
        return drive(self.run, Hooks(sleep=self.sleep, on_check=self.on_check, grade=self.grade,
                                     emit=lambda run, event: None))


def test_a_candidate_worse_only_by_the_judges_grades_is_rolled_back_at_the_next_check(engine: Engine) -> None:
    # Given a ramp stage whose candidate answers are graded far lower by a deterministic judge
    driven = Driven(engine, plan_doc(), candidate_score=0.40)
    # When the loop runs (answers are kept right after the check that entered the stage)
    ending = driven.drive()
    # Then the very next check, after one grading round, rolls back on the judge's metric
    assert ending.state.status is Status.ROLLED_BACK, ending.reason
    assert "faithfulness" in ending.reason
    assert len(driven.results) == driven.kept_at + 1
    assert driven.graded_before[-1] == driven.kept_at   # graded before the check that judged the grades
    with transaction(engine) as s:
        assert flag_store.get_flag(s, "summarizer").phase.value == "rolled_back"


def test_a_candidate_graded_as_well_passes_the_stage(engine: Engine) -> None:
    # Given the same stage, with candidate answers graded as well as the baseline's
    driven = Driven(engine, plan_doc(), candidate_score=0.85, answers=1_000)
    # When the loop runs
    ending = driven.drive()
    # Then the judge's metric is proven within its margin, like the error rate, and the candidate is released
    assert ending.state.status is Status.PROMOTED, ending.reason


def test_a_spent_budget_is_shown_with_its_reason_in_status_and_cost(engine: Engine) -> None:
    # Given a judge whose grades cost a cent each and a budget of five cents for the rollout
    driven = Driven(engine, plan_doc(scorer=f"{__name__}:PRICED", budget={"total": 0.05}), candidate_score=0.85,
                    answers=40)
    with pytest.raises(RuntimeError):
        driven.drive()   # stopped at the test's limit: 5 grades are too few for the stage to pass
    # When status is read
    with transaction(engine) as s:
        view = rollout_status(s, "summarizer", now=driven.clock.now())
        history = rollout_history(s, "summarizer", now=driven.clock.now())
    # Then the judge is shown paused, with why, and its spend counts against its budget
    (judge,) = view.rollout.judges
    assert judge.paused is not None and "budget of $0.05 for the rollout is spent" in judge.paused
    assert judge.grades == 5 and judge.spent_total == pytest.approx(0.05)
    (budget,) = view.rollout.cost.budgets
    assert budget.budget == "judge faithfulness in total" and budget.share == pytest.approx(1.0)
    judge_line = [c for c in view.rollout.cost.lines if c.arm == "judge"]
    assert [(c.variant, c.total) for c in judge_line] == [("faithfulness", pytest.approx(0.05))]
    assert history.cost == view.rollout.cost
    # And the summary card says so too
    from rollout.adapters.prefect.flow import summary_markdown

    assert "**paused**: judge faithfulness: budget of $0.05" in summary_markdown(view)


def test_cost_is_attributed_per_arm_and_stratum_with_the_shadow_budget_share(engine: Engine) -> None:
    # Given a shadow stage with a budget, then a ramp stage, and cost outcomes of each arm in each
    doc = plan_doc(first={"name": "shadow", "kind": "shadow", "sample": 0.5,
                          "budget": {"total": 10.0, "cost_metric": "cost_usd"}})
    doc["stages"].insert(1, {"name": "canary", "kind": "ramp", "percent": 10})
    run = claim(engine, load_plan(doc), doc, owner="ctl", actor="alice", clock=FakeClock(START))
    with transaction(engine) as s:
        flag_id = flag_ids(s)["summarizer"]
    cells = [  # stage, variant, stratum, metric, value, rows
        (0, "current", "default", "cost_usd", 0.01, 100), (0, "new-model", "default", "cost_usd", 0.02, 100),
        (1, "current", "default", "cost_usd", 0.01, 50), (1, "new-model", "free", "cost_usd", 0.03, 10),
        (1, "new-model", "free", "tokens_out", 300.0, 10), (1, "new-model", "free", "latency_ms", 900.0, 10),
    ]
    with transaction(engine) as s:
        s.execute(insert(Outcome), [
            {"flag_id": flag_id, "rollout_id": run.rollout_id, "stage": g, "variant": v, "stratum": st,
             "unit_hash": i, "metric": m, "value": x, "recorded_at": START}
            for g, v, st, m, x, rows in cells for i in range(rows)])
    # When status is read
    with transaction(engine) as s:
        cost = rollout_status(s, "summarizer", now=START).rollout.cost
    # Then each arm and stratum has its total per cost-like metric (latency is no cost), shadow apart
    got = {(c.arm, c.variant, c.stratum, c.metric): round(c.total, 6) for c in cost.lines}
    assert got == {
        ("baseline", "current", "default", "cost_usd"): 1.5,
        ("shadow", "new-model", "default", "cost_usd"): 2.0,
        ("candidate", "new-model", "free", "cost_usd"): 0.3,
        ("candidate", "new-model", "free", "tokens_out"): 3000.0,
        ("judge", "faithfulness", "*", "cost_usd"): 0.0,
    }
    # And the shadow stage's candidate spend is a fifth of its budget
    (budget,) = cost.budgets
    assert budget.budget == "shadow stage shadow in total" and budget.share == pytest.approx(0.2)
