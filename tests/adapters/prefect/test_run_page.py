"""The run page on a real Prefect server: three artifacts updated in place, and a run named after the rollout."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import Engine

from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction
from rollout.testing import VariantBehaviour
from tests.adapters.prefect.test_rollout_flow import Rollout, plan

pytestmark = pytest.mark.slow


def test_a_rollout_keeps_one_progress_summary_and_verdict_artifact_and_names_its_run(
        prefect_server: Any, engine: Engine, db_url: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    # Given a rollout the judge rolls back after a number of checks
    rollout = Rollout(db_url, engine, plan(), VariantBehaviour(error_rate_by_stratum={"free": 0.30}))
    # When the flow runs to its end
    final = rollout.drive()
    assert final.name == "RolledBack"
    record = rollout.status()
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(record.flow_run_id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
    # Then the run is named after the flag and the rollout number
    assert flow_run.name == f"summarizer #{record.id}"
    # and the run page holds one artifact per kind, updated in place, not one per check
    versions = Counter(a.key for a in artifacts if a.key)
    assert versions == {"rollout-summarizer-progress": 1, "rollout-summarizer-summary": 1,
                        "rollout-summarizer-verdict": 1}, versions
    with transaction(engine) as s:
        checks = len(rollout_store.decisions(s, record.id))
    assert checks >= 2  # several checks, each of which changed what the page shows
    summary = next(a for a in artifacts if a.key == "rollout-summarizer-summary")
    assert "rolled_back" in str(summary.data) and "harm proven" in str(summary.data)
