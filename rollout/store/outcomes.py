"""Writing outcomes fast: COPY on PostgreSQL, one executemany on SQLite.

The SDK hands over whole batches from its background flusher; each batch is
one transaction, so a batch is stored whole or not at all and can be retried.
An outcome is one entry here and one row per metric in the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from rollout.store.db import store_faults
from rollout.store.models import Flag, Outcome

OUTCOME_COLUMNS = ("flag_id", "rollout_id", "stage", "variant", "stratum", "unit_hash", "metric", "value",
                   "recorded_at", "pair_id")

OutcomeEntry = tuple[tuple, tuple[tuple[str, float], ...], float]
"""((flag_id, rollout_id, stage, variant, stratum, unit_hash[, pair_id]), ((metric, value), ...), Unix time).

A pair id joins the baseline's and the candidate's outcome of one shadowed
request, so the judge can compare them pair by pair.
"""

_COLUMNS_SQL = ", ".join(OUTCOME_COLUMNS)
_SQLITE_INSERT = f"INSERT INTO outcomes ({_COLUMNS_SQL}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_PG_COPY = f"COPY outcomes ({_COLUMNS_SQL}) FROM STDIN"
_NULL = "\\N"  # COPY text format's NULL


def insert_outcomes(engine: Engine, entries: Sequence[OutcomeEntry]) -> int:
    """Store these outcomes in one transaction; returns how many. A database fault raises `StoreUnavailableError`."""
    if not entries:
        return 0
    with store_faults(), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor, cursor.copy(_PG_COPY) as copy:
                copy.write(_copy_text(entries))
        else:
            conn.exec_driver_sql(_SQLITE_INSERT, _sqlite_rows(entries))
    return len(entries)


def _copy_text(entries: Sequence[OutcomeEntry]) -> str:
    """COPY's text format, built in one pass.

    Variant keys and stratum names are validated identifiers (no tabs,
    newlines or backslashes) and metric names are identifiers too, so no
    field needs escaping.
    """
    lines: list[str] = []
    append = lines.append
    second, second_text = -1, ""
    for prefix, metrics, at in entries:
        flag_id, rollout_id, stage, variant, stratum, unit_hash = prefix[:6]
        rollout = _NULL if rollout_id is None else rollout_id
        pair = prefix[6] if len(prefix) > 6 else _NULL
        head = f"{flag_id}\t{rollout}\t{stage}\t{variant}\t{stratum}\t{unit_hash}\t"
        # A batch spans a few seconds at most: format each second once, add the microseconds.
        whole = int(at)
        if whole != second:
            second, second_text = whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%d %H:%M:%S")
        tail = f"\t{second_text}.{int((at - whole) * 1e6):06d}+00\t{pair}\n"
        for name, value in metrics:
            append(f"{head}{name}\t{value!r}{tail}")
    return "".join(lines)


def _sqlite_rows(entries: Sequence[OutcomeEntry]) -> list[tuple]:
    # SQLAlchemy's SQLite DateTime is text in exactly this shape; writing it
    # ourselves keeps the ORM reading these rows back unchanged.
    rows = []
    for prefix, metrics, at in entries:
        stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        head, pair = prefix[:6], prefix[6] if len(prefix) > 6 else None
        rows.extend((*head, name, value, stamp, pair) for name, value in metrics)
    return rows


def flag_ids(session: Session, *, namespace: str = "default") -> dict[str, int]:
    return {key: flag_id for key, flag_id in session.execute(select(Flag.key, Flag.id).where(Flag.namespace == namespace))}


def spend(session: Session, *, flag_id: int, rollout_id: int, stage: int, variant: str, metric: str,
          since: datetime | None = None) -> float:
    """Sum of one metric (a cost) over one arm of one stage, optionally since a time: a shadow budget's meter."""
    q = select(func.coalesce(func.sum(Outcome.value), 0.0)).where(
        Outcome.flag_id == flag_id, Outcome.rollout_id == rollout_id, Outcome.stage == stage,
        Outcome.variant == variant, Outcome.metric == metric)
    if since is not None:
        q = q.where(Outcome.recorded_at >= since)
    return float(session.scalar(q) or 0.0)
