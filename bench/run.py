"""`make bench`: every benchmark in one run, one table each, written to bench/RESULTS.md.

    python -m bench.run            # everything
    python -m bench.run --quick    # smaller runs, for a smoke check
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import (  # noqa: E402
    assign, call, faults, http_edge, http_service, install_size, online_evals, otlp, propagation, record,
    rollback_load, shadow,
)
from bench.common import BENCH, machine  # noqa: E402


def _external(script: str, quick: bool, results: str) -> str:
    """Benchmarks that write their own markdown (the judge's detection study, evidence aggregation)."""
    path = BENCH / script
    if not path.exists():
        return f"_{script} is not in this tree yet._"
    args = [sys.executable, str(path)] + (["--quick"] if quick else [])
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return f"**{script} failed** (exit {done.returncode}):\n\n```\n{done.stderr[-2000:]}\n```"
    out = BENCH / results
    return out.read_text() if out.exists() else done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke check")
    args = parser.parse_args()
    if args.quick:
        assign.BATCHES, record.OUTCOMES, propagation.RUNS = 20, 20_000, 5
        rollback_load.WRITERS, rollback_load.CHANGES = 2, 10
        shadow.BATCHES = max(1, shadow.BATCHES // 10)
        call.BATCHES, call.CALLS = 5, 1_000
        http_service.EVAL_SECONDS, http_service.OUTCOME_BATCHES, http_service.POLL_ROUNDS = 3, 20, 3
        online_evals.SAMPLES = 300
        otlp.SPAN_BATCHES, otlp.OFREP_SECONDS = 20, 3.0
        http_edge.SECONDS, http_edge.SLOW_CONNECTIONS, http_edge.DISCONNECTS = 3, 20, 50
        faults.quick()

    sections: list[tuple[str, str]] = []
    started = time.time()
    for title, bench in [
        ("assign(): local evaluation against GrowthBook", assign),
        ("Outcomes: record() + flush() into the database", record),
        ("Propagation: a rollback reaching a running client", propagation),
        ("Rollback under write load: a manual rollback while apps write outcomes flat out", rollback_load),
        ("Shadow: overhead of shadow() on the caller", shadow),
        ("Guarded calls: overhead of call() on the caller", call),
        ("HTTP service: evaluation, outcome ingestion, long-poll propagation", http_service),
        ("Online judges: grading throughput and budget", online_evals),
        ("Standards in: OTLP span ingestion, OFREP bulk evaluation with ETags", otlp),
        ("Install size: the core for apps, GrowthBook's SDK, everything", install_size),
        ("HTTP edge: /healthz and evaluations while hostile clients attack", http_edge),
        ("Faults: lost commit replies, resets, partitions and outages on PostgreSQL", faults),
    ]:
        print(f"== {title}", flush=True)
        md, _ = bench.run()
        print(md, "\n", flush=True)
        sections.append((title, md))
    for title, script, results in [
        ("Evidence: outcomes aggregated by SQL for the judge", "evidence.py", "RESULTS_evidence.md"),
        ("The judge: detection against Kayenta, t-test, Argo thresholds and the SPRT oracle",
         "detection.py", "RESULTS_detection.md"),
    ]:
        print(f"== {title}", flush=True)
        md = _external(script, args.quick, results)
        print(md, "\n", flush=True)
        sections.append((title, md))

    header = (
        "# Benchmark results\n\n"
        f"Written by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        f"{' (quick mode: smaller runs)' if args.quick else ''}, in {time.time() - started:.0f} s.\n\n"
        f"Machine: {machine()}.\n\n"
        "Every figure below was measured in that run; a target that was missed says MISSED.\n"
    )
    body = "\n\n".join(f"## {title}\n\n{md.strip()}" for title, md in sections)
    (BENCH / "RESULTS.md").write_text(header + "\n" + body + "\n")
    print(f"wrote {BENCH / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
