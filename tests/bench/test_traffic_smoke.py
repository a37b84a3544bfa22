"""The real-traffic worlds: the numpy twins of the SQL aggregation and of the judge's comparison, and smoke runs."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import traffic, unit_looks  # noqa: E402
from rollout.core.stats import UnitSums  # noqa: E402


def _world(name: str, **changes) -> traffic.World:
    return replace(next(w for w in traffic.worlds(quick=True) if w.name == name), **changes)


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


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 5), st.integers(0, 2), st.integers(0, 3),
                          st.floats(0, 5), st.booleans()), min_size=1, max_size=60))
def test_incremental_look_sums_equal_the_unit_sums_of_what_each_look_has_seen(rows):
    # Given rows (group, unit, stage, look, value, counted) arriving in look order
    rows = sorted(rows, key=lambda r: r[3])
    group, unit, stage, look, z, c = (np.array(col) for col in zip(*rows, strict=True))
    z = np.where(c, z, 0.0)
    # When the twin sums them incrementally for every look at once
    sums = unit_looks.look_sums(group, unit, stage, look, z.astype(float), c.astype(float), 2, 4, 3)
    # Then every look's sums equal the brute-force unit sums of the rows seen by then
    for gi in range(2):
        for j in range(4):
            seen = (group == gi) & (look <= j)
            y, n = np.zeros((6, 3)), np.zeros((6, 3))
            np.add.at(y, (unit[seen], stage[seen]), z[seen])
            np.add.at(n, (unit[seen], stage[seen]), c[seen].astype(float))
            brute = traffic.unit_sums(y, n, (0, 1, 2))
            assert sums["total"][gi, j] == brute.units_total
            np.testing.assert_allclose(sums["units"][gi, j], brute.units)
            np.testing.assert_allclose(sums["n"][gi, j], brute.n)
            np.testing.assert_allclose(sums["y"][gi, j], brute.y)
            for key in ("yy", "yn", "nn"):
                np.testing.assert_allclose(sums[key][gi, j], getattr(brute, key), atol=1e-9)


def test_the_twin_follows_the_real_judge_at_every_look():
    # Given worlds with repeat users, two strata and late outcomes, every look checked by the real judge too
    for name in ("aa_few_accounts", "aa_late", "aa_cost_pareto25"):
        world = _world(name, runs=2, horizon=6_000)
        # When both judge the same streams
        out = traffic.run_world(world, 11, cross_runs=2)
        audit = out["_audit"]
        # Then they agree on every rollback decision and on every metric's log e-value
        assert audit["checks"] >= 2 * 2 * (6_000 // traffic.LOOK)  # two runs, two plans, every look
        assert audit["disagree"] == 0 and audit["verdicts_differ"] == 0
        assert audit["max_log_e_gap"] < 1e-8


def test_a_regressed_candidate_is_rolled_back_and_the_oracle_decides():
    # Given error 2 % -> 3 % with repeat users on a short horizon
    world = _world("err_2_3", runs=3, horizon=30_000)
    # When judged
    o = traffic.run_world(world, 5, cross_runs=0)["margin 0"]
    # Then the real judge rolls it back, and the SPRT oracle (which knows the effect) reaches a decision
    assert (o["rollback"] >= 0).all()
    assert (o["sprt"] >= 0).all() and (o["cand_at_sprt"] > 0).all()


def test_a_lossy_candidate_is_held_by_completion():
    # Given the 2 % loss world, 2 runs on a short horizon
    world = _world("loss_2", runs=2, horizon=6_000)
    # When judged
    out = traffic.run_world(world, 3)
    # Then completion (exposures without outcomes) holds it
    assert (out["margin 0"]["hold"] >= 0).all()


def test_the_report_names_the_targets():
    world = _world("aa_one", runs=1, horizon=1_500)
    md = traffic.report([(world, traffic.run_world(world, 1, cross_runs=1), 0.0)], True, 1.0)
    assert "Against the targets" in md and "aa_one" in md and "MISSED" in md  # 1 run cannot meet a Wilson bound
