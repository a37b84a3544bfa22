"""From `rollout rollback` in another process to a running client's assign() answering the baseline.

The clock starts at the rollback's audit timestamp, written inside the
rollback's own transaction just before it commits, so each figure slightly
overstates the true delay. Between runs the bench puts the candidate back
and waits until the client sees it.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import percentile, postgres_available, scratch_database, table
from rollout import RolloutClient
from rollout.store import flags as store
from rollout.store.db import make_engine, transaction

RUNS = 30


def _candidate_unit(client: RolloutClient) -> str:
    return next(u for u in (f"user-{i}" for i in range(10_000)) if client.assign("summarizer", u).is_candidate)


def measure(url: str, *, listen: bool, refresh_interval: float, runs: int = RUNS) -> list[float]:
    engine = make_engine(url)
    with transaction(engine) as s:
        store.create_flag(s, "summarizer", variants=["current", "new-model"], actor="bench")
    delays: list[float] = []
    env = {**os.environ, "ROLLOUT_DATABASE_URL": url}
    with RolloutClient(url, listen=listen, refresh_interval=refresh_interval) as client:
        for _ in range(runs):
            with transaction(engine) as s:
                store.set_allocation(s, "summarizer", 10_000, actor="bench")
            deadline = time.monotonic() + 10
            while not client.assign("summarizer", "user-1").is_candidate and time.monotonic() < deadline:
                time.sleep(0.001)
            unit = _candidate_unit(client)
            # Start at a random point of the poll cycle, so the runs sample every phase of it.
            time.sleep(random.uniform(0, refresh_interval))
            proc = subprocess.Popen([sys.executable, "-m", "rollout", "rollback", "summarizer",
                                     "--reason", "bench", "--by", "bench"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            assign = client.assign
            while assign("summarizer", unit).is_candidate:
                time.sleep(0.0005)
            seen = time.time()
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            with transaction(engine) as s:
                committed = store.audit_log(s, "summarizer", limit=1)[0].created_at.timestamp()
            delays.append(seen - committed)
    engine.dispose()
    return delays


def run() -> tuple[str, dict[str, float]]:
    rows, figures = [], {}
    cases = [("sqlite", "polling every 1 s", False, 1.0, 1.0)]
    if postgres_available():
        cases += [("postgres", "polling every 1 s", False, 1.0, 1.0),
                  ("postgres", "LISTEN/NOTIFY (poll 1 s as backstop)", True, 1.0, 0.1)]
    with tempfile.TemporaryDirectory() as tmp:
        for kind, how, listen, interval, target in cases:
            with scratch_database(kind, Path(tmp)) as url:
                delays = measure(url, listen=listen, refresh_interval=interval)
            p50, p99 = percentile(delays, 0.5), percentile(delays, 0.99)
            figures[f"propagation_{kind}_{'notify' if listen else 'poll'}_p99_ms"] = p99 * 1000
            rows.append([kind, how, str(len(delays)), f"{p50 * 1000:.0f}", f"{p99 * 1000:.0f}",
                         f"{max(delays) * 1000:.0f}",
                         f"p99 < {target * 1000:.0f} ms: {'met' if p99 < target else 'MISSED'}"])
    return table(["database", "how the client learns", "runs", "p50 ms", "p99 ms", "max ms", "target"], rows), figures


if __name__ == "__main__":
    print(run()[0])
