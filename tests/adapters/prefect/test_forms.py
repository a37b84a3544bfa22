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
