"""Shared by the fault tests and bench/faults.py: fast-failing connection settings, counting what was stored.

Both drive real clients, services and controllers through tests/harness/tcp_proxy.py
and then count straight from the database; they must count the same way, so
the counting lives here once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, func, select, text

from rollout.store.db import ConnectionSettings
from rollout.store.models import Base, Outcome

# Short timeouts so a partition shows within seconds (the defaults are for production).
FAST = ConnectionSettings(connect_timeout=2, statement_timeout=5, keepalives_idle=1, keepalives_interval=1,
                          keepalives_count=2, tcp_user_timeout=3, io_timeout=3)

# A plan whose canary puts 25 % of users on the candidate for at least 6 s, checked every second:
# long enough to cut the database mid-ramp, short enough for a test.
RAMP_PLAN: dict[str, Any] = {
    "flag": "summarizer", "baseline": "current", "candidate": "new-model",
    "stages": [
        {"name": "canary", "kind": "ramp", "percent": 25, "min_samples": 10, "min_duration": "6s"},
        {"name": "full", "kind": "full"},
    ],
    "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.05}],
    "check_interval": "1s",
}


def empty_postgres(url: str) -> None:
    """Every table of a migrated PostgreSQL database emptied (the schema stays)."""
    engine = create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        # TRUNCATE fires no row triggers, so the append-only audit log can be reset between tests.
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


def outcome_counts(engine: Engine) -> tuple[int, int, int]:
    """(rows, distinct outcome keys, rows beyond one per (source, seq, metric)): the last must be 0."""
    with engine.connect() as conn:
        rows = conn.scalar(select(func.count()).select_from(Outcome))
        keys = conn.scalar(text("SELECT count(*) FROM (SELECT DISTINCT source, seq FROM outcomes) k"))
        extra = conn.scalar(text("SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM outcomes "
                                 "GROUP BY source, seq, metric) d"))
    return int(rows or 0), int(keys or 0), int(extra or 0)


def record_until_closed(client: Any, accepted: list[int], refused: list[int]) -> Any:
    """An app thread's body for `k`: record outcomes flat out, counting them, until `record()` says closed."""
    from rollout.errors import ClientClosedError

    def app(k: int) -> None:
        i = 0
        while True:
            try:
                client.record("summarizer", f"user-{k}-{i}", {"latency_ms": 1.0, "error": 0})
            except ClientClosedError:
                refused[k] += 1
                return
            accepted[k] += 1
            i += 1

    return app


__all__ = ["FAST", "RAMP_PLAN", "empty_postgres", "outcome_counts", "record_until_closed"]
