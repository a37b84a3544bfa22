"""Writing exposure counts exactly once: one upsert per batch that adds counts to what is stored.

The SDK (and the HTTP service) counts repeat assignments in memory and hands
over one row per unit and cell; the store adds them up (`count = count +
excluded.count`), so the table grows with units x stages, never with requests.
The same statement runs on SQLite and PostgreSQL (both speak `INSERT ... ON
CONFLICT DO UPDATE`).

Adding is not idempotent: a batch whose COMMIT was stored but whose reply was
lost would be retried and counted twice, which the judge would read as
exposures without outcomes (completion loss). So every batch carries the same
kind of key outcomes do, (source, seq): the writer's random source id
(`rollout.store.outcomes.new_source`) and its own running batch number. The
writer stores its batches strictly in order and retries a batch unchanged until
it is stored (`rollout.sdk.exposures.ExposureCounts`), so one row per source
in `exposure_sources` holding the highest seq stored is enough: it is moved
forward in the same transaction as the counts, and a batch whose seq is not
above it was stored already and adds nothing. Outcomes key every row instead
because their batches may be split and are not ordered; exposures keep one
small row per writer, not one per batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from rollout.store.db import io_deadline, store_faults
from rollout.store.models import Exposure

ExposureKey = tuple[int, int, int, str, str, int]
"""(flag_id, rollout_id [0 = none], stage, variant, stratum, unit_hash): the exposures table's key."""

ExposureRow = tuple[ExposureKey, int, float, float]
"""(key, count, first seen, last seen [Unix seconds]): one unit's exposures in one cell since the last write."""


# Moves the source's watermark forward; touches no row (rowcount 0) when this batch is stored already.
_CLAIM = ("INSERT INTO exposure_sources (source, seq, stored_at) VALUES ({0}, {0}, {0}) "
          "ON CONFLICT (source) DO UPDATE SET seq = excluded.seq, stored_at = excluded.stored_at "
          "WHERE exposure_sources.seq < excluded.seq")
_SQLITE_CLAIM = _CLAIM.format("?")
_PG_CLAIM = _CLAIM.format("%s")
_COLUMNS = "flag_id, rollout_id, stage, variant, stratum, unit_hash, count, first_at, last_at"
_CONFLICT = "ON CONFLICT (flag_id, rollout_id, stage, variant, stratum, unit_hash) DO UPDATE SET count = exposures.count + excluded.count"
# A retried older batch may land after a newer one: keep the widest span seen.
_SQLITE_UPSERT = (f"INSERT INTO exposures ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) {_CONFLICT}, "
                  "first_at = min(exposures.first_at, excluded.first_at), "
                  "last_at = max(exposures.last_at, excluded.last_at)")
_PG_UPSERT = (f"INSERT INTO exposures ({_COLUMNS}) SELECT * FROM unnest("
              "%s::integer[], %s::integer[], %s::integer[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], "
              f"%s::timestamptz[], %s::timestamptz[]) {_CONFLICT}, "
              "first_at = LEAST(exposures.first_at, excluded.first_at), "
              "last_at = GREATEST(exposures.last_at, excluded.last_at)")


def upsert_exposures(engine: Engine, source: int, seq: int, rows: Sequence[ExposureRow]) -> int:
    """Add batch `seq` of writer `source` in one transaction; returns how many rows were written (0 for a replay).

    A batch whose seq is not above the highest stored for its source was
    stored already (a retry after a lost commit reply) and changes nothing.
    A database fault raises `StoreUnavailableError`; the caller retries the
    same batch with the same seq.

    Keys must be unique within a batch (PostgreSQL refuses to update one row
    twice in one statement); the SDK aggregates before it writes. Rows go in
    key order so two clients upserting overlapping batches lock rows in the
    same order and cannot deadlock each other.

    Written with the driver directly, as outcomes are: the SDK's flusher runs
    this every tick beside the app's threads, and SQLAlchemy's per-row
    parameter processing cost about ten times the driver's own loop
    (on SQLite, 35 ms per 1,000 rows through the ORM's insert, about 5 ms this way).
    """
    if not rows:
        return 0
    ordered = sorted(rows, key=lambda row: row[0])
    postgres = engine.dialect.name == "postgresql"
    # A batch has a handful of distinct times (the SDK's flush windows): convert each once.
    times: dict[float, object] = {}

    def stamp(at: float) -> object:
        value = times.get(at)
        if value is None:
            value = datetime.fromtimestamp(at, UTC)
            # SQLAlchemy's SQLite DateTime is text in exactly this shape (see rollout.store.outcomes).
            times[at] = value = value if postgres else value.strftime("%Y-%m-%d %H:%M:%S.%f")
        return value

    values = [(*key, count, stamp(first), stamp(last)) for key, count, first, last in ordered]
    claim = (source, seq, stamp(time.time()))
    with store_faults(), engine.connect() as conn, io_deadline(conn), conn.begin():
        # The claim goes first: it locks the source's row, so a concurrent replay of the same batch
        # waits for this transaction and then finds the seq taken.
        if postgres:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor:
                cursor.execute(_PG_CLAIM, claim)
                if cursor.rowcount == 0:
                    return 0
                cursor.execute(_PG_UPSERT, [list(column) for column in zip(*values, strict=True)])
        else:
            if conn.exec_driver_sql(_SQLITE_CLAIM, claim).rowcount == 0:
                return 0
            conn.exec_driver_sql(_SQLITE_UPSERT, values)
    return len(values)


def exposure_counts(session: Session, flag_id: int) -> dict[ExposureKey, int]:
    """Every stored count of one flag, by key: for tests and operators, not for the judge's hot path."""
    rows = session.execute(select(Exposure).where(Exposure.flag_id == flag_id))
    return {(e.flag_id, e.rollout_id, e.stage, e.variant, e.stratum, e.unit_hash): e.count for (e,) in rows}


__all__ = ["ExposureKey", "ExposureRow", "exposure_counts", "upsert_exposures"]
