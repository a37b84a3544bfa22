"""reconcile's judge on repeat users, on both databases: outcomes and exposures as an app with returning users writes them."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy import Engine, insert, update
from sqlalchemy.orm import Session

from rollout.app.plans import load_plan
from rollout.app.reconcile import check, claim
from rollout.core.controller import Status
from rollout.store.db import transaction
from rollout.store.models import Exposure, Outcome, utcnow
from rollout.store.outcomes import flag_ids

PLAN = {
    "flag": "summarizer", "baseline": "current", "candidate": "new-model",
    "stages": [
        {"name": "half", "kind": "ramp", "percent": 50, "min_samples": 5_000, "min_duration": "1m"},  # more users than exist: never advances
        {"name": "full", "kind": "full", "approval": "required"},
    ],
    "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.0}],
    "check_interval": "10s",
}


def _drive(engine: Engine, *, loss: float, checks: int, seed: int) -> list:
    """Users who come back (1,000 users, Pareto-like weights, per-user error rates) at a 50 % split."""
    rng = np.random.default_rng(seed)
    plan = load_plan(PLAN)
    run = claim(engine, plan, PLAN, owner="test-owner", actor="tester")
    with Session(engine) as s:
        flag_id = flag_ids(s)["summarizer"]
    users = 1_000
    weight = rng.pareto(1.5, users) + 1
    rate = 1 / (1 + np.exp(-(np.log(0.03 / 0.97) + rng.normal(0, 1.0, users))))
    candidate = rng.random(users) < 0.5
    exposures = np.zeros(users, dtype=int)
    now = utcnow()
    steps = []
    for _ in range(checks):
        result = check(run, now)
        steps.append(result.step)
        if not result.step.state.status.active or result.step.state.stage_index < 0:
            if not result.step.state.status.active:
                break
        stage = max(result.step.state.stage_index, 0)
        batch = rng.choice(users, size=600, p=weight / weight.sum())
        rows = []
        for u in batch:
            exposures[u] += 1
            lost = candidate[u] and rng.random() < loss
            if not lost:
                rows.append(dict(flag_id=flag_id, rollout_id=run.rollout_id, stage=stage,
                                 variant="new-model" if candidate[u] else "current", stratum="default",
                                 unit_hash=int(u) + 1, metric="error", value=float(rng.random() < rate[u]),
                                 recorded_at=now))
        with transaction(engine) as s:
            s.execute(insert(Outcome), rows)
            s.execute(Exposure.__table__.delete().where(Exposure.flag_id == flag_id))
            s.execute(insert(Exposure), [
                dict(flag_id=flag_id, rollout_id=run.rollout_id, stage=stage,
                     variant="new-model" if candidate[u] else "current", stratum="default", unit_hash=int(u) + 1,
                     count=int(exposures[u]), first_at=now, last_at=now)
                for u in np.flatnonzero(exposures)])
        now += timedelta(seconds=30)
    return steps


def test_an_aa_rollout_with_repeat_users_is_not_rolled_back(engine: Engine) -> None:
    # Given identical arms and 1,000 users who come back (heavy users, per-user error rates)
    # When 25 checks see 15,000 requests
    steps = _drive(engine, loss=0.0, checks=25, seed=11)
    # Then the judge, counting users, never rolls back
    assert all(s.state.status is not Status.ROLLED_BACK for s in steps), steps[-1].reason
    assert "units" in steps[-1].reason or steps[-1].state.status.active


def test_a_candidate_losing_2_percent_of_requests_is_held(engine: Engine) -> None:
    # Given a candidate whose users' requests report only 98 % of the time (exposures recorded for all)
    # When checked every 600 requests
    steps = _drive(engine, loss=0.02, checks=12, seed=12)
    # Then a check holds, saying it loses outcomes, and nothing is rolled back
    reasons = [s.reason for s in steps]
    assert any("loses outcomes" in r for r in reasons), reasons[-3:]
    assert all(s.state.status is not Status.ROLLED_BACK for s in steps)
