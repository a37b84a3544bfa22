"""The foreground controller against real PostgreSQL behind a fault-injecting TCP proxy: no abandoned flags."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from rollout.app.reconcile import CheckResult
from rollout.app.runner import run_foreground
from rollout.core.controller import Status
from rollout.store import flags as flag_store
from rollout.store.db import make_engine, transaction
from rollout.testing import ScriptedEvidence, passing
from tests.harness.faults import RAMP_PLAN

pytestmark = pytest.mark.slow

@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
def test_a_three_second_outage_mid_ramp_only_delays_the_rollout(pg_proxy: Any, mode: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    # Given a foreground controller (`rollout start` without Prefect) whose database sits behind a proxy
    proxy, url = pg_proxy
    engine = make_engine(url)
    outage: dict[str, float] = {}

    def on_check(result: CheckResult) -> None:
        if result.step.state.status is Status.RAMPING and "start" not in outage:
            # When the database goes away for 3 s while 25 % of users are on the candidate
            # (refuse: a server that is down; blackhole: a partition, nothing answers)
            outage["start"] = time.monotonic()
            proxy.set_mode(mode)  # type: ignore[arg-type]
            threading.Timer(3.0, proxy.set_mode, ("pass",)).start()

    try:
        ending = run_foreground(engine, RAMP_PLAN, actor="alice", evidence=ScriptedEvidence(passing),
                                on_check=on_check)
    finally:
        engine.dispose()
    # Then the controller rode it out and finished the plan: nobody was left on a half-ramped flag
    assert "start" in outage
    if mode == "refuse":  # a partition only stalls the check until it ends; a refusal makes it fail and retry
        assert "check failed" in caplog.text
    assert ending.state.status is Status.PROMOTED, ending
    check_engine = make_engine(url)
    try:
        with transaction(check_engine) as s:
            flag = flag_store.get_flag(s, "summarizer")
    finally:
        check_engine.dispose()
    assert flag.phase.value == "promoted"


def test_a_three_second_outage_on_sqlite_only_delays_the_rollout(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    import sqlite3

    from sqlalchemy.engine import make_url

    if make_url(db_url).get_backend_name() != "sqlite":
        pytest.skip("the PostgreSQL outages go through the TCP proxy above")
    path = make_url(db_url).database
    assert path is not None

    def rename(a: str, b: str) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(f"ALTER TABLE {a} RENAME TO {b}")

    # Given a foreground controller on SQLite
    engine = make_engine(db_url)
    outage: dict[str, bool] = {}

    def on_check(result: CheckResult) -> None:
        if result.step.state.status is Status.RAMPING and "cut" not in outage:
            # When its tables cannot be read for 3 s mid-ramp (every query fails as on a lost database)
            outage["cut"] = True
            rename("rollouts", "rollouts_away")
            threading.Timer(3.0, rename, ("rollouts_away", "rollouts")).start()

    try:
        ending = run_foreground(engine, RAMP_PLAN, actor="alice", evidence=ScriptedEvidence(passing),
                                on_check=on_check)
        # Then it rode the outage out and finished the plan
        assert outage and ending.state.status is Status.PROMOTED, ending
        assert "check failed" in caplog.text  # the checks did fail during the outage, and were retried
        with transaction(engine) as s:
            assert flag_store.get_flag(s, "summarizer").phase.value == "promoted"
    finally:
        engine.dispose()
