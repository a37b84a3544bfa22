"""Outcomes through record() + flush(): how many per second reach the database.

Each outcome carries three metrics (latency, cost, error), as a typical AI
feature reports them, so each is three rows in the long `outcomes` table.
The clock runs from the first record() to flush() returning, so it covers
validation, buffering and the writes.
"""

from __future__ import annotations

import random
import statistics
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

OUTCOMES = 200_000
RUNS = 3
"""Runs per database, each on a fresh database; the table reports their median (one run is at the mercy of
whatever else the shared machine does in those seconds)."""


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
            runs = []
            for _ in range(RUNS):
                with scratch_database(kind, Path(tmp)) as url:
                    runs.append(measure(url, OUTCOMES))
            rates = sorted(r[0] for r in runs)
            rate = statistics.median(rates)
            record_us = statistics.median(r[1] for r in runs)
            stored = runs[0][2]
            figures[f"record_{kind}_per_s"] = rate
            rows.append([kind, f"{OUTCOMES:,}", f"{stored:,}", f"{rate:,.0f}",
                         " / ".join(f"{r:,.0f}" for r in rates), f"{record_us:.1f}",
                         f"≥ {target:,}/s: {'met' if rate >= target else 'MISSED'}"])
    md = table(["database", "outcomes", "rows stored", "outcomes/s (record → flush done), median",
                f"each of the {RUNS} runs", "µs per record() call", "target"], rows)
    md += (f"\n\nMedian of {RUNS} runs per database, each on a fresh database; the target is judged on the "
           "median, and every run is shown.")
    if not postgres_available():
        md += "\n\nPostgreSQL was not reachable; its row is missing."
    return md, figures


if __name__ == "__main__":
    print(run()[0])
