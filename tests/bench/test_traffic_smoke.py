"""The real-traffic worlds: the numpy twin of the SQL aggregation, and a smoke run through the real judge()."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import traffic  # noqa: E402
from rollout.core.stats import UnitSums  # noqa: E402


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), max_size=5), min_size=1, max_size=20))
def test_the_numpy_twin_equals_the_brute_force_unit_sums(units):
    # Given units with rows (stage, value); When summed as (units x stages) arrays by the bench's twin
    y, n = np.zeros((len(units), 3)), np.zeros((len(units), 3))
    per_unit = {}
    for u, rows in enumerate(units):
        for g, v in rows:
            y[u, g] += v
            n[u, g] += 1
            cy, cn = per_unit.setdefault(u, {}).get(g, (0.0, 0.0))
            per_unit[u][g] = (cy + v, cn + 1)
    twin = traffic.unit_sums(y, n, (0, 1, 2))
    # Then it equals UnitSums.from_units (which tests/store pins the SQL against) on the stages both have
    brute = UnitSums.from_units({u: c for u, c in per_unit.items() if c})
    assert twin.units_total == brute.units_total
    for g in brute.stages:
        assert twin.units[g] == brute.units[brute.stages.index(g)]
    r_twin, cov_twin = twin.covariance(brute.stages)
    r_brute, cov_brute = brute.covariance(brute.stages)
    np.testing.assert_allclose(r_twin, r_brute)
    np.testing.assert_allclose(cov_twin, cov_brute, atol=1e-12)


def test_a_lossy_candidate_is_held_by_completion_and_the_row_level_judge_misses_it():
    # Given the 2 % loss world, 2 runs on a short horizon
    world = replace(next(w for w in traffic.worlds(quick=True) if w.name == "loss_2"), runs=2, horizon=6_000)
    # When both arms judge the same streams
    out = traffic.run_world(world, 3, {"after": [traffic.ERROR_0], "before": [traffic.ERROR_0]})
    # Then only the judge with exposures holds it (the old one has no completion evidence)
    assert (out["after"]["hold"] >= 0).all()
    assert (out["before"]["hold"] < 0).all()


def test_the_report_names_the_targets():
    world = replace(traffic.worlds(quick=True)[0], runs=1, horizon=1_500)
    md = traffic.report([(world, traffic.run_world(world, 1, {"after": [traffic.ERROR_0]}), 0.0)], True, 1.0)
    assert "Targets (after)" in md and "aa_one" in md
