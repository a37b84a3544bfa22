"""A bad plan on a real Prefect server: refused before the run exists where the schema sees it, else failed at once in words."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from rollout.adapters.prefect.flow import run_rollout
from rollout.adapters.prefect.forms import PROBLEMS_KEY
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction
from tests.adapters.prefect.test_rollout_flow import plan

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("name", "source", "problems"), [
    ("an allocation going down", plan(stages=[
        {"name": "canary", "kind": "ramp", "percent": {"free": 50}},
        {"name": "quarter", "kind": "ramp", "percent": {"free": 10}}]),
     ["stages.quarter.percent.free: 10 % is below the 50 %"]),
    ("a metric kind misspelt, in pasted YAML",
     {"yaml": "flag: summarizer\nbaseline: a\ncandidate: b\nstages: [{name: c, kind: ramp, percent: 5}]\n"
              "metrics: [{name: error, kind: binery, better: lower, margin: 0.01}]\n"},
     ["metrics.error.kind: Input should be 'binary' or 'continuous'"]),
    ("a name nobody registered", {"name": "nobody-registered-this"}, ["no registered plan 'nobody-registered-this'"]),
])
def test_a_bad_plan_fails_the_run_at_once_with_every_problem_in_words(
        prefect_server: Any, engine: Engine, db_url: str, name: str, source: Any, problems: list[str]) -> None:
    from prefect.artifacts import Artifact

    # Given a plan with a problem the parameter schema cannot see, When the flow runs it
    state = run_rollout(plan=source, database_url=db_url, return_state=True)
    # Then the run fails at once, its message lists the problem by name, and so does an artifact
    assert state.is_failed() and state.name == "InvalidPlan", name
    for problem in problems:
        assert problem in (state.message or ""), state.message
        artifact = Artifact.get(PROBLEMS_KEY)
        assert artifact is not None and problem.split(": ", 1)[-1] in str(artifact.data)
    # And nothing was started
    with transaction(engine) as s:
        assert rollout_store.latest_rollout(s, "summarizer") is None


def test_the_server_refuses_a_run_whose_plan_breaks_the_form_schema(prefect_server: Any) -> None:
    from prefect.deployments import run_deployment

    # Given the deployment registered with its parameter schema enforced (as serve.py does)
    run_rollout.to_deployment(name="schema-check", enforce_parameter_schema=True).apply()
    # When a run is asked for with a stage kind the form does not offer
    bad = plan(stages=[{"name": "canary", "kind": "rampp", "percent": 5}])
    # Then the server refuses it before any run exists, saying why
    with pytest.raises(Exception, match="rampp|not valid|Validation"):
        run_deployment(name="rollout/schema-check", parameters={"plan": bad}, timeout=0)


def test_start_at_creates_a_scheduled_flow_run(prefect_server: Any, db_url: str, tmp_path: Any,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import yaml
    from prefect.client.orchestration import get_client

    from rollout.adapters.cli.main import main

    # Given the deployment on a real Prefect server and a plan file
    run_rollout.to_deployment(name="scheduled", enforce_parameter_schema=True).apply()
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(plan()))
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    # When a release manager starts it for 09:00 UTC on a later day
    assert main(["--db", db_url, "start", str(plan_file), "--by", "alice", "--at", "2030-12-02T09:00Z",
                 "--deployment", "rollout/scheduled"]) == 0
    out = capsys.readouterr().out
    assert "scheduled flow run" in out, out
    flow_run_id = out.split("(", 1)[1].split(")", 1)[0]
    # Then a flow run waits in the Scheduled state for that time, with the plan in the form's shape
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(flow_run_id)
    assert flow_run.state is not None and flow_run.state.is_scheduled()
    assert flow_run.expected_start_time.isoformat().startswith("2030-12-02T09:00:00")
    assert flow_run.parameters["plan"]["stages"][0]["min_duration"] == "1s"
    assert flow_run.parameters["started_by"] == "alice"
