"""The plan's metric statistics (mean vs typical), the cost-on-log warning, and completion settings."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from rollout.app.plans import PlanWarning, load_plan, plan_warnings
from rollout.core.stats import CompletionSpec
from rollout.errors import InvalidPlanError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plans"


def plan(*metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"flag": "f", "baseline": "a", "candidate": "b", "stages": [{"name": "c", "kind": "ramp", "percent": 5}],
            "metrics": list(metrics), **extra}


def cost(**fields: Any) -> dict[str, Any]:
    return {"name": "cost_usd", "kind": "continuous", "better": "lower", "margin": "10%", **fields}


@pytest.mark.parametrize(
    ("fields", "scale"),
    [({}, "linear"), ({"statistic": "mean"}, "linear"), ({"statistic": "typical"}, "log"), ({"scale": "log"}, "log"),
     ({"statistic": "typical", "scale": "log"}, "log")],
)
def test_statistic_sets_the_scale(fields, scale):
    # Given a metric with a statistic and/or a scale; When loaded; Then the core spec has the matching scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlanWarning)
        assert load_plan(plan(cost(**fields))).metrics[0].scale == scale


def test_a_statistic_that_contradicts_the_scale_is_a_problem():
    with pytest.raises(InvalidPlanError, match="contradicts"):
        load_plan(plan(cost(statistic="mean", scale="log")))


def test_a_cost_metric_judged_only_as_typical_warns_and_judging_the_bill_too_does_not():
    # Given cost on the log scale only; When loaded; Then a PlanWarning says the bill is not judged
    with pytest.warns(PlanWarning, match="statistic: mean"):
        load_plan(plan(cost(statistic="typical")))
    # and with the mean judged as well (another spec reading cost_usd), no warning
    both = plan(cost(statistic="typical"), cost(name="cost_bill", source="cost_usd", statistic="mean"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PlanWarning)
        assert plan_warnings(load_plan(both)) == []


def test_completion_defaults_and_parses_a_percentage():
    assert load_plan(plan(cost())).completion == CompletionSpec(0.01, "hold")
    assert load_plan(plan(cost(), completion={"tolerance": "2%", "on_loss": "rollback"})).completion == \
        CompletionSpec(0.02, "rollback")
    with pytest.raises(InvalidPlanError):
        load_plan(plan(cost(), completion={"tolerance": 1.5}))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_example_plans_judge_cost_as_the_bill(path):
    # Given every example plan; When loaded with warnings as errors; Then cost-like metrics are means
    with warnings.catch_warnings():
        warnings.simplefilter("error", PlanWarning)
        p = load_plan(path)
    assert all(m.scale == "linear" for m in p.metrics if "cost" in m.name)
