"""Online grading throughput: one grading round against a judge endpoint that takes 50 ms a call.

The endpoint is the local stand-in in `rollout.testing` (127.0.0.1 only); the
judge is the real `LlmJudge` over real HTTP, and the round stores grades and
outcomes in the real database. Target: >= 200 grades/s from one flow run, and
the hourly budget respected to within one round.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import postgres_available, scratch_database, table
from rollout.adapters.llm_judge import LlmJudge
from rollout.app.online_evals import grade_round
from rollout.core.online_eval import OnlineEval
from rollout.store import flags as store
from rollout.store.db import make_engine, transaction
from rollout.store.outcomes import flag_ids
from rollout.store.samples import insert_samples
from rollout.testing.chat_endpoint import FakeChatEndpoint

SAMPLES = 2_000
LATENCY = 0.050


def _prepare(url: str, n: int) -> tuple[object, int]:
    engine = make_engine(url)
    with transaction(engine) as s:
        store.create_flag(s, "summarizer", variants=["small-v1", "large-v2"], actor="bench")
    with transaction(engine) as s:
        flag_id = flag_ids(s)["summarizer"]
    now = datetime.now(UTC)
    insert_samples(engine, [{"flag_id": flag_id, "rollout_id": 1, "stage": 1, "variant": ("small-v1", "large-v2")[i % 2],
                             "stratum": "default", "unit_hash": i, "source": "online", "category": None,
                             "input": f"ticket {i}: charged twice", "output": f"summary {i}", "created_at": now}
                            for i in range(n)])
    return engine, flag_id


def throughput(url: str, n: int) -> float:
    engine, flag_id = _prepare(url, n)
    spec = OnlineEval("faithfulness", scorer="bench:judge", sample=0.05)
    with FakeChatEndpoint(grade=lambda _p: "4", latency=LATENCY) as endpoint:
        judge = LlmJudge(base_url=endpoint.base_url, model="grader", rubric="faithful?", scale=(1, 5))
        t0 = time.perf_counter()
        result = grade_round(engine, flag_id=flag_id, rollout_id=1, spec=spec, judge=judge, now=datetime.now(UTC),
                             limit=n)
        elapsed = time.perf_counter() - t0
        judge.close()
    engine.dispose()  # type: ignore[attr-defined]
    assert result.graded == n, result
    return n / elapsed


def budget_overshoot(url: str, n: int) -> tuple[float, float, int]:
    """(budget, spent when paused, rounds): grading at ~$0.001 a grade against a $0.25 hourly budget."""
    engine, flag_id = _prepare(url, n)
    spec = OnlineEval("faithfulness", scorer="bench:judge", sample=0.05, per_hour=0.25)
    with FakeChatEndpoint(grade=lambda _p: "4") as endpoint:
        judge = LlmJudge(base_url=endpoint.base_url, model="grader", rubric="faithful?", scale=(1, 5),
                         price_per_mtok=(40.0, 40.0))
        rounds, result = 0, None
        now = datetime.now(UTC)
        while rounds < 50:
            rounds += 1
            result = grade_round(engine, flag_id=flag_id, rollout_id=1, spec=spec, judge=judge, now=now)
            if result.paused:
                break
        judge.close()
    engine.dispose()  # type: ignore[attr-defined]
    assert result is not None
    return spec.per_hour or 0.0, result.spent_hour, rounds


def run(n: int | None = None) -> tuple[str, dict]:
    n = n or SAMPLES
    kinds = ["sqlite"] + (["postgres"] if postgres_available() else [])
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            with scratch_database(kind, Path(tmp)) as url:
                rate = throughput(url, n)
            with scratch_database(kind, Path(tmp)) as url:
                budget, spent, rounds = budget_overshoot(url, 600)
            figures[kind] = rate
            rows.append([kind, f"{n:,}", f"{rate:,.0f}", "met" if rate >= 200 else "**MISSED**",
                         f"${budget:.2f}", f"${spent:.4f} after {rounds} rounds",
                         "met" if spent <= budget else "**MISSED**"])
    md = (f"A judge endpoint answering in {LATENCY * 1000:.0f} ms; one grading round of {n:,} kept answers "
          "(real HTTP to 127.0.0.1, grades and outcomes stored).\n\n"
          + table(["database", "samples", "grades/s", ">= 200/s", "hourly budget", "spent when paused", "within budget"],
                  rows))
    return md, figures


if __name__ == "__main__":
    print(run()[0])
