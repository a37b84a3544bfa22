"""`rollout start` runs the served deployment; cancelling the run applies on_abort: the flag goes back to the baseline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine

from rollout import RolloutClient
from rollout.adapters.cli.main import main
from rollout.store import flags as flag_store
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction
from rollout.testing import Traffic, VariantBehaviour
from tests.adapters.prefect.test_rollout_flow import plan

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_cancelling_a_paused_served_run_rolls_the_flag_back(
        prefect_server: Any, engine: Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    env = {**os.environ, **prefect_server.env(), "ROLLOUT_DATABASE_URL": db_url, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen([sys.executable, "-m", "rollout.adapters.prefect.serve"], cwd=ROOT, env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Given a rollout started with `rollout start` against the served deployment,
        # paused at its approval gate, with the candidate live for some users
        plan_file = tmp_path / "plan.yaml"
        plan_file.write_text(yaml.safe_dump(plan()))
        deadline = time.monotonic() + 60
        with get_client(sync_client=True) as prefect:
            while True:  # until the serve process has registered the deployment
                try:
                    prefect.read_deployment_by_name("rollout/rollout")
                    break
                except Exception:  # noqa: BLE001
                    assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                    time.sleep(0.5)
        monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
        assert main(["--db", db_url, "start", str(plan_file), "--by", "alice"]) == 0
        started = capsys.readouterr().out
        assert "started flow run" in started, started
        with RolloutClient(db_url, listen=False, refresh_interval=0.2) as client:
            traffic = Traffic(client, "summarizer", candidate=VariantBehaviour(), seed=11)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                with transaction(engine) as s:
                    record = rollout_store.latest_rollout(s, "summarizer")
                if record is not None and record.state.status.value == "awaiting_approval":
                    break
                if "summarizer" in client.flag_versions():
                    traffic.run(150)
                    client.flush(timeout=30)
                time.sleep(0.1)
        assert record is not None and record.state.status.value == "awaiting_approval"
        with transaction(engine) as s:
            assert flag_store.get_flag(s, "summarizer").phase.value == "ramping"
        # When a release manager cancels the run
        with get_client(sync_client=True) as prefect:
            prefect.set_flow_run_state(record.flow_run_id, Cancelling(), force=True)
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
        # and the run's own logs say in one line what on_abort did, and its summary card shows the rollout aborted
        from prefect.client.schemas.filters import (
            ArtifactFilter,
            ArtifactFilterFlowRunId,
            ArtifactFilterKey,
            LogFilter,
            LogFilterFlowRunId,
        )

        def said() -> tuple[list[str], str]:
            with get_client(sync_client=True) as prefect:
                logs = prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[record.flow_run_id])))
                cards = prefect.read_artifacts(artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["rollout-summarizer-summary"]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[record.flow_run_id])))
            return [log.message for log in logs if "was applied" in log.message], " ".join(str(c.data) for c in cards)

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines, card = said()
            if lines and "summarizer: aborted" in card:
                break
            time.sleep(1)
        lines, card = said()
        assert lines == ["flow run cancelled: the rollout is aborted and the plan's on_abort (rollback) was applied: "
                         "the flag summarizer serves everyone the baseline (current) again"], (
            lines, (tmp_path / "serve.log").read_text()[-3000:])
        assert "summarizer: aborted" in card, card[:500]
    finally:
        from examples.demo import stop_serving

        stop_serving(serve)  # the serve process and any flow run it started: one process group
