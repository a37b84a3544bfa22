"""A manual rollback under write load: how long `rollout flag rollback` takes while apps write outcomes flat out.

Writer processes (real app processes, each with its own RolloutClient) record
outcomes in a tight loop for a bounded time; meanwhile this process ramps the
flag (`rollout flag set`'s path) and rolls it back (`rollout flag rollback`'s
path: `retry_transaction(engine, rollback)`, the same call the CLI makes; the
CLI's own start-up is left out) again and again, timing each change from the
call to its commit. Loopback only; SQLite and, when reachable, PostgreSQL.

    python -m bench.rollback_load            # or --quick
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import percentile, postgres_available, scratch_database, table  # noqa: E402
from rollout.store import flags as store  # noqa: E402
from rollout.store.db import make_engine, retry_transaction, transaction  # noqa: E402

WRITERS = 6          # app processes writing outcomes
CHANGES = 40         # rollbacks measured per database (each after a ramp, also measured)
GAP = 0.1            # seconds between two changes
TARGET_P99 = 1.0     # seconds: a rollback is never slow
MAX_SECONDS = 120.0  # the measuring window's bound, however slow the changes get


def _writer(url: str, ready: mp.Queue, stop: mp.Event, counts: mp.Queue) -> None:  # type: ignore[type-arg]
    from rollout import RolloutClient

    with RolloutClient(url, listen=False, refresh_interval=0.5) as client:
        ready.put(1)
        i = 0
        while not stop.is_set():
            for _ in range(500):
                client.record("summarizer", f"user-{i}", {"latency_ms": 800.0, "cost_usd": 0.001, "error": 0})
                i += 1
        result = client.close(timeout=60)
        stats = client.stats
    counts.put((stats.outcomes_accepted, stats.outcomes_written, result.unstored))


def measure(url: str, writers: int = WRITERS, changes: int = CHANGES) -> dict[str, float]:
    engine = make_engine(url)
    with transaction(engine) as s:
        store.create_flag(s, "summarizer", variants=["current", "new-model"], actor="bench")
        store.set_allocation(s, "summarizer", 2_500, actor="bench")
    ctx = mp.get_context("spawn")
    ready: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    counts: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    stop = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(url, ready, stop, counts), daemon=True) for _ in range(writers)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=180)  # every writer imported, connected and started recording
        time.sleep(2.0)             # and has reached full speed
        ramps, rollbacks = [], []
        started = time.time()
        for _ in range(changes):
            t0 = time.perf_counter()
            retry_transaction(engine, lambda s: store.set_allocation(s, "summarizer", 2_500, actor="bench",
                                                                     reason="ramp"))
            ramps.append(time.perf_counter() - t0)
            time.sleep(GAP)
            t0 = time.perf_counter()
            retry_transaction(engine, lambda s: store.rollback(s, "summarizer", actor="bench", reason="bench"))
            rollbacks.append(time.perf_counter() - t0)
            time.sleep(GAP)
            if time.time() - started > MAX_SECONDS:
                break
        window = time.time() - started + 2.0
    finally:
        stop.set()
    accepted = written = unstored = 0
    for _ in procs:
        a, w, u = counts.get(timeout=180)
        accepted, written, unstored = accepted + a, written + w, unstored + u
    for p in procs:
        p.join(timeout=30)
    engine.dispose()
    return {"rollback_p50": percentile(rollbacks, 0.5), "rollback_p99": percentile(rollbacks, 0.99),
            "rollback_max": max(rollbacks), "set_p50": percentile(ramps, 0.5), "set_p99": percentile(ramps, 0.99),
            "set_max": max(ramps), "changes": len(rollbacks), "window_s": window,
            "outcomes_per_s": accepted / window, "accepted": accepted, "written": written,
            "unstored": unstored}


def run(writers: int | None = None, changes: int | None = None) -> tuple[str, dict[str, float]]:
    writers = WRITERS if writers is None else writers  # read at call time: run.py --quick lowers them
    changes = CHANGES if changes is None else changes
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ["sqlite"] + (["postgres"] if postgres_available() else []):
            with scratch_database(kind, Path(tmp)) as url:
                m = measure(url, writers, changes)
            figures.update({f"rollback_load_{kind}_{k}": v for k, v in m.items()})
            verdict = "met" if m["rollback_p99"] <= TARGET_P99 else "MISSED"
            rows.append([kind, str(writers), f"{m['outcomes_per_s']:,.0f}", str(int(m["changes"])),
                         f"{m['rollback_p50'] * 1e3:,.0f} / {m['rollback_p99'] * 1e3:,.0f} / "
                         f"{m['rollback_max'] * 1e3:,.0f}",
                         f"{m['set_p50'] * 1e3:,.0f} / {m['set_p99'] * 1e3:,.0f} / {m['set_max'] * 1e3:,.0f}",
                         f"{int(m['accepted']):,} / {int(m['written']):,} / {int(m['unstored']):,}",
                         f"p99 ≤ {TARGET_P99:g} s: {verdict}"])
    md = table(["database", "writer processes", "outcomes/s recorded", "rollbacks",
                "rollback ms p50 / p99 / max", "flag set ms p50 / p99 / max",
                "outcomes accepted / stored / unstored", "target"], rows)
    md += ("\n\nEach writer is an app process recording outcomes (3 metrics each) in a tight loop through its "
           "own RolloutClient; the rollback is `retry_transaction(engine, rollback)`, what `rollout flag "
           "rollback` runs, timed from the call to its commit.")
    if not postgres_available():
        md += " PostgreSQL was not reachable; its row is missing."
    return md, figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    if args.only:
        with tempfile.TemporaryDirectory() as tmp, scratch_database(args.only, Path(tmp)) as url:
            print(measure(url, 2 if args.quick else WRITERS, 10 if args.quick else CHANGES))
    else:
        print(run(2 if args.quick else WRITERS, 10 if args.quick else CHANGES)[0])
