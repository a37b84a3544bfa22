"""Outcomes through record() + flush(): how many per second reach the database.

Each outcome carries three metrics (latency, cost, error), as a typical AI
feature reports them, so each is three rows in the long `outcomes` table.
The clock runs from the first record() to flush() returning, so it covers
validation, buffering and the writes.

A second table isolates the write path: the exactly-once insert
(`insert_outcomes`: staging COPY + INSERT ... ON CONFLICT DO NOTHING on
PostgreSQL, executemany with ON CONFLICT DO NOTHING on SQLite) against a plain
COPY / plain executemany of the same rows straight into `outcomes`, which is
what the write path did before outcomes had idempotency keys; plus what a
replay of a stored batch costs (it stores nothing).
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from bench.common import postgres_available, scratch_database, table
from rollout import RolloutClient
from rollout.core import Stratum
from rollout.store import flags as store
from rollout.store.db import make_engine, transaction
from rollout.store.models import Outcome
from rollout.store.outcomes import OUTCOME_COLUMNS, _copy_text, _sqlite_rows, insert_outcomes, new_source

OUTCOMES = 200_000
WRITE_BATCHES, WRITE_BATCH = 20, 5_000  # the SDK's default batch size


def _batches(n_batches: int, size: int) -> list[tuple[int, list]]:
    rng = random.Random(7)
    at = time.time()
    return [(new_source(), [(i, ((1, 1, 1, "new-model", "free", rng.getrandbits(63)),
                                 (("latency_ms", rng.lognormvariate(6, 1)), ("cost_usd", rng.random() / 100),
                                  ("error", float(rng.random() < 0.02))), at + i * 1e-4))
                             for i in range(size)])
            for _ in range(n_batches)]


def _make_plain_table(engine) -> None:  # type: ignore[no-untyped-def]
    """`outcomes_plain`: the outcomes columns and the judge's index, without the unique key (the table before 0006)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE outcomes_plain AS SELECT * FROM outcomes WHERE 1 = 0")
        conn.exec_driver_sql("CREATE INDEX ix_plain ON outcomes_plain (flag_id, rollout_id, metric)")


def _plain_write(engine, source: int, keyed: list) -> None:  # type: ignore[no-untyped-def]
    """The write path before idempotency keys: COPY / executemany straight in, no conflict check, no unique key."""
    cols = ", ".join(OUTCOME_COLUMNS)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            cursor = conn.connection.driver_connection.cursor()
            with cursor, cursor.copy(f"COPY outcomes_plain ({cols}) FROM STDIN") as copy:
                copy.write(_copy_text(source, keyed))
        else:
            conn.exec_driver_sql(
                f"INSERT INTO outcomes_plain ({cols}) VALUES ({', '.join('?' * len(OUTCOME_COLUMNS))})",
                _sqlite_rows(source, keyed))


def measure_write_path(url: str) -> dict[str, float]:
    """Outcomes/s through each write path (median of 3 runs of WRITE_BATCHES batches), and a replay's rate."""
    engine = make_engine(url)
    _make_plain_table(engine)
    rates: dict[str, list[float]] = {"plain": [], "exactly_once": [], "replay": []}
    for _ in range(3):
        for kind in ("plain", "exactly_once"):
            batches = _batches(WRITE_BATCHES, WRITE_BATCH)
            with engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM outcomes_plain" if kind == "plain" else "DELETE FROM outcomes")
            t0 = time.perf_counter()
            for source, keyed in batches:
                if kind == "plain":
                    _plain_write(engine, source, keyed)
                else:
                    assert insert_outcomes(engine, source, keyed) == len(keyed)
            rates[kind].append(WRITE_BATCHES * WRITE_BATCH / (time.perf_counter() - t0))
            if kind == "exactly_once":
                t0 = time.perf_counter()
                for source, keyed in batches:
                    assert insert_outcomes(engine, source, keyed) == 0
                rates["replay"].append(WRITE_BATCHES * WRITE_BATCH / (time.perf_counter() - t0))
    engine.dispose()
    return {k: sorted(v)[1] for k, v in rates.items()}


def measure(url: str, n: int = OUTCOMES) -> tuple[float, float, int]:
    engine = make_engine(url)
    with transaction(engine) as s:
        store.create_flag(s, "summarizer", variants=["current", "new-model"], actor="bench", strata=[
            Stratum.from_json({"name": "free", "match": {"attribute": "tier", "equals": "free"}})])
        store.set_allocation(s, "summarizer", 2_500, actor="bench")
    rng = random.Random(5)
    payload = [(f"user-{i}", {"latency_ms": rng.lognormvariate(6, 1), "cost_usd": rng.random() / 100,
                              "error": rng.random() < 0.02}) for i in range(n)]
    attrs = {"tier": "free"}
    with RolloutClient(url, listen=False, refresh_interval=3600, batch_size=10_000, buffer_size=n) as client:
        record = client.record
        t0 = time.perf_counter()
        for uid, metrics in payload:
            record("summarizer", uid, metrics, attributes=attrs)
        t_recorded = time.perf_counter() - t0
        assert client.flush(timeout=300)
        elapsed = time.perf_counter() - t0
        dropped = client.stats.outcomes_dropped
    with transaction(engine) as s:
        stored = s.scalar(select(func.count()).select_from(Outcome))
    engine.dispose()
    assert stored == 3 * n and dropped == 0, (stored, dropped)
    return n / elapsed, t_recorded / n * 1e6, stored


def run() -> tuple[str, dict[str, float]]:
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        backends = [("sqlite", 20_000)] + ([("postgres", 50_000)] if postgres_available() else [])
        for kind, target in backends:
            with scratch_database(kind, Path(tmp)) as url:
                rate, record_us, stored = measure(url)
            figures[f"record_{kind}_per_s"] = rate
            rows.append([kind, f"{OUTCOMES:,}", f"{stored:,}", f"{rate:,.0f}", f"{record_us:.1f}",
                         f"≥ {target:,}/s: {'met' if rate >= target else 'MISSED'}"])
    md = table(["database", "outcomes", "rows stored", "outcomes/s (record → flush done)",
                "µs per record() call", "target"], rows)
    write_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ["sqlite"] + (["postgres"] if postgres_available() else []):
            with scratch_database(kind, Path(tmp)) as url:
                w = measure_write_path(url)
            figures.update({f"write_{kind}_{k}_per_s": v for k, v in w.items()})
            write_rows.append([kind, f"{w['plain']:,.0f}", f"{w['exactly_once']:,.0f}",
                               f"{w['exactly_once'] / w['plain']:.2f}×", f"{w['replay']:,.0f}"])
    md += ("\n\nThe write path alone: " + f"{WRITE_BATCHES} batches of {WRITE_BATCH:,} outcomes (3 metrics each), "
           "median of 3 runs, outcomes/s. *Plain* is COPY (PostgreSQL) / executemany (SQLite) straight into "
           "a copy of `outcomes` without the unique key, as before idempotency keys; *exactly once* is `insert_outcomes` (staging COPY + INSERT "
           "... ON CONFLICT DO NOTHING / executemany ON CONFLICT DO NOTHING, with the unique key to maintain); "
           "*replay* sends every stored batch again (nothing is stored).\n\n")
    md += table(["database", "plain (no keys)", "exactly once", "exactly once / plain", "replay of stored batches"],
                write_rows)
    if not postgres_available():
        md += "\n\nPostgreSQL was not reachable; its row is missing."
    return md, figures


if __name__ == "__main__":
    print(run()[0])
