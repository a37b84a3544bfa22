"""Online judges grade kept answers within their budget, and each grade becomes one outcome of its exposure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from rollout.adapters.llm_judge import LlmJudge
from rollout.app.online_evals import grade_round
from rollout.core.online_eval import OnlineEval
from rollout.store.db import transaction
from rollout.store.flags import create_flag
from rollout.store.models import Outcome, SampleScore
from rollout.store.outcomes import flag_ids
from rollout.store.samples import GradeRecord, record_grades, ungraded
from rollout.store.samples import insert_samples
from rollout.testing.chat_endpoint import FakeChatEndpoint

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ROLLOUT = 7


def _flag(engine) -> int:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        create_flag(s, "summarizer", variants=["small-v1", "large-v2"], actor="test")
    with transaction(engine) as s:
        return flag_ids(s)["summarizer"]


def _keep(engine, flag_id: int, n: int, *, stage: int = 2) -> None:  # type: ignore[no-untyped-def]
    # Half the answers from each arm; the candidate's mention "wrong" so the judge grades them low
    insert_samples(engine, [
        {"flag_id": flag_id, "rollout_id": ROLLOUT, "stage": stage, "variant": v, "stratum": "free",
         "unit_hash": 1000 + i, "source": "online", "category": "billing", "input": f"ticket {i}",
         "output": f"summary {i}" + (" wrong" if v == "large-v2" else ""), "created_at": NOW}
        for i in range(n) for v in (("small-v1",) if i % 2 else ("large-v2",))])


def _grader(prompt: str) -> str:
    return "2" if "wrong" in prompt else "5"


def _outcomes(engine) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        rows = s.execute(select(Outcome.variant, Outcome.value, Outcome.stage, Outcome.rollout_id)
                         .where(Outcome.metric == "faithfulness")).all()
    by: dict[str, list[float]] = {}
    for variant, value, stage, rollout_id in rows:
        assert (stage, rollout_id) == (2, ROLLOUT)  # credited to the stage and rollout that served the answer
        by.setdefault(variant, []).append(value)
    return by


def test_a_round_grades_every_kept_answer_and_credits_the_arm_that_gave_it(engine) -> None:  # type: ignore[no-untyped-def]
    # Given 40 kept answers from both arms and a judge with no budget limit
    flag_id = _flag(engine)
    _keep(engine, flag_id, 40)
    spec = OnlineEval("faithfulness", scorer="unused:here", sample=0.1)
    with FakeChatEndpoint(grade=_grader) as endpoint:
        judge = LlmJudge(base_url=endpoint.base_url, model="grader", rubric="faithful?", scale=(1, 5),
                         price_per_mtok=(100.0, 100.0))
        # When one round runs
        result = grade_round(engine, flag_id=flag_id, rollout_id=ROLLOUT, spec=spec, judge=judge, now=NOW)
        judge.close()
    # Then every answer is graded once, as an outcome of the arm that served it
    assert (result.graded, result.failed, result.paused) == (40, 0, None)
    by = _outcomes(engine)
    assert sorted(by) == ["large-v2", "small-v1"]
    assert set(by["large-v2"]) == {0.25} and set(by["small-v1"]) == {1.0}
    assert result.spent_usd > 0


def test_a_spent_budget_pauses_grading_and_says_why(engine) -> None:  # type: ignore[no-untyped-def]
    # Given a judge whose every grade costs about $0.01 and an hourly budget of $0.05
    flag_id = _flag(engine)
    _keep(engine, flag_id, 200)
    spec = OnlineEval("faithfulness", scorer="unused:here", sample=0.1, per_hour=0.05)
    with FakeChatEndpoint(grade=_grader) as endpoint:
        judge = LlmJudge(base_url=endpoint.base_url, model="grader", rubric="faithful?", scale=(1, 5),
                         price_per_mtok=(400.0, 400.0))
        # When rounds run until the budget stops them
        rounds = [grade_round(engine, flag_id=flag_id, rollout_id=ROLLOUT, spec=spec, judge=judge,
                              now=NOW, concurrency=4) for _ in range(6)]
        judge.close()
    # Then grading stops with the reason, having spent at most one round beyond the budget
    assert rounds[-1].paused is not None and "hourly budget" in rounds[-1].paused
    assert rounds[-1].graded == 0
    per_grade = rounds[0].spent_usd / rounds[0].graded
    assert rounds[-1].spent_hour <= spec.per_hour + 4 * per_grade
    # And an hour later the budget is free again
    later = grade_round(engine, flag_id=flag_id, rollout_id=ROLLOUT, spec=spec, judge=lambda i, o: 1.0,
                        now=NOW + timedelta(hours=1, minutes=1))
    assert later.paused is None and later.graded > 0


def test_a_failing_judge_stores_the_failure_and_no_outcome(engine) -> None:  # type: ignore[no-untyped-def]
    flag_id = _flag(engine)
    _keep(engine, flag_id, 6)

    def broken(_input: str, _output: str) -> float:
        raise TimeoutError("judge endpoint timed out")

    spec = OnlineEval("faithfulness", scorer="unused:here", sample=0.1)
    result = grade_round(engine, flag_id=flag_id, rollout_id=ROLLOUT, spec=spec, judge=broken, now=NOW)
    assert (result.graded, result.failed) == (0, 6)
    assert _outcomes(engine) == {}
    with transaction(engine) as s:
        errors = s.scalars(select(SampleScore.error)).all()
    assert len(errors) == 6 and all("timed out" in e for e in errors)


def test_a_replayed_grade_adds_no_second_outcome(engine) -> None:  # type: ignore[no-untyped-def]
    # Given samples graded once
    flag_id = _flag(engine)
    _keep(engine, flag_id, 4)
    with transaction(engine) as s:
        samples = ungraded(s, flag_id=flag_id, rollout_id=ROLLOUT, judge="faithfulness", limit=10)
    grades = [GradeRecord(x.id, 0.5, 0.001) for x in samples]
    with transaction(engine) as s:
        assert len(record_grades(s, flag_id=flag_id, judge="faithfulness", samples=samples, grades=grades,
                                 now=NOW)) == 4
    # When the same grades are written again (a retry after a lost commit reply)
    with transaction(engine) as s:
        again = record_grades(s, flag_id=flag_id, judge="faithfulness", samples=samples, grades=grades, now=NOW)
    # Then nothing new is stored
    assert again == set()
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(Outcome)) == 4


@pytest.mark.parametrize(("unit_hash", "sample", "kept"), [
    (0, 0.05, True), (499, 0.05, True), (500, 0.05, False), (10_499, 0.05, True), (9_999, 1.0, True),
])
def test_sampling_is_by_unit_hash(unit_hash: int, sample: float, kept: bool) -> None:
    assert OnlineEval("q", scorer="m:f", sample=sample).samples(unit_hash) is kept


def test_a_shadow_pairs_answers_are_graded_as_paired_outcomes(engine) -> None:  # type: ignore[no-untyped-def]
    # Given both answers of three shadow pairs (what shadow() keeps, and what call() runs in a shadow stage)
    flag_id = _flag(engine)
    insert_samples(engine, [
        {"flag_id": flag_id, "rollout_id": ROLLOUT, "stage": 0, "variant": v, "stratum": "free", "unit_hash": 50 + i,
         "source": "shadow", "pair_id": 900 + i, "category": None, "input": f"ticket {i}",
         "output": f"summary {i}" + (" wrong" if v == "large-v2" else ""), "created_at": NOW}
        for i in range(3) for v in ("small-v1", "large-v2")])
    spec = OnlineEval("faithfulness", scorer="unused:here", sample=0.1)
    # When a round grades them with a plain scorer
    result = grade_round(engine, flag_id=flag_id, rollout_id=ROLLOUT, spec=spec, now=NOW,
                         judge=lambda _input, output: 0.2 if "wrong" in output else 0.9)
    # Then each grade is an outcome carrying its pair's id, so the shadow judge compares the pair
    assert result.graded == 6
    with transaction(engine) as s:
        rows = s.execute(select(Outcome.pair_id, Outcome.variant, Outcome.value)
                         .where(Outcome.metric == "faithfulness")).all()
    assert sorted((r.pair_id, r.variant, r.value) for r in rows) == sorted(
        (900 + i, v, 0.2 if v == "large-v2" else 0.9) for i in range(3) for v in ("small-v1", "large-v2"))
