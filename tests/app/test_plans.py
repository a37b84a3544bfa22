"""Plans: the README's example parses to the stages it describes; a bad plan lists every problem."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rollout.core.plan import Policy, StageKind
from rollout.errors import InvalidPlanError
from rollout.app.plans import load_plan, parse_duration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plans" / "ticket-summarizer.yaml"
BASE: dict[str, Any] = {
    "flag": "f", "baseline": "a", "candidate": "b",
    "strata": [{"name": "free", "match": {"attribute": "tier", "equals": "free"}}],
    "stages": [{"name": "canary", "kind": "ramp", "percent": 5}],
    "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.01}],
}


def test_the_readme_plan() -> None:
    plan = load_plan(EXAMPLE)
    assert [(s.name, s.kind, s.approval) for s in plan.stages] == [
        ("shadow", StageKind.SHADOW, False), ("canary", StageKind.RAMP, False),
        ("quarter", StageKind.RAMP, True), ("full", StageKind.FULL, True)]
    assert plan.stages[0].shadow_bp == 1_000 and plan.stages[0].min_duration == timedelta(minutes=10)
    assert dict(plan.stages[1].allocations) == {"internal": 10_000, "free": 500, "default": 0}
    # one number for all means "at least": staff stay at 100 %
    assert dict(plan.stages[2].allocations) == {"internal": 10_000, "free": 2_500, "default": 2_500}
    latency = next(m for m in plan.metrics if m.name == "latency_ms")
    assert (latency.margin, latency.relative, latency.scale) == (0.10, True, "log")
    assert (plan.check_interval, plan.on_inconclusive, plan.on_abort) == (timedelta(seconds=30), Policy.HOLD,
                                                                          Policy.ROLLBACK)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("10m", 600), ("24h", 86_400), ("2d", 172_800),
                                               ("1.5s", 1.5), (45, 45)])
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["10", "5x", "-1s", "", "m", True])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


BAD = [
    ("same variants", {"candidate": "a"}, ["candidate: must differ from the baseline"]),
    ("unknown stratum in percent", {"stages": [{"name": "c", "kind": "ramp", "percent": {"paid": 5}}]},
     ["stages.c.percent.paid: no such stratum"]),
    ("allocation going down", {"stages": [{"name": "c", "kind": "ramp", "percent": {"free": 50}},
                                          {"name": "d", "kind": "ramp", "percent": {"free": 10}}]},
     ["stages.d.percent.free: 10 % is below the 50 %"]),
    ("ramp without percent", {"stages": [{"name": "c", "kind": "ramp"}]}, ["a ramp stage needs a percent"]),
    ("shadow without sample", {"stages": [{"name": "s", "kind": "shadow"}]}, ["a shadow stage needs a sample"]),
    ("shadow after a ramp", {"stages": [{"name": "c", "kind": "ramp", "percent": 5},
                                        {"name": "s", "kind": "shadow", "sample": 0.1}]},
     ["a shadow stage must come before"]),
    ("full not last", {"stages": [{"name": "f", "kind": "full"}, {"name": "c", "kind": "ramp", "percent": 5}]},
     ["the full stage must be the last stage"]),
    ("log scale with an absolute margin", {"metrics": [{"name": "latency_ms", "kind": "continuous",
                                                         "better": "lower", "margin": 10, "scale": "log"}]},
     ["metrics.latency_ms: log-scale and quantile metrics need a relative margin"]),
    ("bad margin text", {"metrics": [{"name": "q", "kind": "continuous", "better": "higher", "margin": "lots"}]},
     ["neither a number nor a percentage"]),
    ("duplicate stage names", {"stages": [{"name": "c", "kind": "ramp", "percent": 5},
                                          {"name": "c", "kind": "ramp", "percent": 6}]},
     ["'c' is listed more than once"]),
    ("percent too fine", {"stages": [{"name": "c", "kind": "ramp", "percent": 0.001}]}, ["finer than 0.01 %"]),
    ("unknown field", {"stages": [{"name": "c", "kind": "ramp", "percent": 5, "speed": "fast"}]},
     ["stages.c.speed: unknown field"]),
    ("missing metrics", {"metrics": []}, ["metrics: List should have at least 1 item"]),
    ("bad duration", {"check_interval": "soon"}, ["check_interval: 'soon' is not a duration"]),
    ("online judge named like a metric", {"online_evals": [
        {"name": "error", "scorer": "m:f", "sample": 0.05, "metric": {"margin": 0.03}}]},
     ["metrics: 'error' is listed more than once"]),
    ("online judge without an import path", {"online_evals": [
        {"name": "faithfulness", "scorer": "judge", "sample": 0.05, "metric": {"margin": 0.03}}]},
     ["online_evals.faithfulness.scorer: 'judge' must be an import path"]),
    ("online judge sampling nothing", {"online_evals": [
        {"name": "faithfulness", "scorer": "m:f", "sample": 0, "metric": {"margin": 0.03}}]},
     ["sample: Input should be greater than 0"]),
    ("a metric named by its name", {"metrics": [{"name": "error", "kind": "binery", "better": "lower", "margin": 0.01}]},
     ["metrics.error.kind: Input should be 'binary' or 'continuous'"]),
    ("a stage named by its name", {"stages": [{"name": "canary", "kind": "ramp", "percent": 5, "approval": "yes"}]},
     ["stages.canary.approval: Input should be 'required' or 'none'"]),
    ("a window on no weekday", {"windows": [{"days": "someday", "from": "09:00", "to": "16:00"}]},
     ["windows[0].days: 'someday' is not a weekday"]),
    ("a window in no time zone", {"windows": [{"days": "mon-thu", "from": "09:00", "to": "16:00", "tz": "Mars/Base"}]},
     ["windows[0].tz: 'Mars/Base' is not a known time zone"]),
    ("a window at no time", {"windows": [{"days": "mon", "from": "9am", "to": "16:00"}]},
     ["windows[0].from: String should match pattern"]),
    ("a stall limit of nothing", {"stages": [{"name": "c", "kind": "ramp", "percent": 5, "stall_after": "0s"}]},
     ["stages.c.stall_after: must be longer than zero"]),
]


@pytest.mark.parametrize(("stage", "limit"), [
    ({}, timedelta(hours=1)),
    ({"max_duration": "6h"}, timedelta(hours=6)),
    ({"max_duration": "6h", "stall_after": "15m"}, timedelta(minutes=15)),
])
def test_a_stage_is_held_without_evidence_after_stall_after_else_max_duration_else_an_hour(stage, limit) -> None:  # type: ignore[no-untyped-def]
    plan = load_plan({**BASE, "stages": [{"name": "canary", "kind": "ramp", "percent": 5, **stage}]})
    assert plan.stages[0].stall_limit == limit


@pytest.mark.parametrize(("_name", "change", "problems"), BAD, ids=[b[0] for b in BAD])
def test_bad_plans_name_each_problem(_name: str, change: dict[str, Any], problems: list[str]) -> None:
    with pytest.raises(InvalidPlanError) as info:
        load_plan({**BASE, **change})
    found = info.value.problems
    for expected in problems:
        assert any(expected in p for p in found), (expected, found)


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(InvalidPlanError) as info:
        load_plan({**BASE, "candidate": "a", "flag": "no spaces please",
                   "stages": [{"name": "c", "kind": "ramp", "percent": 500},
                              {"name": "s", "kind": "shadow"}]})
    assert len(info.value.problems) == 5, info.value.problems


def test_an_online_judge_is_judged_as_a_metric_and_graded_within_its_budget() -> None:
    # Given a plan with an online judge
    plan = load_plan({**BASE, "online_evals": [{
        "name": "faithfulness", "scorer": "examples.ticket_app.scoring:faithfulness", "sample": 0.05,
        "budget": {"per_hour": 2.0}, "metric": {"kind": "continuous", "better": "higher", "margin": 0.03}}]})
    # Then its grades are a metric the judge compares, on [0, 1], higher is better
    spec = next(m for m in plan.metrics if m.name == "faithfulness")
    assert (spec.kind, spec.better, spec.margin, spec.bounds) == ("continuous", "higher", 0.03, (0.0, 1.0))
    # And the judge itself is kept with its sampling share and budget
    (judge,) = plan.online_evals
    assert (judge.sample, judge.per_hour, judge.total) == (0.05, 2.0, None)
