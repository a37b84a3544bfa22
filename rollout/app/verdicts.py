"""The one serialisation of a verdict: what the decisions table keeps, the CLI's --json and the HTTP API
print, and the Prefect artifacts show (they format the same rows for people)."""

from __future__ import annotations

import math
from typing import Any

from rollout.core.stats import MetricResult, Verdict


def verdict_json(verdict: Verdict | None, samples: int) -> dict[str, Any]:
    """A verdict as plain JSON: enough to explain it and to plot the bounds later."""
    if verdict is None:
        return {"samples": samples, "metrics": [], "strata": [], "health": []}
    return {
        "samples": samples,
        "decision": verdict.decision.value,
        "reason": verdict.reason,
        "metrics": [metric_json(r) for r in verdict.metrics],
        "strata": [metric_json(r) for r in verdict.strata if r.verdict.value in ("harm",)],
        "health": [{"name": h.name, "ok": h.ok, "code": h.code.value, "reason": h.reason} for h in verdict.health],
    }


def metric_json(r: MetricResult) -> dict[str, Any]:
    return {"metric": r.metric, "stratum": r.stratum, "verdict": r.verdict.value, "code": r.code.value,
            "estimate": _clean(r.estimate), "lower": _clean(r.lower), "upper": _clean(r.upper),
            "margin": _clean(r.margin), "n_baseline": r.n_baseline, "n_candidate": r.n_candidate,
            "baseline": _clean(r.baseline_value), "candidate": _clean(r.candidate_value),
            "p_value": _clean(r.p_value), "reason": r.reason}


def number(x: float | None) -> str:
    """A serialised number for people: signed, 4 significant digits, a dash for none."""
    return "–" if x is None else f"{x:+.4g}"


def display_rows(details: dict[str, Any]) -> list[dict[str, Any]]:
    """The metric rows of a serialised verdict, formatted for a table (artifacts, approval form)."""
    return [{"metric": m["metric"], "estimate": number(m["estimate"]),
             "bounds": f"[{number(m['lower'])}, {number(m['upper'])}]", "margin": number(m["margin"]),
             "n": f"{m['n_baseline']}/{m['n_candidate']}", "verdict": m["verdict"]}
            for m in details.get("metrics", [])]


def _clean(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


__all__ = ["display_rows", "metric_json", "number", "verdict_json"]
