"""load_evidence: SQL aggregation equals the same statistics computed in Python, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from rollout.core.stats import ArmStats, Decision, MetricSpec, UnitSums, judge
from rollout.store import flags as store
from rollout.store.db import transaction
from rollout.store.evidence import load_evidence
from rollout.store.models import Exposure, Outcome
from rollout.store.outcomes import flag_ids

COLUMNS = ("flag_id", "rollout_id", "stage", "variant", "stratum", "unit_hash", "metric", "value", "recorded_at")


def insert_outcomes(engine: Engine, rows) -> None:
    """Plain INSERTs through the table object, independent of the SDK's fast write path."""
    with transaction(engine) as s:
        s.execute(
            insert(Outcome),
            [dict(zip(COLUMNS, (*r[:8], datetime.fromtimestamp(r[8], UTC)), strict=True)) for r in rows],
        )


def _flag(engine: Engine) -> int:
    with transaction(engine) as s:
        store.create_flag(s, "summarizer", variants=["current", "new-model"], actor="alice")
    with Session(engine) as s:
        return flag_ids(s)["summarizer"]


def _rows(flag_id: int, rng: np.random.Generator, n: int = 400):
    """Outcomes over 2 variants x 2 strata x 2 stages, 3 metrics each (one includes zeros and negatives)."""
    rows, expected = [], {}
    for i in range(n):
        variant = ("current", "new-model")[i % 2]
        stratum = ("free", "paid")[(i // 2) % 2]
        stage = (i // 4) % 2
        unit = int(rng.integers(0, 2**40))
        values = {
            "error": float(rng.random() < 0.1),
            "latency_ms": float(rng.lognormal(5, 1)),
            "delta": float(rng.normal(0, 1)),  # has negatives: log moments cover only the positive part
        }
        for metric, value in values.items():
            rows.append((flag_id, 7, stage, variant, stratum, unit, metric, value, 1.7e9 + i))
            expected.setdefault((metric, variant, stratum, stage), []).append(value)
    # Another rollout and another variant must not leak in.
    rows.append((flag_id, 8, 0, "current", "free", 1, "error", 1.0, 1.7e9))
    rows.append((flag_id, 7, 0, "other", "free", 1, "error", 1.0, 1.7e9))
    return rows, expected


def test_given_outcomes_when_loaded_then_statistics_match_python(engine: Engine) -> None:
    # Given 400 outcomes x 3 metrics in known cells
    flag_id = _flag(engine)
    rows, expected = _rows(flag_id, np.random.default_rng(1))
    insert_outcomes(engine, rows)
    # When the evidence of rollout 7 is loaded
    with Session(engine) as s:
        ev = load_evidence(s, flag_id=flag_id, rollout_id=7)
    # Then every cell equals the same statistics computed in Python
    assert (ev.baseline, ev.candidate) == ("current", "new-model")
    assert set(ev.arms) == set(expected)
    for key, values in expected.items():
        got, want = ev.arms[key], ArmStats.from_values(values)
        assert (got.n, got.log_n) == (want.n, want.log_n), key
        for field in ("sum", "sum_sq", "log_sum", "log_sum_sq"):
            assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-9, abs=1e-9), (key, field)
        # Histograms: SQL's floor(ln(v) * 20) must bin like Python's (only positive values)
        assert got.histogram == want.histogram, key
    # and units are distinct unit hashes per (variant, stratum, stage): 50 per cell here
    assert ev.units[("current", "free", 0)] == 50
    assert sum(ev.units.values()) == 400


def test_metric_filter_and_histogram_opt_out(engine: Engine) -> None:
    flag_id = _flag(engine)
    rows, _ = _rows(flag_id, np.random.default_rng(2), n=40)
    insert_outcomes(engine, rows)
    with Session(engine) as s:
        ev = load_evidence(s, flag_id=flag_id, rollout_id=7, metrics=["error"], histograms=())
    assert {m for (m, *_rest) in ev.arms} == {"error"}
    assert all(a.histogram.total == 0 for a in ev.arms.values())


def test_given_no_outcomes_then_empty_evidence_and_a_hold(engine: Engine) -> None:
    flag_id = _flag(engine)
    with Session(engine) as s:
        ev = load_evidence(s, flag_id=flag_id)
        missing = load_evidence(s, flag_id=flag_id + 999)
    assert ev.arms == {} and missing.arms == {}
    verdict = judge(ev, [MetricSpec("error", kind="binary")])
    assert verdict.decision is Decision.HOLD


def test_allocation_defaults_to_the_flags_current_one_for_the_latest_stage(engine: Engine) -> None:
    flag_id = _flag(engine)
    with transaction(engine) as s:
        store.set_allocation(s, "summarizer", 2_500, actor="alice", stratum="default")
    insert_outcomes(engine, [(flag_id, 1, 2, "current", "default", 1, "error", 0.0, 1.7e9)])
    with Session(engine) as s:
        ev = load_evidence(s, flag_id=flag_id)
        explicit = load_evidence(s, flag_id=flag_id, allocation_bp={("default", 2): 100})
    assert dict(ev.allocation_bp) == {("default", 2): 2_500}
    assert dict(explicit.allocation_bp) == {("default", 2): 100}


def test_loaded_evidence_drives_the_judge(engine: Engine) -> None:
    # Given 2 % errors in the baseline and 6 % in the candidate, 3,000 outcomes each
    flag_id = _flag(engine)
    rng = np.random.default_rng(3)
    rows = [
        (flag_id, 1, 0, variant, "default", i, "error", float(rng.random() < rate), 1.7e9)
        for variant, rate in (("current", 0.02), ("new-model", 0.06))
        for i in range(3_000)
    ]
    insert_outcomes(engine, rows)
    with Session(engine) as s:
        ev = load_evidence(s, flag_id=flag_id, rollout_id=1, allocation_bp={("default", 0): 5_000})
    verdict = judge(ev, [MetricSpec("error", kind="binary", margin=0.005)])
    assert verdict.decision is Decision.ROLLBACK
    assert math.isclose(verdict.metric("error").n_candidate, 3_000)


def _repeat_user_rows(flag_id: int, rng: np.random.Generator, users: int = 60):
    """Users that come back: 1-6 requests each, over two stages, staying in their arm; latency has zeros."""
    rows, per_unit = [], {}
    for u in range(users):
        variant = ("current", "new-model")[u % 2]
        stratum = ("free", "paid")[(u // 2) % 2]
        unit = int(rng.integers(1, 2**40))
        for r in range(int(rng.integers(1, 7))):
            stage = int(rng.integers(0, 2))
            latency = 0.0 if rng.random() < 0.1 else float(rng.lognormal(5, 1))
            error = float(rng.random() < 0.2)
            for metric, value in (("error", error), ("latency_ms", latency)):
                rows.append((flag_id, 7, stage, variant, stratum, unit, metric, value, 1.7e9 + r))
                per_unit.setdefault((metric, variant, stratum), {}).setdefault(unit, []).append((stage, value))
    return rows, per_unit


def _brute_unit_sums(rows_of_units, transform):
    """UnitSums from raw rows in Python: {unit: [(stage, value)]} through transform(value) -> (y, n) or None."""
    per_unit = {}
    for unit, rows in rows_of_units.items():
        for stage, value in rows:
            t = transform(value)
            if t is None:
                continue
            y, n = per_unit.setdefault(unit, {}).get(stage, (0.0, 0.0))
            per_unit[unit][stage] = (y + t[0], n + t[1])
    return UnitSums.from_units(per_unit)


def _assert_same_sums(got: UnitSums, want: UnitSums) -> None:
    stages = list(want.stages)
    assert got.units_total == want.units_total
    for g in stages:
        i, j = got.stages.index(g), want.stages.index(g)
        assert got.units[i] == want.units[j]
    r_got, cov_got = got.covariance(stages)
    r_want, cov_want = want.covariance(stages)
    assert r_got == pytest.approx(r_want, rel=1e-9)
    assert np.asarray(cov_got) == pytest.approx(np.asarray(cov_want), rel=1e-9, abs=1e-15)


def test_given_repeat_users_then_sql_unit_sums_equal_the_brute_force_from_rows(engine: Engine) -> None:
    # Given users with repeat requests across two stages
    flag_id = _flag(engine)
    rows, per_unit = _repeat_user_rows(flag_id, np.random.default_rng(5))
    insert_outcomes(engine, rows)
    # When loaded, with a p95 spec so per-unit exceedances are counted too
    p95 = MetricSpec("latency_p95", relative=True, quantile=0.95, source="latency_ms", margin=0.1)
    with Session(engine) as s:
        ev = load_evidence(s, flag_id=flag_id, rollout_id=7, quantiles=[p95], histograms=["latency_ms"])
    # Then every (metric, arm, stratum) has the per-unit sums Python computes from the raw rows
    for (metric, variant, stratum), units in per_unit.items():
        _assert_same_sums(ev.clusters[(metric, variant, stratum, "linear")], _brute_unit_sums(units, lambda v: (v, 1)))
        _assert_same_sums(ev.clusters[(metric, variant, stratum, "log")],
                          _brute_unit_sums(units, lambda v: (math.log(v), 1) if v > 0 else None))
    exceed = [k for k in ev.clusters if k[3].startswith("exceed:")]
    assert exceed
    for metric, variant, stratum, name in exceed:
        t = int(name.split(":")[1])
        units = per_unit[(metric, variant, stratum)]
        want = _brute_unit_sums(units, lambda v: (float(math.floor(math.log(v) * 20) >= t), 1) if v > 0 else None)
        _assert_same_sums(ev.clusters[(metric, variant, stratum, name)], want)
    # and SRM units are distinct users per cell, and the judge counts users, not requests
    verdict = judge(ev, [MetricSpec("error", kind="binary", margin=0.05), p95], min_samples=5)
    users = {(v, s): len(u) for (m, v, s), u in per_unit.items() if m == "error"}
    assert verdict.metric("error").n_candidate == sum(n for (v, _), n in users.items() if v == "new-model")


def test_given_exposures_then_srm_counts_exposed_units_and_completion_compares_outcomes(engine: Engine) -> None:
    # Given 200 users per arm exposed 3 times each; the candidate's users report only 2 of their 3 requests
    flag_id = _flag(engine)
    now = datetime.fromtimestamp(1.7e9, UTC)
    exposures, rows = [], []
    for variant, reported in (("current", 3), ("new-model", 2)):
        for u in range(200):
            unit = u * 2 + (variant == "new-model")
            exposures.append(dict(flag_id=flag_id, rollout_id=7, stage=0, variant=variant, stratum="default",
                                  unit_hash=unit, count=3, first_at=now, last_at=now))
            rows += [(flag_id, 7, 0, variant, "default", unit, "error", 0.0, 1.7e9)] * reported
    # and 50 exposed users who never reported anything
    exposures += [dict(flag_id=flag_id, rollout_id=7, stage=0, variant="new-model", stratum="default",
                       unit_hash=10_000 + u, count=1, first_at=now, last_at=now) for u in range(50)]
    insert_outcomes(engine, rows)
    with transaction(engine) as s:
        s.execute(insert(Exposure), exposures)
    # When loaded
    with Session(engine) as s:
        ev = load_evidence(s, flag_id=flag_id, rollout_id=7, allocation_bp={("default", 0): 5_000})
    # Then SRM sees exposed units, and completion is outcomes over exposures per arm, per unit
    assert ev.exposed
    assert ev.units[("new-model", "default", 0)] == 250 and ev.units[("current", "default", 0)] == 200
    cand, base = ev.completion[("new-model", "default")], ev.completion[("current", "default")]
    assert (cand.units_total, cand.n[0], cand.y[0]) == (250, 650.0, 400.0)
    assert (base.units_total, base.n[0], base.y[0]) == (200, 600.0, 600.0)
    assert cand.yy[0][0] == 200 * 4 and cand.yn[0][0] == 200 * 6 and cand.nn[0][0] == 200 * 9 + 50
    verdict = judge(ev, [MetricSpec("error", kind="binary", margin=0.05)], min_samples=10)
    assert verdict.decision is Decision.HOLD
