"""The online judges' grading round is a task of the rollout flow, before each check (one real Prefect run)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine

from rollout.testing import VariantBehaviour
from tests.adapters.prefect.test_rollout_flow import Rollout, plan

pytestmark = pytest.mark.slow


def test_each_check_of_a_plan_with_judges_follows_a_grading_task(prefect_server: Any, engine: Engine,
                                                                  db_url: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    # Given a plan with an online judge, and a candidate the error rate rolls back
    document = plan(online_evals=[{"name": "faithfulness", "scorer": "tests.app.test_online_grading:quoted_score",
                                   "sample": 0.1, "metric": {"kind": "continuous", "better": "higher",
                                                             "margin": 0.05}}])
    rollout = Rollout(db_url, engine, document, VariantBehaviour(error_rate_by_stratum={"free": 0.30}))
    # When the flow runs to its end
    final = rollout.drive()
    assert final.name == "RolledBack", final.message
    # Then the run shows an online-judges task before every check, in the UI's task list
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[UUID(rollout.status().flow_run_id)])))
    ordered = [r.name.rsplit("-", 1)[0] for r in sorted(runs, key=lambda r: r.expected_start_time or r.created)]
    checks = ordered.count("check")
    assert checks > 0 and ordered.count("online-judges") == checks, ordered
    assert all(ordered[i - 1] == "online-judges" for i, name in enumerate(ordered) if name == "check")
