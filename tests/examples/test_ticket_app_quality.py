"""The example app's quality story, end to end on both databases through the one check loop (no Prefect).

a) a candidate worse only by the online judge's score is rolled back during a ramp stage;
b) late feedback, sent with the exposure token after a ramp, is credited to the arm and stage that served it;
c) eval cases exported from production (`rollout eval export --from-online / --from-shadow`) run in an eval stage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from examples.ticket_app.models import FakeSummarizer, ModelProfile
from examples.ticket_app.service import TicketService, TicketTraffic
from rollout import RolloutClient
from rollout.adapters.cli.main import app as cli
from rollout.app.evals import gate_rows, load_cases
from rollout.app.plans import load_plan
from rollout.app.reconcile import check, claim, run_eval_stage
from rollout.app.runner import run_foreground
from rollout.core.controller import Status
from rollout.store.db import transaction
from rollout.store.models import Outcome

MODELS = {
    "small-v1": FakeSummarizer(ModelProfile("small-v1")),
    "large-v2": FakeSummarizer(ModelProfile("large-v2", skill=0.94)),
    # The baseline's dice (same latency, cost and refusals), fewer facts kept: only the judge can tell.
    "terse-v2": FakeSummarizer(ModelProfile("terse-v2", seed="small-v1", skill=0.55)),
}
JUDGE = {"name": "key_facts", "scorer": "examples.ticket_app.scoring:key_facts_judge", "sample": 0.5,
         "budget": {"per_hour": 5.0}, "metric": {"kind": "continuous", "better": "higher", "margin": 0.05}}


def plan(candidate: str, *, stages: list[dict[str, Any]] | None = None, judge: bool = True) -> dict[str, Any]:
    document: dict[str, Any] = {
        "flag": "ticket-summarizer", "baseline": "small-v1", "candidate": candidate,
        "strata": [{"name": "free", "match": {"attribute": "tier", "equals": "free"}}],
        "stages": stages or [{"name": "canary", "kind": "ramp", "percent": 50, "min_samples": 60, "min_duration": "1s"},
                             {"name": "full", "kind": "full"}],
        "metrics": [
            {"name": "error", "kind": "binary", "better": "lower", "margin": 0.03},
            {"name": "refusal", "kind": "binary", "better": "lower", "margin": 0.03},
            {"name": "cost_usd", "kind": "continuous", "better": "lower", "margin": "25%", "statistic": "mean"},
        ],
        "check_interval": "0.2s", "completion": {"tolerance": "20%"},
    }
    if judge:
        document["online_evals"] = [JUDGE]
    return document


def pumping(client: RolloutClient, traffic: TicketTraffic, *, requests: int = 200,
            seconds: float = 45.0) -> Callable[[float], None]:
    """The loop's sleep: users send tickets meanwhile. Past `seconds` it interrupts the loop (on_abort applies),
    so a rollout that never decides fails the test instead of hanging it."""
    deadline = time.monotonic() + seconds

    def sleep(_interval: float) -> None:
        if time.monotonic() > deadline:
            raise KeyboardInterrupt
        client.refresh()
        traffic.run(requests)
        client.flush(timeout=30)

    return sleep


def test_a_candidate_worse_only_by_the_judges_score_is_rolled_back_in_the_ramp(engine: Engine, db_url: str) -> None:
    # Given a candidate as fast, cheap and reliable as the baseline that keeps fewer of the tickets' key facts,
    # and an online judge grading half of the users' answers (both arms alike) within an hourly budget
    document = plan("terse-v2")
    document["metrics"].append({"name": "latency_ms", "kind": "continuous", "better": "lower", "margin": "25%",
                                "scale": "log"})
    with RolloutClient(db_url, listen=False, refresh_interval=0.1, capture_samples=True) as client:
        service = TicketService(client, "ticket-summarizer", MODELS, timeout=None)
        traffic = TicketTraffic(service, seed=5)
        # When the rollout is checked by the one loop while users send tickets
        ending = run_foreground(engine, document, actor="tester", sleep=pumping(client, traffic))
    # Then it is rolled back in the ramp, for the judge's metric, and no other metric is what stopped it
    assert ending.state.status is Status.ROLLED_BACK, ending.reason
    assert load_plan(document).stages[ending.state.stage_index].name == "canary"
    assert "key_facts" in ending.reason, ending.reason
    assert not any(m in ending.reason for m in ("error", "refusal", "cost_usd", "latency_ms")), ending.reason


def test_late_feedback_is_credited_to_the_arm_and_stage_that_served_it_after_a_ramp(engine: Engine,
                                                                                    db_url: str) -> None:
    # Given a canary at 20 % then full release, and an app that keeps every answer's exposure token
    document = plan("large-v2", judge=False, stages=[
        {"name": "canary", "kind": "ramp", "percent": 20, "min_samples": 40, "min_duration": "1s"},
        {"name": "full", "kind": "full"}])
    served: dict[str, str] = {}
    with RolloutClient(db_url, listen=False, refresh_interval=0.1) as client:
        service = TicketService(client, "ticket-summarizer", MODELS, feedback_delay=3600.0)  # later than the test
        traffic = TicketTraffic(service, seed=6)

        def note(result: Any) -> None:  # who was served what in the canary, before the allocation moved
            if result.step.state.status is Status.RAMPING and not served:
                client.refresh()
                traffic.run(50)
                served.update({u: t for u, t in service.tokens.items()})

        ending = run_foreground(engine, document, actor="tester", on_check=note, sleep=pumping(client, traffic))
        assert ending.state.status is Status.PROMOTED, ending.reason
        # When, after full release (everyone is on the candidate now), a canary user served the baseline
        # sends their thumbs-down with the token of that answer
        client.refresh()
        baseline_user = next(u for u in served if client.assign("ticket-summarizer", u, {}).variant == "large-v2"
                             and _served_variant(client, served[u]) == "small-v1")
        client.feedback(served[baseline_user], thumbs_up=False)
        client.flush(timeout=30)
    # Then the stored outcome is the baseline's, in the canary stage, not the candidate's in the full stage
    with transaction(engine) as s:
        rows = s.execute(select(Outcome.variant, Outcome.stage, Outcome.value)
                         .where(Outcome.metric == "thumbs_up")).all()
    assert [(r.variant, r.stage, r.value) for r in rows] == [("small-v1", 0, 0.0)]


def _served_variant(client: RolloutClient, token: str) -> str:
    return client._served(token).variant  # noqa: SLF001 - the test reads what the token says was served


@pytest.mark.parametrize("source", ["--from-online", "--from-shadow"])
def test_eval_cases_exported_from_production_run_in_an_eval_stage(engine: Engine, db_url: str, tmp_path: Path,
                                                                  source: str) -> None:
    # Given a rollout that went through shadow and a canary with the online judge, the app keeping samples
    document = plan("large-v2", stages=[
        {"name": "shadow", "kind": "shadow", "sample": 0.5, "min_samples": 40, "min_duration": "1s",
         "rate_limit": 5000},
        {"name": "canary", "kind": "ramp", "percent": 50, "min_samples": 40, "min_duration": "1s"},
        {"name": "full", "kind": "full"}])
    with RolloutClient(db_url, listen=False, refresh_interval=0.1, capture_samples=True) as client:
        traffic = TicketTraffic(TicketService(client, "ticket-summarizer", MODELS), seed=7)
        reasons: list[str] = []
        ending = run_foreground(engine, document, actor="tester", sleep=pumping(client, traffic, seconds=40),
                                on_check=lambda result: reasons.append(result.step.reason))
    assert ending.state.status is Status.PROMOTED, reasons[-3:]
    # When the CLI exports eval cases from what production saw
    out = tmp_path / "cases.jsonl"
    result = CliRunner().invoke(cli, ["--db", db_url, "eval", "export", "ticket-summarizer", source,
                                      "--sample", "40", "--stratify-by", "stratum", "--out", str(out)])
    assert result.exit_code == 0, result.output
    cases = load_cases(out)
    assert len(cases) >= 20 and all(isinstance(c.input, dict) and c.input.get("facts") for c in cases)
    # Then the file, unchanged, gates a next candidate: one as good passes, one that drops facts is stopped
    for candidate_fn, passes in (("candidate_good", True), ("candidate_terse", False)):
        verdict = _run_gate(engine, out, candidate_fn)
        assert (verdict == "non_inferior") is passes, (candidate_fn, verdict)


def _run_gate(engine: Engine, cases: Path, candidate_fn: str) -> str:
    """The eval stage of a next rollout (its own flag: the exported one is promoted) on the exported file."""
    document = plan(candidate_fn.removeprefix("candidate_"), judge=False, stages=[
        {"name": "offline", "kind": "eval", "eval": {
            "cases": str(cases), "baseline": "examples.ticket_app.models:baseline",
            "candidate": f"examples.ticket_app.models:{candidate_fn}",
            "scorer": "examples.ticket_app.scoring:covers_ticket_facts", "margin": 0.10, "min_cases": 20}},
        {"name": "full", "kind": "full", "approval": "required"}])
    document["flag"] = f"next-{candidate_fn.replace('_', '-')}"
    run = claim(engine, load_plan(document), document, owner="test", actor="tester")
    state = check(run).step.state
    assert state.status is Status.EVALUATING, state.reason
    failure, _ = run_eval_stage(run, state.stage_index)
    check(run, eval_failure=failure)
    with transaction(engine) as s:
        return str(gate_rows(s, run.rollout_id, 0, run.plan)[0]["verdict"])
