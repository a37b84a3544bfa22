"""Writing exposure counts: one upsert per batch that adds counts to what is stored.

The SDK counts repeat assignments in memory and hands over one row per unit and
cell; the store adds them up (`count = count + excluded.count`), so the table
grows with units x stages, never with requests. The same statement runs on
SQLite and PostgreSQL (both speak `INSERT ... ON CONFLICT DO UPDATE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, case, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rollout.store.models import Exposure

ExposureKey = tuple[int, int, int, str, str, int]
"""(flag_id, rollout_id [0 = none], stage, variant, stratum, unit_hash): the exposures table's key."""

ExposureRow = tuple[ExposureKey, int, float, float]
"""(key, count, first seen, last seen [Unix seconds]): one unit's exposures in one cell since the last write."""

_KEY = ("flag_id", "rollout_id", "stage", "variant", "stratum", "unit_hash")


def upsert_exposures(engine: Engine, rows: Sequence[ExposureRow]) -> int:
    """Add these counts in one transaction; returns how many rows were written. Raises on any database fault.

    Keys must be unique within a batch (PostgreSQL refuses to update one row
    twice in one statement); the SDK aggregates before it writes. Rows go in
    key order so two clients upserting overlapping batches lock rows in the
    same order and cannot deadlock each other.
    """
    if not rows:
        return 0
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    values = [
        {**dict(zip(_KEY, key, strict=True)), "count": count,
         "first_at": datetime.fromtimestamp(first, UTC), "last_at": datetime.fromtimestamp(last, UTC)}
        for key, count, first, last in sorted(rows, key=lambda row: row[0])
    ]
    stmt = insert(Exposure)
    excluded = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={
            "count": Exposure.count + excluded.count,
            # A retried older batch may land after a newer one: keep the widest span.
            "first_at": case((excluded.first_at < Exposure.first_at, excluded.first_at), else_=Exposure.first_at),
            "last_at": case((excluded.last_at > Exposure.last_at, excluded.last_at), else_=Exposure.last_at),
        },
    )
    with engine.begin() as conn:
        conn.execute(stmt, values)
    return len(values)


def exposure_counts(session: Session, flag_id: int) -> dict[ExposureKey, int]:
    """Every stored count of one flag, by key: for tests and operators, not for the judge's hot path."""
    rows = session.execute(select(Exposure).where(Exposure.flag_id == flag_id))
    return {(e.flag_id, e.rollout_id, e.stage, e.variant, e.stratum, e.unit_hash): e.count for (e,) in rows}


__all__ = ["ExposureKey", "ExposureRow", "exposure_counts", "upsert_exposures"]
