"""Cluster-robust (per-unit) variances, pinned against brute force from raw rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.core.stats import (
    ArmStats,
    Code,
    CompletionSpec,
    Decision,
    Evidence,
    MetricSpec,
    UnitSums,
    clustered_comparison,
    judge,
)

ERROR = MetricSpec("error", kind="binary", better="lower", margin=0.0)

# A unit: its rows as (stage, value); values small integers so sums are exact.
unit_rows = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5)), min_size=1, max_size=6)
arm_units = st.lists(unit_rows, min_size=3, max_size=25)


def _sums(units) -> UnitSums:
    per_unit = {}
    for u, rows in enumerate(units):
        cells = per_unit.setdefault(u, {})
        for g, v in rows:
            y, n = cells.get(g, (0.0, 0.0))
            cells[g] = (y + v, n + 1)
    return UnitSums.from_units(per_unit)


def _brute_covariance(units, stages):
    """From raw rows: residual of every row from its stage's ratio mean, summed per unit, then sandwiched."""
    rows = [(u, g, v) for u, r in enumerate(units) for g, v in r]
    n = {g: sum(1 for _, h, _ in rows if h == g) for g in stages}
    r = {g: sum(v for _, h, v in rows if h == g) / n[g] for g in stages if n[g]}
    e = np.zeros((len(units), len(stages)))
    for u, g, v in rows:
        if g in stages:
            e[u, stages.index(g)] += v - r[g]
    k = len(units)
    cov = k / (k - 1) * (e.T @ e) / np.outer([n[g] for g in stages], [n[g] for g in stages])
    return [r[g] for g in stages], cov


