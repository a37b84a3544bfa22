"""load_evidence: SQL aggregation equals the same statistics computed in Python, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from rollout.core.stats import ArmStats, Decision, MetricSpec, judge
from rollout.store import flags as store
from rollout.store.db import transaction
from rollout.store.evidence import load_evidence
from rollout.store.models import Outcome
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
