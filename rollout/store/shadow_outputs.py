"""Shadow outputs in SQL: stored only when the plan owner opts in, after redaction and a length cap."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Engine, insert

from rollout.store.db import store_faults
from rollout.store.models import ShadowOutput


def insert_shadow_outputs(engine: Engine, rows: Iterable[tuple[int, int, str, str, float]]) -> int:
    """Store (pair_id, flag_id, variant, text, Unix time) rows in shadow_outputs, in one transaction."""
    values = [{"pair_id": p, "flag_id": f, "variant": v, "output": text,
               "created_at": datetime.fromtimestamp(at, UTC)} for p, f, v, text, at in rows]
    if not values:
        return 0
    with store_faults(), engine.begin() as conn:
        conn.execute(insert(ShadowOutput), values)
    return len(values)
