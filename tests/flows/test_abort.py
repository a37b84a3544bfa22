"""Cancelling a served rollout applies the plan's on_abort: the flag goes back to the baseline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from rollout import RolloutClient
from rollout.store import flags as flag_store
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction
from rollout.testing import Traffic, VariantBehaviour
from tests.flows.test_rollout_flow import plan

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_cancelling_a_paused_served_run_rolls_the_flag_back(
        prefect_server: Any, engine: Engine, db_url: str, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    env = {**os.environ, **prefect_server.env(), "ROLLOUT_DATABASE_URL": db_url, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=ROOT, env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Given a served rollout paused at its approval gate, with the candidate live for some users
        deadline = time.monotonic() + 60
        while True:
            try:
                flow_run = run_deployment(name="rollout/rollout", timeout=0,
                                          parameters={"plan": plan(), "database_url": db_url})
                break
            except Exception:  # noqa: BLE001 - the deployment is not registered yet
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
        with RolloutClient(db_url, listen=False, refresh_interval=0.2) as client:
            traffic = Traffic(client, "summarizer", candidate=VariantBehaviour(), seed=11)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                with transaction(engine) as s:
                    record = rollout_store.latest_rollout(s, "summarizer")
                if record is not None and record.state.status.value == "awaiting_approval":
                    break
                if client.assign("summarizer", "probe").error_code is None:
                    traffic.run(150)
                    client.flush(timeout=30)
                time.sleep(0.1)
        assert record is not None and record.state.status.value == "awaiting_approval"
        with transaction(engine) as s:
            assert flag_store.get_flag(s, "summarizer").phase.value == "ramping"
        # When a release manager cancels the run
        with get_client(sync_client=True) as prefect:
            prefect.set_flow_run_state(flow_run.id, Cancelling(), force=True)
        # Then the cancellation hook puts everyone back on the baseline and ends the rollout as aborted
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with transaction(engine) as s:
                record = rollout_store.get_rollout(s, record.id)
                flag = flag_store.get_flag(s, "summarizer")
            if record.state.status.value == "aborted" and flag.phase.value == "rolled_back":
                break
            time.sleep(0.2)
        assert record.state.status.value == "aborted", (tmp_path / "serve.log").read_text()[-3000:]
        assert flag.phase.value == "rolled_back" and set(flag.allocations.values()) == {0}
        assert "cancel" in record.state.reason.lower()
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=15)
        except subprocess.TimeoutExpired:
            serve.kill()
