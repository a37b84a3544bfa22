"""Shadow outputs in SQL: stored only when the plan owner opts in, after redaction and a length cap."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite

from rollout.store.db import store_faults
from rollout.store.models import ShadowOutput


def insert_shadow_outputs(engine: Engine, rows: Iterable[tuple[int, int, str, str, float]]) -> int:
    """Store (pair_id, flag_id, variant, text, Unix time) rows in shadow_outputs, in one transaction.

    Returns how many were new: a row whose (pair_id, variant) is stored already (a batch retried after its
    commit reply was lost) is skipped, so every output is stored once.
    """
    values = [{"pair_id": p, "flag_id": f, "variant": v, "output": text,
               "created_at": datetime.fromtimestamp(at, UTC)} for p, f, v, text, at in rows]
    if not values:
        return 0
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    with store_faults(), engine.begin() as conn:
        stored = conn.execute(dialect.insert(ShadowOutput).values(values).on_conflict_do_nothing()
                              .returning(ShadowOutput.id)).all()
    return len(stored)
