"""Writing outcomes fast and exactly once: COPY through a staging table on PostgreSQL, one executemany on SQLite.

The SDK hands over whole batches from its background flusher; each batch is
one transaction on PostgreSQL (short chunks on SQLite, see SQLITE_CHUNK), and
any batch can be retried whole, whatever part of it was stored.
An outcome is one entry here and one row per metric in the table.

Every outcome carries an idempotency key, (source, seq): an SDK client's random
id and its own running number, or an HTTP batch key's hash and the item's index.
With the metric it is unique in the table, and rows whose key is there already
are skipped, so replaying a batch whose commit reply was lost stores nothing
twice. On PostgreSQL a batch is first COPYed straight in (the fast path; the
unique key makes a replay fail there as a whole). COPY cannot skip conflicts,
so a batch that meets one is COPYed into a temporary staging table instead and
moved with INSERT ... SELECT ... ON CONFLICT DO NOTHING. Measured in
bench/record.py: the staging path alone ran at under half of plain COPY's rate,
which is why it is only the replay path.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from psycopg.errors import UniqueViolation
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session

from rollout.store.db import defer_to_flag_changes, io_deadline, store_faults
from rollout.store.models import Flag, Outcome

OUTCOME_COLUMNS = ("flag_id", "rollout_id", "stage", "variant", "stratum", "unit_hash", "metric", "value",
                   "recorded_at", "pair_id", "source", "seq")

OutcomeEntry = tuple[tuple, tuple[tuple[str, float], ...], float]
"""((flag_id, rollout_id, stage, variant, stratum, unit_hash[, pair_id]), ((metric, value), ...), Unix time).

A pair id joins the baseline's and the candidate's outcome of one shadowed
request, so the judge can compare them pair by pair.
"""

KeyedEntry = tuple[int, OutcomeEntry]
"""(seq, outcome): an outcome with its number within its source, the second half of its idempotency key."""

_COLUMNS_SQL = ", ".join(OUTCOME_COLUMNS)
_SQLITE_INSERT = (f"INSERT INTO outcomes ({_COLUMNS_SQL}) VALUES ({', '.join('?' * len(OUTCOME_COLUMNS))}) "
                  "ON CONFLICT (source, seq, metric) DO NOTHING")
# ON COMMIT DELETE ROWS: created once per pooled connection, emptied by every commit.
_PG_STAGING = ("CREATE TEMPORARY TABLE IF NOT EXISTS outcomes_staging ("
               "flag_id integer, rollout_id integer, stage integer, variant varchar(100), stratum varchar(64), "
               "unit_hash bigint, metric varchar(64), value double precision, recorded_at timestamptz, "
               "pair_id bigint, source bigint, seq bigint) ON COMMIT DELETE ROWS")
_PG_COPY_DIRECT = f"COPY outcomes ({_COLUMNS_SQL}) FROM STDIN"
_PG_COPY = f"COPY outcomes_staging ({_COLUMNS_SQL}) FROM STDIN"
_PG_MOVE = (f"INSERT INTO outcomes ({_COLUMNS_SQL}) SELECT {_COLUMNS_SQL} FROM outcomes_staging "
            "ON CONFLICT (source, seq, metric) DO NOTHING RETURNING seq")
_NULL = "\\N"  # COPY text format's NULL


def new_source() -> int:
    """A random positive 63-bit source id (one per SDK client instance): the first half of its outcomes' keys."""
    return secrets.randbits(63) or 1


def insert_outcomes(engine: Engine, source: int, keyed: Sequence[KeyedEntry]) -> int:
    """Store these outcomes, skipping any already stored; returns how many were new.

    One transaction on PostgreSQL; on SQLite one per SQLITE_CHUNK outcomes. A
    replay of a stored batch returns 0 and changes nothing, and a retry after a
    fault stores exactly what is missing. A database fault raises `StoreUnavailableError`.
    """
    if not keyed:
        return 0
    with store_faults():
        return _insert(engine, source, keyed)


def _insert(engine: Engine, source: int, keyed: Sequence[KeyedEntry]) -> int:
    if engine.dialect.name == "postgresql":
        # The deadline covers the commit: a partition mid-batch fails in bounded time, and the
        # retry (same keys) is safe whether or not that commit happened.
        text = _copy_text(source, keyed)
        with engine.connect() as conn, io_deadline(conn):
            try:
                with conn.begin():
                    _copy(conn, _PG_COPY_DIRECT, text)
                return len(keyed)
            except UniqueViolation:
                pass  # some of it is stored already (a replay): take the slower path that skips those
            with conn.begin():
                return _insert_postgres(conn, text)
    return sum(_insert_sqlite(engine, source, keyed[i:i + SQLITE_CHUNK]) for i in range(0, len(keyed), SQLITE_CHUNK))


SQLITE_CHUNK = 500
"""Outcomes per SQLite write transaction.

SQLite has one writer at a time, and a waiting writer (a manual rollback, say)
only polls for the lock. With several app processes flushing 5,000-outcome
batches, the lock was almost never free when a rollback polled, and rollbacks
failed after the 30 s busy timeout (bench/rollback_load.py). Short
transactions, each followed by a pause as long as a third of it, leave the lock
free more often, and a waiting flag change goes first (see
rollout.store.db.flag_change_priority). Splitting a batch is safe because every outcome has its
idempotency key: a retry skips the chunks that were stored.
"""
SQLITE_YIELD = 0.33


def _insert_sqlite(engine: Engine, source: int, keyed: Sequence[KeyedEntry]) -> int:
    defer_to_flag_changes(engine)
    started = time.perf_counter()
    stored = _insert_sqlite_chunk(engine, source, keyed)
    time.sleep((time.perf_counter() - started) * SQLITE_YIELD)
    return stored


