"""The deployment's plan parameter, read the way a release manager gave it, and refused in words when wrong.

The `plan` parameter is a union of three shapes (see `rollout.app.plans.PlanSource`): the typed form,
pasted YAML, or a registered plan by name. The Prefect UI draws a picker between them from the
parameter schema, and with `enforce_parameter_schema` the server refuses a run whose parameters break
the schema before it exists. Problems the schema cannot see (an allocation below an earlier stage's,
a stratum that does not exist, a name nobody registered) end the run at once in a Failed state whose
message lists them, plus a markdown artifact with the same list: no traceback, nothing changed.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from rollout.app.plans import resolve_plan
from rollout.core.plan import RolloutPlan
from rollout.errors import InvalidPlanError, PlanNotFoundError

PROBLEMS_KEY = "rollout-plan-problems"


def problems_of(exc: InvalidPlanError | PlanNotFoundError) -> list[str]:
    return list(exc.problems) if isinstance(exc, InvalidPlanError) else [str(exc)]


def plan_or_failure(plan: Any, engine: Any, *, namespace: str) -> tuple[RolloutPlan, dict[str, Any]] | State:
    """The plan and its document, or a Failed state listing every problem (and the same list as an artifact)."""
    try:
        return resolve_plan(plan, engine, namespace=namespace)
    except (InvalidPlanError, PlanNotFoundError) as exc:
        problems = problems_of(exc)
    message = f"the plan has {len(problems)} problem(s), nothing was started: " + "; ".join(problems)
    try:
        create_markdown_artifact(
            "### The plan was refused; nothing was started\n\n" + "\n".join(_item(p) for p in problems)
            + "\n\nFix the plan and start the run again (`rollout plan validate FILE` lists the same problems).",
            key=PROBLEMS_KEY, description="Why this run did not start")
    except Exception as artifact_error:  # noqa: BLE001 - the state message still says it all
        get_run_logger().warning("could not write the problems artifact: %s", artifact_error)
    get_run_logger().error(message)
    return Failed(name="InvalidPlan", message=message)


def _item(problem: str) -> str:
    """`metrics.error.kind: ...` as a list item with the place in code type; a sentence as it is."""
    where, sep, what = problem.partition(": ")
    return f"- `{where}`: {what}" if sep and " " not in where else f"- {problem}"


def plan_from_parameters(parameters: dict[str, Any]) -> RolloutPlan:
    """The plan of a finished or failing run, from its parameters (for the cancellation and crash hooks)."""
    from rollout.store.db import make_engine

    engine = make_engine(parameters.get("database_url"))
    try:
        return resolve_plan(parameters["plan"], engine, namespace=parameters.get("namespace", "default"))[0]
    finally:
        engine.dispose()
