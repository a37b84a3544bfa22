"""Evidence benchmark: aggregate 1,000,000 outcomes from 100,000 units into the judge's statistics on PostgreSQL (target < 1 s).

Creates a scratch database `rollout_bench_<pid>` on the server given by
ROLLOUT_BENCH_POSTGRES_URL (else ROLLOUT_TEST_POSTGRES_URL, else
postgresql+psycopg://postgres@127.0.0.1:5432/test), migrates it, loads the
outcomes with COPY, times `load_evidence`, and drops the database again.

Units come back (2.5 requests each on average, over the stages), so the
per-unit GROUP BY the cluster-robust judge needs is what is timed.

    python bench/evidence.py [--rows 1000000] [--units 100000] [--repeat 5]
    python bench/evidence.py --quick     # smoke run: 100,000 outcomes from 10,000 units, 3 runs each
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rollout.core.stats import MetricSpec, judge  # noqa: E402
from rollout.store import migrate  # noqa: E402
from rollout.store.db import database_url, transaction  # noqa: E402
from rollout.store.evidence import load_evidence  # noqa: E402
from rollout.store.flags import create_flag  # noqa: E402

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
METRICS = ("error", "latency_ms", "cost_usd", "quality")


def _copy_outcomes(engine, flag_id: int, rows: int, seed: int, units: int) -> None:
    """1 rollout, 4 stages (1, 5, 25, 50 %), 3 strata, 2 variants, 4 metrics per request, repeat units."""
    rng = np.random.default_rng(seed)
    requests = rows // len(METRICS)
    stage = np.minimum(np.arange(requests) * 4 // requests, 3)
    share = np.array([0.01, 0.05, 0.25, 0.5])[stage]
    # Each request comes from one of `units` users; a user keeps its bucket (and stratum), so it
    # stays in its arm within a stage and moves to the candidate only when the ramp reaches its bucket.
    user = rng.integers(0, units, requests)
    bucket = rng.random(units)[user]
    variant = np.where(bucket < share, "new-model", "current")
    stratum = np.array(["free", "pro", "default"])[rng.integers(0, 3, units)][user]
    unit = user * 7919 + 1
    values = {
        "error": (rng.random(requests) < 0.02).astype(float),
        "latency_ms": rng.lognormal(5.5, 1.0, requests),
        "cost_usd": 0.002 * rng.random(requests) ** (-1 / 2.5),
        "quality": rng.beta(8, 2, requests),
    }
    raw = engine.raw_connection()
    try:
        cur = raw.driver_connection.cursor()
        cols = "flag_id, rollout_id, stage, variant, stratum, unit_hash, metric, value, recorded_at"
        with cur.copy(f"COPY outcomes ({cols}) FROM STDIN") as copy:
            for metric, vals in values.items():
                lines = [
                    f"{flag_id}\t1\t{g}\t{v}\t{s}\t{u}\t{metric}\t{x!r}\t2026-11-28 12:00:00+00\n"
                    for g, v, s, u, x in zip(stage, variant, stratum, unit, vals.tolist(), strict=True)
                ]
                copy.write("".join(lines))
        raw.commit()
        cur.execute("ANALYZE outcomes")
        raw.commit()
    finally:
        raw.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--units", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS_evidence.md")
    # Written in both modes, as bench/detection.py does: bench/run.py reads this file.
    ap.add_argument("--quick", action="store_true", help="smoke run: a tenth of the size, 3 runs each")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.units, args.repeat = args.rows // 10, args.units // 10, min(args.repeat, 3)

    server = make_url(
        database_url(
            os.environ.get("ROLLOUT_BENCH_POSTGRES_URL") or os.environ.get("ROLLOUT_TEST_POSTGRES_URL") or DEFAULT_SERVER
        )
    )
    name = f"rollout_bench_{os.getpid()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        migrate.upgrade(url)
        with transaction(engine) as s:
            create_flag(s, "bench", variants=["current", "new-model"], actor="bench")
        with engine.connect() as conn:
            flag_id = conn.execute(text("SELECT id FROM flags WHERE key = 'bench'")).scalar_one()
        t0 = time.perf_counter()
        _copy_outcomes(engine, flag_id, args.rows, seed=1, units=args.units)
        load_s = time.perf_counter() - t0

        p95 = MetricSpec("latency_p95", margin=0.1, relative=True, quantile=0.95, source="latency_ms")
        cases = {
            "as the controller calls it: per-unit sums over 4 stages, latency histogram and per-unit"
            " exceedances (for its p95), units": {"histograms": ["latency_ms"], "quantiles": [p95],
                                                  "stages": [0, 1, 2, 3]},
            "per-unit sums and units only (no quantile metric in the plan)": {"histograms": (),
                                                                              "stages": [0, 1, 2, 3]},
            "stages not given (one more query finds them)": {"histograms": ()},
        }
        timings = {}
        allocation = {(s, g): bp for s in ("free", "pro", "default") for g, bp in enumerate((100, 500, 2_500, 5_000))}
        for label, kwargs in cases.items():
            runs = []
            for _ in range(args.repeat):
                with Session(engine) as s:
                    t = time.perf_counter()
                    ev = load_evidence(s, flag_id=flag_id, rollout_id=1, allocation_bp=allocation, **kwargs)
                    runs.append(time.perf_counter() - t)
            timings[label] = runs
        specs = [
            MetricSpec("error", kind="binary", margin=0.005),
            MetricSpec("latency_ms", margin=0.1, relative=True, scale="log"),
            p95,
            MetricSpec("cost_usd", margin=0.1, relative=True),
            MetricSpec("quality", better="higher", margin=0.02),
        ]
        with Session(engine) as s:
            ev = load_evidence(s, flag_id=flag_id, rollout_id=1, allocation_bp=allocation,
                               **cases[next(iter(cases))])  # fmt: skip
        verdict = judge(ev, specs)
        t = time.perf_counter()
        for _ in range(50):
            verdict = judge(ev, specs)
        judge_ms = (time.perf_counter() - t) * 1000 / 50
        n_groups = len(ev.arms)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    lines = [
        "## Evidence aggregation (`bench/evidence.py`)",
        "",
        f"{args.rows:,} outcomes (rows of `outcomes`) from {args.units:,} units on PostgreSQL,"
        " aggregated by `load_evidence` (grouped by unit first)"
        f" into {n_groups} (metric, variant, stratum, stage) groups; COPY load took {load_s:.1f} s."
        f" Target: < 1 s (at 1,000,000 outcomes). {args.repeat} runs each, warm cache.",
        "",
        "| query set | median s | min s | max s | target met |",
        "|---|---:|---:|---:|---|",
    ]
    for label, runs in timings.items():
        med = statistics.median(runs)
        met = "n/a (--quick size)" if args.quick else "yes" if med < 1 else "**no**"
        lines.append(f"| {label} | {med:.3f} | {min(runs):.3f} | {max(runs):.3f} | {met} |")
    lines += ["", f"judge() on that evidence (5 metric specs, 3 strata, 4 stages): {judge_ms:.2f} ms,"
              f" decision `{verdict.decision}`: {verdict.reason}", ""]  # fmt: skip
    md = "\n".join(lines)
    args.out.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
