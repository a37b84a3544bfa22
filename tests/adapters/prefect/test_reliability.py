"""A killed controller resumes where it was; a database outage only delays the rollout; hands off what is not yours."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from rollout import Reason, RolloutClient
from rollout.store import flags as flag_store
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction
from rollout.store.models import utcnow
from rollout.testing import Traffic, VariantBehaviour
from tests.adapters.prefect.test_rollout_flow import Rollout, approve_through_prefect, plan

pytestmark = pytest.mark.slow

FLOW_SCRIPT = """
import json, sys
from rollout.adapters.prefect.flow import run_rollout
state = run_rollout(plan=json.loads(sys.argv[1]), started_by="tester", database_url=sys.argv[2], return_state=True)
print("FINAL", state.name, state.message)
"""


def start_flow_process(server: Any, document: dict[str, Any], db_url: str) -> subprocess.Popen[str]:
    env = {**os.environ, **server.env(), "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": ""}
    env.pop("PREFECT_FLOWS_HEARTBEAT_FREQUENCY")
    return subprocess.Popen([sys.executable, "-c", FLOW_SCRIPT, json.dumps(document), db_url], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def latest(engine: Engine) -> Any:
    with transaction(engine) as s:
        return rollout_store.latest_rollout(s, "summarizer")


def test_a_killed_controller_is_shown_lost_and_a_restart_resumes_the_same_stage(
        prefect_server: Any, engine: Engine, db_url: str) -> None:
    # Given a rollout whose canary needs many samples, driven by a flow in its own process
    document = plan(stages=[
        {"name": "shadow", "kind": "shadow", "sample": 0.5, "min_samples": 100, "min_duration": "1s"},
        {"name": "canary", "kind": "ramp", "percent": 30, "min_samples": 240, "min_duration": "1s"},
        {"name": "full", "kind": "full", "approval": "required"},
    ])
    first = start_flow_process(prefect_server, document, db_url)
    with RolloutClient(db_url, listen=False, refresh_interval=0.2) as client:
        traffic = Traffic(client, "summarizer", candidate=VariantBehaviour(), seed=3)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            record = latest(engine)
            if record is not None and record.state.status.value == "ramping":
                break
            if "summarizer" in client.flag_versions():
                traffic.run(100)
                client.flush(timeout=30)
            time.sleep(0.2)
        # When its process is killed mid-stage, with no chance to run any hook
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        before = latest(engine)
        with transaction(engine) as s:
            allocations = dict(flag_store.get_flag(s, "summarizer").allocations)
            decisions_before = rollout_store.decisions(s, before.id)
        assert before.state.status.value == "ramping"
        # Then, once the lease runs out, the rollout shows as lost, still at its stage
        deadline = time.monotonic() + 120  # the lease scales with how long checks took; wait it out
        while not latest(engine).lost(utcnow()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert latest(engine).lost(utcnow())
        # When the flow is started again with the same plan
        second = start_flow_process(prefect_server, document, db_url)
        deadline = time.monotonic() + 150
        while second.poll() is None and time.monotonic() < deadline:
            record = latest(engine)
            if record.state.status.waiting:
                approve_through_prefect(record)
            traffic.run(150)
            client.flush(timeout=30)
            time.sleep(0.1)
        output = second.communicate(timeout=60)[0]
    # Then it took over the same rollout at the same stage, and went on to the end
    assert "FINAL Completed" in output, output[-3000:]
    with transaction(engine) as s:
        after = rollout_store.get_rollout(s, before.id)
        decisions = rollout_store.decisions(s, before.id)
        log = [e.action for e in flag_store.audit_log(s, "summarizer", limit=100)]
    assert after.state.status.value == "promoted"
    assert [d.sequence for d in decisions] == list(range(1, len(decisions) + 1))  # no duplicate, no gap
    resumed = decisions[len(decisions_before)]
    assert resumed.stage_index == before.state.stage_index and resumed.action != "enter_stage"
    assert allocations == {"internal": 3_000, "free": 3_000, "default": 3_000}
    assert log.count("rollout.take_over") == 1
    assert log.count("flag.set_allocations") == 1  # the canary was entered once, never re-entered


def _cut_off(db_url: str) -> tuple[Any, Any]:
    """(cut, restore): make the database refuse the rollout's connections for a while, and let them back."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        path = url.database

        def rename(a: str, b: str) -> None:
            with sqlite3.connect(path) as conn:
                conn.execute(f"ALTER TABLE {a} RENAME TO {b}")

        return (lambda: rename("rollouts", "rollouts_away"), lambda: rename("rollouts_away", "rollouts"))
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")

    def cut() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d "
                              "AND pid <> pg_backend_pid()"), {"d": url.database})

    def restore() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true'))
        admin.dispose()

    return cut, restore


def test_a_database_outage_delays_the_rollout_and_apps_keep_serving(
        prefect_server: Any, engine: Engine, db_url: str) -> None:
    # Given a rollout in its canary and an app serving from a snapshot
    rollout = Rollout(db_url, engine, plan(), VariantBehaviour())
    cut, restore = _cut_off(db_url)
    outage: dict[str, Any] = {}

    def during_wait(record: Any) -> None:
        if "done" in outage:
            approve_through_prefect(record)
            return
        # When the database goes away for longer than the check's retries
        with RolloutClient(db_url, listen=False, refresh_interval=0.1) as app:
            served = app.assign("summarizer", "user-x", {"tier": "free"}).variant
            cut()
            try:
                time.sleep(8)
                stale = app.assign("summarizer", "user-x", {"tier": "free"})
                outage["app"] = (served, stale.variant, stale.reason)
            finally:
                restore()
                app.close(timeout=1)
        outage["done"] = True

    final = rollout.drive(on_waiting=during_wait)
    # Then the app kept answering the same variant, marked stale, and the rollout went on once it was back
    served, during, reason = outage["app"]
    assert (during, reason) == (served, Reason.STALE)
    assert final.is_completed(), final
    record = latest(engine)
    assert record.state.status.value == "promoted"


def test_a_second_flow_run_of_the_same_flag_is_refused_and_never_touches_the_flag(
        prefect_server: Any, engine: Engine, db_url: str) -> None:
    from rollout.adapters.prefect.flow import run_rollout

    rollout = Rollout(db_url, engine, plan(), VariantBehaviour())
    outcome: dict[str, Any] = {}

    def duplicate(record: Any) -> None:
        if "state" in outcome:
            approve_through_prefect(record)
            return
        with transaction(engine) as s:
            version = flag_store.get_flag(s, "summarizer").version
        outcome["state"] = run_rollout(plan=plan(), started_by="intruder", database_url=db_url, return_state=True)
        with transaction(engine) as s:
            outcome["version"] = (version, flag_store.get_flag(s, "summarizer").version)

    final = rollout.drive(on_waiting=duplicate)
    assert outcome["state"].is_failed() and "already has an active rollout" in str(outcome["state"].message)
    before, after = outcome["version"]
    assert before == after
    assert final.is_completed()
