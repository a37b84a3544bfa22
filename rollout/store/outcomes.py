"""Writing outcomes fast: COPY on PostgreSQL, one executemany on SQLite.

The SDK hands over whole batches from its background flusher; each batch is
one transaction, so a batch is stored whole or not at all and can be retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from rollout.store.models import Flag

OUTCOME_COLUMNS = ("flag_id", "rollout_id", "stage", "variant", "stratum", "unit_hash", "metric", "value", "recorded_at")
OutcomeRow = tuple[int, int | None, int, str, str, int, str, float, float]
"""flag_id, rollout_id, stage, variant, stratum, unit_hash, metric, value, recorded_at (Unix seconds)."""

_COLUMNS_SQL = ", ".join(OUTCOME_COLUMNS)
_SQLITE_INSERT = f"INSERT INTO outcomes ({_COLUMNS_SQL}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_PG_COPY = f"COPY outcomes ({_COLUMNS_SQL}) FROM STDIN"


def insert_outcomes(engine: Engine, rows: Sequence[OutcomeRow]) -> int:
    """Store these rows in one transaction; returns how many. Raises on any database fault."""
    if not rows:
        return 0
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor, cursor.copy(_PG_COPY) as copy:
                for r in rows:
                    copy.write_row((*r[:8], datetime.fromtimestamp(r[8], UTC)))
        else:
            # SQLAlchemy's SQLite DateTime is text in this exact shape; writing it
            # ourselves keeps the ORM reading these rows back unchanged.
            conn.exec_driver_sql(
                _SQLITE_INSERT,
                [(*r[:8], datetime.fromtimestamp(r[8], UTC).strftime("%Y-%m-%d %H:%M:%S.%f")) for r in rows],
            )
    return len(rows)


def flag_ids(session: Session, *, namespace: str = "default") -> dict[str, int]:
    return {key: flag_id for key, flag_id in session.execute(select(Flag.key, Flag.id).where(Flag.namespace == namespace))}
