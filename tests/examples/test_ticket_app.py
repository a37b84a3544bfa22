"""End to end with the example app: eval gate -> shadow -> ramps, on both databases, without Prefect.

Three candidates, as the shadow issue asks: one that passes everything, one
worse only on billing tickets (caught at the eval gate, before any user), and
one as good offline but slower and costlier on live traffic (caught in shadow).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from examples.ticket_app.models import FakeSummarizer, ModelProfile
from examples.ticket_app.service import TicketService, TicketTraffic
from rollout import RolloutClient
from rollout.core.controller import Status
from rollout.app.evals import gate_rows
from rollout.app.plans import load_plan
from rollout.app.reconcile import check, claim, run_eval_stage
from rollout.store import flags as flag_store
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction

CASES = str(Path(__file__).resolve().parents[2] / "examples" / "ticket_app" / "cases.jsonl")
# Live models really sleep a little (1/500 of the latency they simulate), so shadow() measures it.
LIVE = {name: FakeSummarizer(ModelProfile(**profile, sleep_scale=0.002)) for name, profile in {
    "small-v1": {"name": "small-v1"},
    "large-v2": {"name": "large-v2", "skill": 0.94},
    "large-v2-billing": {"name": "large-v2-billing", "skill": 0.94, "skill_by_category": {"billing": 0.35}},
    "huge-v3": {"name": "huge-v3", "skill": 0.93, "latency_ms": 650.0, "cost_usd": 0.0055},
}.items()}


def plan(candidate: str, candidate_fn: str) -> dict[str, Any]:
    return {
        "flag": "ticket-summarizer", "baseline": "small-v1", "candidate": candidate,
        "strata": [{"name": "internal", "match": {"attribute": "email_domain", "in": ["example.com"]}},
                   {"name": "free", "match": {"attribute": "tier", "equals": "free"}}],
        "stages": [
            {"name": "offline", "kind": "eval", "eval": {
                "cases": CASES, "baseline": "examples.ticket_app.models:baseline",
                "candidate": f"examples.ticket_app.models:{candidate_fn}",
                "scorer": "examples.ticket_app.scoring:keeps_key_facts",
                "margin": 0.20, "min_cases": 20, "concurrency": 4}},
            {"name": "shadow", "kind": "shadow", "sample": 0.3, "min_samples": 60, "min_duration": "1s",
             "rate_limit": 5000, "budget": {"per_hour": 100.0, "total": 200.0}},
            {"name": "canary", "kind": "ramp", "percent": {"internal": 100, "free": 10, "default": 5},
             "min_samples": 60, "min_duration": "1s"},
            {"name": "full", "kind": "full", "approval": "required"},
        ],
        "metrics": [
            {"name": "error", "kind": "binary", "better": "lower", "margin": 0.03},
            {"name": "refusal", "kind": "binary", "better": "lower", "margin": 0.03},
            {"name": "latency_ms", "kind": "continuous", "better": "lower", "margin": "25%", "scale": "log"},
            {"name": "cost_usd", "kind": "continuous", "better": "lower", "margin": "25%", "scale": "log"},
        ],
        "check_interval": "0.5s", "completion": {"tolerance": "20%"},
    }


def run_to_the_end(engine: Engine, db_url: str, document: dict[str, Any]) -> tuple[Any, list[Any]]:
    rollout_plan = load_plan(document)
    run = claim(engine, rollout_plan, document, owner="test", actor="tester")
    steps, deadline = [], time.monotonic() + 120
    with RolloutClient(db_url, listen=False, refresh_interval=0.1) as client:
        traffic = TicketTraffic(TicketService(client, "ticket-summarizer", LIVE), seed=3)
        failure = None
        while time.monotonic() < deadline:
            result = check(run, eval_failure=failure)
            failure = None
            steps.append(result.step)
            state = result.step.state
            if not state.status.active:
                break
            if state.status is Status.EVALUATING:
                failure, _ = run_eval_stage(run, state.stage_index)
                continue
            if state.status is Status.AWAITING_APPROVAL:
                with transaction(engine) as s:
                    rollout_store.record_approval(s, rollout_store.get_rollout(s, run.rollout_id),
                                                  stage_index=state.waiting_for, approved=True, approver="alice")
            client.refresh()
            traffic.run(300)
            client.flush(timeout=30)
    return run, steps


def test_a_good_candidate_passes_the_eval_gate_shadow_and_ramps(engine: Engine, db_url: str) -> None:
    run, steps = run_to_the_end(engine, db_url, plan("large-v2", "candidate_good"))
    assert steps[-1].state.status is Status.PROMOTED, [s.reason for s in steps[-4:]]
    actions = [(s.state.status.value, s.action) for s in steps if s.action in ("enter_stage", "promote")]
    assert actions == [("evaluating", "enter_stage"), ("shadow", "enter_stage"), ("ramping", "enter_stage"),
                       ("promoted", "promote")]
    with transaction(engine) as s:
        rows = gate_rows(s, run.rollout_id, 0, run.plan)
    assert rows[0]["category"] == "all cases" and rows[0]["cases"] == 200 and rows[0]["verdict"] == "non_inferior"


def test_a_candidate_worse_on_billing_is_stopped_at_the_eval_gate(engine: Engine, db_url: str) -> None:
    run, steps = run_to_the_end(engine, db_url, plan("large-v2-billing", "candidate_weak_on_billing"))
    last = steps[-1]
    assert last.state.status is Status.ROLLED_BACK and last.state.stage_index == 0
    assert "eval gate offline failed" in last.reason and "billing" in last.reason
    with transaction(engine) as s:
        flag = flag_store.get_flag(s, "ticket-summarizer")
        rows = {r["category"]: r for r in gate_rows(s, run.rollout_id, 0, run.plan)}
    # nobody ever saw the candidate, not even in shadow
    assert flag.phase.value in ("inactive", "rolled_back") and flag.shadow_bp == 0
    assert rows["billing"]["verdict"] != "non_inferior" and rows["login"]["verdict"] == "non_inferior"


def test_a_candidate_fine_offline_but_slower_and_costlier_live_is_caught_in_shadow(engine: Engine,
                                                                                   db_url: str) -> None:
    run, steps = run_to_the_end(engine, db_url, plan("huge-v3", "candidate_slow_and_costly"))
    last = steps[-1]
    assert last.state.status is Status.ROLLED_BACK, [s.reason for s in steps[-3:]]
    assert run.plan.stages[last.state.stage_index].name == "shadow"
    assert "latency_ms" in last.reason or "cost_usd" in last.reason
    with transaction(engine) as s:
        flag = flag_store.get_flag(s, "ticket-summarizer")
    assert set(flag.allocations.values()) == {0}  # no user was ever served it


@pytest.mark.parametrize("budget", [{"total": 0.05}])
def test_a_spent_budget_pauses_shadowing_and_says_why(engine: Engine, db_url: str, budget: dict) -> None:
    document = plan("large-v2", "candidate_good")
    document["stages"] = [{**document["stages"][1], "budget": budget, "min_samples": 10_000}]
    rollout_plan = load_plan(document)
    run = claim(engine, rollout_plan, document, owner="test", actor="tester")
    with RolloutClient(db_url, listen=False, refresh_interval=0.1) as client:
        traffic = TicketTraffic(TicketService(client, "ticket-summarizer", LIVE), seed=4)
        check(run)
        seen = []
        for _ in range(30):
            client.refresh()
            traffic.run(200)
            client.flush(timeout=30)
            seen.append(check(run).step)
            if seen[-1].action == "pause_shadow":
                break
    assert seen[-1].action == "pause_shadow" and "budget reached" in seen[-1].reason
    with transaction(engine) as s:
        assert flag_store.get_flag(s, "ticket-summarizer").shadow_bp == 0
