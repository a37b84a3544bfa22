"""The exposure upsert: counts add up per unit and cell, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from rollout.store.exposures import exposure_counts, upsert_exposures
from rollout.store.models import Exposure

A = (1, 3, 2, "current", "free", -42)
B = (1, 3, 2, "new-model", "free", 2**62)


def test_counts_add_up_and_the_seen_span_only_widens(engine: Engine) -> None:
    # Given one batch for two units
    assert upsert_exposures(engine, [(A, 5, 100.0, 200.0), (B, 1, 150.0, 150.0)]) == 2
    # When a later batch and an older, retried one arrive for unit A
    upsert_exposures(engine, [(A, 2, 300.0, 400.0)])
    upsert_exposures(engine, [(A, 1, 50.0, 60.0)])
    # Then A's count is the sum and its span covers every batch; B is untouched
    with Session(engine) as s:
        assert exposure_counts(s, 1) == {A: 8, B: 1}
        first, last = s.execute(select(Exposure.first_at, Exposure.last_at).where(Exposure.unit_hash == -42)).one()
    assert (first, last) == (datetime.fromtimestamp(50, UTC), datetime.fromtimestamp(400, UTC))


def test_a_big_batch_is_one_row_per_key(engine: Engine) -> None:
    rows = [((1, 3, 2, "current", "default", h), 1, 10.0, 10.0) for h in range(6_000)]
    assert upsert_exposures(engine, rows) == 6_000
    assert upsert_exposures(engine, rows[:10]) == 10
    with Session(engine) as s:
        counts = exposure_counts(s, 1)
    assert len(counts) == 6_000 and sum(counts.values()) == 6_010


def test_nothing_to_write_touches_nothing(engine: Engine) -> None:
    assert upsert_exposures(engine, []) == 0