def _insert_sqlite_chunk(engine: Engine, source: int, keyed: Sequence[KeyedEntry]) -> int:
    rows = _sqlite_rows(source, keyed)
    with engine.connect() as conn:
        with conn.begin() as batch:
            inserted = conn.exec_driver_sql(_SQLITE_INSERT, rows).rowcount
            if inserted in (0, len(rows)):
                return 0 if inserted == 0 else len(keyed)
            # Part of the batch was there already (a key reused for more items, or a race with
            # a concurrent replay): the answer must be exact, so undo and redo it outcome by outcome.
            batch.rollback()
        with conn.begin():
            return sum(1 for item in keyed
                       if conn.exec_driver_sql(_SQLITE_INSERT, _sqlite_rows(source, (item,))).rowcount)


def _copy(conn: Connection, statement: str, text: str) -> None:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor, cursor.copy(statement) as copy:
        copy.write(text)


def _insert_postgres(conn: Connection, text: str) -> int:
    conn.exec_driver_sql(_PG_STAGING)
    _copy(conn, _PG_COPY, text)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor:
        cursor.execute(_PG_MOVE)
        return len({seq for (seq,) in cursor.fetchall()})


def _copy_text(source: int, keyed: Sequence[KeyedEntry]) -> str:
    """COPY's text format, built in one pass.

    Variant keys and stratum names are validated identifiers (no tabs,
    newlines or backslashes) and metric names are identifiers too, so no
    field needs escaping.
    """
    lines: list[str] = []
    append = lines.append
    second, second_text = -1, ""
    for seq, (prefix, metrics, at) in keyed:
        flag_id, rollout_id, stage, variant, stratum, unit_hash = prefix[:6]
        rollout = _NULL if rollout_id is None else rollout_id
        pair = prefix[6] if len(prefix) > 6 else _NULL
        head = f"{flag_id}\t{rollout}\t{stage}\t{variant}\t{stratum}\t{unit_hash}\t"
        # A batch spans a few seconds at most: format each second once, add the microseconds.
        whole = int(at)
        if whole != second:
            second, second_text = whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%d %H:%M:%S")
        tail = f"\t{second_text}.{int((at - whole) * 1e6):06d}+00\t{pair}\t{source}\t{seq}\n"
        for name, value in metrics:
            append(f"{head}{name}\t{value!r}{tail}")
    return "".join(lines)


def _sqlite_rows(source: int, keyed: Sequence[KeyedEntry]) -> list[tuple]:
    # SQLAlchemy's SQLite DateTime is text in exactly this shape; writing it
    # ourselves keeps the ORM reading these rows back unchanged.
    rows = []
    for seq, (prefix, metrics, at) in keyed:
        stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        head, pair = prefix[:6], prefix[6] if len(prefix) > 6 else None
        rows.extend((*head, name, value, stamp, pair, source, seq) for name, value in metrics)
    return rows


def flag_ids(session: Session, *, namespace: str = "default") -> dict[str, int]:
    return {key: flag_id for key, flag_id in session.execute(select(Flag.key, Flag.id).where(Flag.namespace == namespace))}


def rollout_metrics(session: Session, *, flag_id: int, rollout_id: int) -> list[str]:
    """The names of every metric this rollout's outcomes report."""
    q = select(Outcome.metric).where(Outcome.flag_id == flag_id, Outcome.rollout_id == rollout_id).distinct()
    return sorted(session.scalars(q))


def totals_by_cell(session: Session, *, flag_id: int, rollout_id: int,
                   metrics: Iterable[str]) -> list[tuple[str, str, str, int, float]]:
    """(metric, variant, stratum, stage, sum of values) of these metrics over one rollout: cost attribution."""
    names = sorted(set(metrics))
    if not names:
        return []
    keys = (Outcome.metric, Outcome.variant, Outcome.stratum, Outcome.stage)
    q = (select(*keys, func.sum(Outcome.value))
         .where(Outcome.flag_id == flag_id, Outcome.rollout_id == rollout_id, Outcome.metric.in_(names))
         .group_by(*keys))
    return [(m, v, s, int(g), float(total or 0.0)) for m, v, s, g, total in session.execute(q)]


def unpaired_outcomes(session: Session, *, flag_id: int, rollout_id: int, stage: int, variant: str,
                      metrics: Iterable[str]) -> int:
    """Outcomes of one arm of one stage recorded without a pair_id, of the judged metric reported most often
    (one request reports several metrics; this counts requests, not rows)."""
    names = sorted(set(metrics))
    if not names:
        return 0
    q = (select(func.count()).where(Outcome.flag_id == flag_id, Outcome.rollout_id == rollout_id,
                                    Outcome.stage == stage, Outcome.variant == variant,
                                    Outcome.metric.in_(names), Outcome.pair_id.is_(None))
         .group_by(Outcome.metric))
    return max((int(n) for n in session.scalars(q)), default=0)


def spend(session: Session, *, flag_id: int, rollout_id: int, stage: int, variant: str, metric: str,
          since: datetime | None = None) -> float:
    """Sum of one metric (a cost) over one arm of one stage, optionally since a time: a shadow budget's meter."""
    q = select(func.coalesce(func.sum(Outcome.value), 0.0)).where(
        Outcome.flag_id == flag_id, Outcome.rollout_id == rollout_id, Outcome.stage == stage,
        Outcome.variant == variant, Outcome.metric == metric)
    if since is not None:
        q = q.where(Outcome.recorded_at >= since)
    return float(session.scalar(q) or 0.0)