@settings(max_examples=150, deadline=None)
@given(arm_units)
def test_given_raw_rows_then_unit_sums_give_the_brute_force_cluster_covariance(units):
    # Given any units with repeat rows spread over stages
    sums = _sums(units)
    stages = list(sums.stages)
    # When the covariance of the stage means is computed from the per-unit sums alone
    r, cov = sums.covariance(stages)
    # Then it equals the sandwich computed from the raw rows' residuals
    r_brute, cov_brute = _brute_covariance(units, stages)
    assert r == pytest.approx(r_brute)
    assert np.asarray(cov) == pytest.approx(cov_brute, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(arm_units, arm_units)
def test_given_two_arms_then_the_pooled_variance_is_the_brute_force_influence_variance(cand, base):
    # Given two arms whose units span the same stages
    sc, sb = _sums(cand), _sums(base)
    stages = sorted(set(sc.stages) & set(sb.stages))
    if not stages or min(min(sc.units), min(sb.units)) < 2:
        return
    rc, cc = sc.covariance(stages)
    rb, cb = sb.covariance(stages)
    kc = [sc.units[sc.stages.index(g)] for g in stages]
    kb = [sb.units[sb.stages.index(g)] for g in stages]
    # When pooled over the stage cells
    est, var, n_eff, _, _ = clustered_comparison(kc, rc, cc, kb, rb, cb, relative=False)
    # Then the variance is that of the per-unit influence sum_g share_g * e_ug / N_g, unit by unit
    w = np.array([a * b / (a + b) for a, b in zip(kc, kb, strict=True)])
    share = w / w.sum()
    expected = 0.0
    for units in (cand, base):
        r, _ = _brute_covariance(units, stages)
        n = {g: sum(1 for rows in units for h, _ in rows if h == g) for g in stages}
        phi = [sum(share[i] * sum(v - r[i] for h, v in rows if h == g) / n[g] for i, g in enumerate(stages))
               for rows in units]
        k = len(units)
        expected += k / (k - 1) * sum(p * p for p in phi)
    assert var == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert est == pytest.approx(float(share @ (np.array(rc) - np.array(rb))))


def _clustered_evidence(m: int, units: int, rate_b: float, rate_c: float, seed: int = 0) -> tuple[Evidence, Evidence]:
    """Each unit repeats its own 0/1 outcome m times (the extreme of clustering); returns (by unit, by row)."""
    rng = np.random.default_rng(seed)
    arms, clusters = {}, {}
    for variant, rate in (("baseline", rate_b), ("candidate", rate_c)):
        y = (rng.random(units) < rate).astype(float)
        per_unit = {u: {0: (m * y[u], float(m))} for u in range(units)}
        x = float(m * y.sum())
        arms[("error", variant, "all", 0)] = ArmStats(n=m * units, sum=x, sum_sq=x)
        clusters[("error", variant, "all", "linear")] = UnitSums.from_units(per_unit)
    units_by_cell = {("baseline", "all", 0): units, ("candidate", "all", 0): units}
    by_unit = Evidence(arms, units=units_by_cell, allocation_bp={("all", 0): 5_000}, clusters=clusters)
    by_row = Evidence(arms, units=units_by_cell, allocation_bp={("all", 0): 5_000})
    return by_unit, by_row


def test_given_units_that_repeat_one_outcome_then_the_band_widens_by_the_design_effect():
    # Given 2,000 units per arm, each repeating its one outcome 9 times (design effect 9)
    by_unit, by_row = _clustered_evidence(m=9, units=2_000, rate_b=0.02, rate_c=0.03)
    # When judged with and without the per-unit sums
    clustered = judge(by_unit, [ERROR], min_samples=10).metric("error")
    rows = judge(by_row, [ERROR], min_samples=10).metric("error")
    # Then the same estimate, but the bound sits about 3 (= sqrt 9) times further from it, and samples are units
    assert clustered.estimate == pytest.approx(rows.estimate)
    ratio = (clustered.estimate - clustered.lower) / (rows.estimate - rows.lower)
    assert 2.0 < ratio < 4.0
    assert (clustered.n_baseline, rows.n_baseline) == (2_000, 18_000)


def test_given_few_units_with_many_rows_then_min_samples_counts_units():
    # Given 40 units per arm with 50 outcomes each (2,000 rows)
    by_unit, _ = _clustered_evidence(m=50, units=40, rate_b=0.3, rate_c=0.3)
    # When judged with min_samples 100
    verdict = judge(by_unit, [ERROR], min_samples=100)
    # Then there is too little data: 40 units, however many rows
    assert verdict.metric("error").code is Code.TOO_LITTLE_DATA
    assert verdict.metric("error").n_candidate == 40


def _completion(units: int, loss_c: float, requests: int = 1, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for variant, loss in (("baseline", 0.0), ("candidate", loss_c)):
        per_unit = {}
        for u in range(units):
            done = float((rng.random(requests) >= loss).sum())
            per_unit[u] = {-1: (done, float(requests))}
        out[(variant, "all")] = UnitSums.from_units(per_unit)
    return out


def _healthy_error_evidence(completion: dict) -> Evidence:
    arms = {("error", v, "all", 0): ArmStats(n=20_000, sum=400.0, sum_sq=400.0) for v in ("baseline", "candidate")}
    return Evidence(arms, units={(v, "all", 0): 20_000 for v in ("baseline", "candidate")},
                    allocation_bp={("all", 0): 5_000}, completion=completion, exposed=True)


SPEC = MetricSpec("error", kind="binary", better="lower", margin=0.01)


@pytest.mark.parametrize(
    ("loss", "on_loss", "decision", "code"),
    [
        (0.0, "hold", Decision.PASS, Code.OK),
        (0.02, "hold", Decision.HOLD, Code.OUTCOME_LOSS),
        (0.02, "rollback", Decision.ROLLBACK, Code.OUTCOME_LOSS),
    ],
)
def test_given_exposures_then_completion_gates_pass_and_a_loss_holds_or_rolls_back(loss, on_loss, decision, code):
    # Given a healthy error metric and 1,500 exposed units per arm, the candidate losing `loss` of its outcomes
    ev = _healthy_error_evidence(_completion(1_500, loss))
    # When judged with the plan's completion settings
    verdict = judge(ev, [SPEC], completion=CompletionSpec(tolerance=0.01, on_loss=on_loss))
    # Then the completion check decides
    check = next(h for h in verdict.health if h.name == "completion")
    assert check.code is code
    assert verdict.decision is decision


def test_given_too_few_exposed_units_then_no_pass_until_completion_is_proven():
    # Given only 30 exposed units per arm, no loss
    ev = _healthy_error_evidence(_completion(30, 0.0))
    # When judged
    verdict = judge(ev, [SPEC])
    # Then every metric is fine but completion is not yet proven: continue, not pass
    assert verdict.decision is Decision.CONTINUE
    assert "completion" in verdict.reason


def test_given_no_exposures_then_completion_is_not_checked():
    ev = _healthy_error_evidence({})
    verdict = judge(ev, [SPEC])
    assert next(h for h in verdict.health if h.name == "completion").code is Code.NO_EXPOSURES
    assert verdict.decision is Decision.PASS


def test_clustered_comparison_with_no_usable_cell_gives_nan():
    est, var, n_eff, _, _ = clustered_comparison([1], [0.5], [[0.1]], [1], [0.5], [[0.1]], relative=False)
    assert math.isnan(est) and math.isnan(var) and n_eff == 0.0
