"""Checks against a real database with simulated traffic and a fake clock: no Prefect needed."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from rollout import RolloutClient
from rollout.core.controller import Status
from rollout.errors import RolloutActiveError
from rollout.app.plans import load_plan
from rollout.app.reconcile import check, claim
from rollout.store import flags as flag_store
from rollout.store import rollouts as rollout_store
from rollout.store.db import retry_transaction, transaction
from rollout.store.models import utcnow
from rollout.testing import Traffic, VariantBehaviour

PLAN = {
    "flag": "summarizer", "baseline": "current", "candidate": "new-model",
    "strata": [{"name": "internal", "match": {"attribute": "email_domain", "in": ["example.com"]}},
               {"name": "free", "match": {"attribute": "tier", "equals": "free"}}],
    "stages": [
        {"name": "shadow", "kind": "shadow", "sample": 0.5, "min_samples": 120, "min_duration": "1m"},
        {"name": "canary", "kind": "ramp", "percent": {"internal": 100, "free": 20, "default": 10},
         "min_samples": 120, "min_duration": "1m"},
        {"name": "full", "kind": "full", "approval": "required"},
    ],
    "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.05},
                {"name": "latency_ms", "kind": "continuous", "better": "lower", "margin": "25%", "scale": "log"}],
    "check_interval": "10s", "completion": {"tolerance": "20%"},
}


def drive(engine: Engine, db_url: str, candidate: VariantBehaviour, *, checks: int, approve: bool = True) -> list:
    plan = load_plan(PLAN)
    run = claim(engine, plan, PLAN, owner="test-owner", actor="tester")
    now = utcnow()
    seen = []
    with RolloutClient(db_url, listen=False, refresh_interval=3600) as client:
        traffic = Traffic(client, "summarizer", candidate=candidate, seed=1)
        for _ in range(checks):
            result = check(run, now)
            seen.append(result.step)
            state = result.step.state
            if not state.status.active:
                break
            if state.status is Status.AWAITING_APPROVAL and approve:
                with transaction(engine) as s:
                    record = rollout_store.get_rollout(s, run.rollout_id)
                    rollout_store.record_approval(s, record, stage_index=state.waiting_for, approved=True,
                                                  approver="alice")
            client.refresh()
            traffic.run(400)
            client.flush(timeout=30)
            now += timedelta(seconds=30)
    return seen


def test_a_healthy_candidate_goes_from_shadow_to_full(engine: Engine, db_url: str) -> None:
    steps = drive(engine, db_url, VariantBehaviour(), checks=60)
    actions = [s.action for s in steps]
    assert actions[0] == "enter_stage" and steps[-1].state.status is Status.PROMOTED, [s.reason for s in steps[-3:]]
    assert "request_approval" in actions
    with transaction(engine) as s:
        flag = flag_store.get_flag(s, "summarizer")
        decisions = rollout_store.decisions(s, 1)
    assert flag.phase.value == "promoted" and set(flag.allocations.values()) == {10_000}
    assert [d.sequence for d in decisions] == list(range(1, len(steps) + 1))


def test_a_regressed_candidate_is_rolled_back_with_the_judges_reason(engine: Engine, db_url: str) -> None:
    bad = VariantBehaviour(error_rate_by_stratum={"free": 0.30})
    steps = drive(engine, db_url, bad, checks=60)
    assert steps[-1].state.status is Status.ROLLED_BACK
    assert "harm proven" in steps[-1].reason and "error" in steps[-1].reason
    with transaction(engine) as s:
        flag = flag_store.get_flag(s, "summarizer")
    assert flag.phase.value == "rolled_back" and set(flag.allocations.values()) == {0}


def test_a_second_rollout_of_the_same_flag_is_refused(engine: Engine) -> None:
    plan = load_plan(PLAN)
    claim(engine, plan, PLAN, owner="first", actor="a")
    with pytest.raises(RolloutActiveError):
        claim(engine, plan, PLAN, owner="second", actor="b")


def test_a_manual_rollback_ends_the_rollout_and_wins(engine: Engine) -> None:
    plan = load_plan(PLAN)
    run = claim(engine, plan, PLAN, owner="o", actor="a")
    check(run)
    with transaction(engine) as s:
        flag_store.rollback(s, "summarizer", actor="carol", reason="manual")
    result = check(run)
    assert result.step.state.status is Status.ROLLED_BACK
    with transaction(engine) as s:
        assert flag_store.get_flag(s, "summarizer").phase.value == "rolled_back"
        assert rollout_store.active_rollout(s, "summarizer") is None


@pytest.mark.parametrize("attempt", range(8))
def test_a_manual_rollback_racing_a_stage_change_always_wins(engine: Engine, attempt: int) -> None:
    import random
    import threading

    # Given a rollout about to enter its first stage, and a release manager rolling back at the same moment
    plan = load_plan(PLAN)
    run = claim(engine, plan, PLAN, owner="controller", actor="a")
    barrier = threading.Barrier(2)
    rng = random.Random(attempt)

    def controller() -> None:
        barrier.wait()
        time.sleep(rng.uniform(0, 0.01))
        check(run)

    def release_manager() -> None:
        barrier.wait()
        time.sleep(rng.uniform(0, 0.01))
        # what `rollout rollback` does: retried on the new state if the flag moved under it
        retry_transaction(engine, lambda s: flag_store.rollback(s, "summarizer", actor="carol", reason="stop"))

    threads = [threading.Thread(target=controller), threading.Thread(target=release_manager)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # When the controller checks again
    result = check(run)
    # Then the rollback stands, whichever write landed first
    assert result.step.state.status is Status.ROLLED_BACK
    with transaction(engine) as s:
        flag = flag_store.get_flag(s, "summarizer")
    assert flag.phase.value == "rolled_back" and flag.shadow_bp == 0 and set(flag.allocations.values()) == {0}
