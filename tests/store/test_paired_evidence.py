"""load_paired_evidence: the SQL self-join equals the same pair statistics computed in Python, on both backends."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from rollout.core.stats import Decision, MetricSpec, PairStats, judge_paired
from rollout.store.evidence import load_paired_evidence
from rollout.store.outcomes import insert_outcomes, new_source

FLAG, ROLLOUT = 3, 11
PAIR_FIELDS = ("n", "sum_d", "sum_d_sq", "sum_b", "sum_b_sq", "sum_bd", "log_n", "log_sum_d", "log_sum_d_sq",
               "log_sum_b", "n01", "n10", "n11", "baseline_only", "candidate_only", "repeated")  # fmt: skip


def _shadow_pairs(rng: np.random.Generator, n: int = 300):
    """n shadowed requests over 2 strata x 2 stages; each stores both arms' outcomes under one pair id.

    Returns (entries, expected values per (metric, stratum, stage) as ([baseline...], [candidate...])).
    """
    entries, expected = [], {}
    for i in range(n):
        stratum, stage, unit, pair = ("free", "paid")[i % 2], (i // 2) % 2, int(rng.integers(0, 2**40)), 10_000 + i
        z = rng.normal()
        values = {
            "current": {"error": float(rng.random() < 0.1), "latency_ms": float(np.exp(5 + z)),
                        "score": float(rng.normal(0, 1))},
            "new-model": {"error": float(rng.random() < 0.12), "latency_ms": float(np.exp(5.1 + z)),
                          "score": float(rng.normal(0.1, 1))},
        }  # fmt: skip
        if i % 7 == 0:
            values["current"]["latency_ms"] = 0.0  # a zero: in the linear sums, not in the log ones
        for variant, metrics in values.items():
            entries.append(((FLAG, ROLLOUT, stage, variant, stratum, unit, pair), tuple(metrics.items()), 1.7e9 + i))
        for metric in ("error", "latency_ms", "score"):
            cell = expected.setdefault((metric, stratum, stage), ([], []))
            cell[0].append(values["current"][metric])
            cell[1].append(values["new-model"][metric])
    return entries, expected


def _noise():
    """Rows that must not be paired: other rollout, other variant, no pair id, other flag."""
    return [
        ((FLAG, ROLLOUT + 1, 0, "new-model", "free", 1, 10_000), (("error", 1.0),), 1.7e9),
        ((FLAG, ROLLOUT, 0, "other", "free", 1, 10_000), (("error", 1.0),), 1.7e9),
        ((FLAG, ROLLOUT, 0, "new-model", "free", 1), (("error", 1.0),), 1.7e9),
        ((FLAG + 1, ROLLOUT, 0, "new-model", "free", 1, 10_000), (("error", 1.0),), 1.7e9),
    ]


def test_given_shadow_pairs_when_loaded_then_pair_statistics_match_python(engine: Engine) -> None:
    # Given 300 shadowed requests (3 metrics per arm) plus rows that must stay out
    entries, expected = _shadow_pairs(np.random.default_rng(5))
    insert_outcomes(engine, new_source(), list(enumerate(entries + _noise())))
    # When the paired evidence of the rollout is loaded
    with Session(engine) as s:
        ev = load_paired_evidence(s, flag_id=FLAG, rollout_id=ROLLOUT, baseline="current", candidate="new-model")
    # Then every cell equals PairStats computed from the same values in Python
    assert set(ev.pairs) == set(expected)
    for key, (base, cand) in expected.items():
        got, want = ev.pairs[key], PairStats.from_pairs(base, cand)
        for field in PAIR_FIELDS:
            assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-9, abs=1e-9), (key, field)
    # and the zeros left the log moments: 75 pairs per cell, fewer with both latencies positive
    assert ev.pair("latency_ms", "free", 0).n == 75
    assert ev.pair("latency_ms", "free", 0).log_n < 75


@pytest.mark.parametrize(
    ("kwargs", "cells"),
    [
        (dict(metrics=["error"]), {("error", s, g) for s in ("free", "paid") for g in (0, 1)}),
        (dict(stages=[1]), {(m, s, 1) for m in ("error", "latency_ms", "score") for s in ("free", "paid")}),
        (dict(metrics=["score"], stages=[0]), {("score", "free", 0), ("score", "paid", 0)}),
    ],
)
def test_filters_restrict_the_cells(engine: Engine, kwargs, cells) -> None:
    entries, _ = _shadow_pairs(np.random.default_rng(6), n=40)
    insert_outcomes(engine, new_source(), list(enumerate(entries)))
    with Session(engine) as s:
        ev = load_paired_evidence(s, flag_id=FLAG, baseline="current", candidate="new-model", **kwargs)
    assert set(ev.pairs) == cells


def test_incomplete_and_repeated_pairs_are_counted_not_hidden(engine: Engine) -> None:
    # Given 3 complete pairs, 2 baseline outcomes whose candidate never arrived,
    # 1 candidate outcome alone, and one pair id the candidate reported twice
    def row(variant, pair, value):
        return ((FLAG, ROLLOUT, 0, variant, "all", pair, pair), (("error", value),), 1.7e9)

    rows = [row(v, p, 0.0) for p in (1, 2, 3) for v in ("current", "new-model")]
    rows += [row("current", 4, 1.0), row("current", 5, 0.0), row("new-model", 6, 1.0)]
    rows += [row("current", 7, 0.0), row("new-model", 7, 1.0), row("new-model", 7, 1.0)]
    insert_outcomes(engine, new_source(), list(enumerate(rows)))
    # When loaded
    with Session(engine) as s:
        ev = load_paired_evidence(s, flag_id=FLAG, baseline="current", candidate="new-model")
    cell = ev.pair("error", "all", 0)
    # Then only the 3 complete pairs are pairs (pair 7 is neither paired nor dropped silently)
    assert (cell.n, cell.n00, cell.n01, cell.n10, cell.n11) == (3, 3, 0, 0, 0)
    assert (cell.baseline_only, cell.candidate_only, cell.repeated) == (2, 1, 1)
    # and the judge refuses to trust it: hold, never pass
    verdict = judge_paired(ev, [MetricSpec("error", kind="binary", margin=0.5)], min_samples=0)
    assert verdict.decision is Decision.HOLD
    assert not next(h for h in verdict.health if h.name == "pairs_complete").ok


def test_metric_reported_by_one_arm_only_holds(engine: Engine) -> None:
    # Given shadow outcomes where only the baseline reports "score"
    rows = [((FLAG, ROLLOUT, 0, "current", "all", p, p), (("score", 0.5),), 1.7e9) for p in range(200)]
    rows += [((FLAG, ROLLOUT, 0, "new-model", "all", p, p), (("error", 0.0),), 1.7e9) for p in range(200)]
    insert_outcomes(engine, new_source(), list(enumerate(rows)))
    with Session(engine) as s:
        ev = load_paired_evidence(s, flag_id=FLAG, baseline="current", candidate="new-model")
    # When judged on score, Then it is missing in an arm and the check holds
    verdict = judge_paired(ev, [MetricSpec("score", margin=0.1)], min_samples=10)
    assert verdict.metric("score").code.value == "missing_in_arm"
    assert verdict.decision is Decision.HOLD
    assert "candidate arm" in verdict.metric("score").reason


def test_no_shadow_outcomes_give_empty_evidence(engine: Engine) -> None:
    with Session(engine) as s:
        ev = load_paired_evidence(s, flag_id=FLAG, baseline="current", candidate="new-model")
    assert dict(ev.pairs) == {}
    assert judge_paired(ev, [MetricSpec("error", kind="binary")]).decision is Decision.HOLD
