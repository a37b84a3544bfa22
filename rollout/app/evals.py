"""The eval gate's runner: both variants on every case of a JSONL file, concurrently and rate-limited.

A case file has one JSON object per line:

    {"id": "t-001", "category": "billing", "input": {...}, "expected": {...}}

(`rubric` may stand in for `expected`; the scorer decides what either means).
The baseline and the candidate are callables named by import path
(`package.module:function`); each takes the case's `input` and returns its
output, or `(output, cost)`. The scorer is `scorer(case, output)` and returns
a bool or a score in [0, 1] (0.5 or more passes).

Results go to the `eval_results` table, one row per case and variant, so a
restarted flow skips what already ran and the gate is computed from the
database alone.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from rollout.core.controller import EvalOutcome
from rollout.core.plan import EvalSpec, RolloutPlan
from rollout.core.ratelimit import TokenBucket
from rollout.errors import InvalidInputError
from rollout.store import evals as eval_store
from rollout.store.db import transaction
from rollout.store.models import EvalResult


@dataclass(frozen=True)
class EvalCase:
    id: str
    category: str
    input: Any
    expected: Any


def load_cases(path: str | Path) -> list[EvalCase]:
    """Every case of the file, or InvalidInputError listing every bad line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInputError(f"cannot read eval cases {path}: {exc.strerror}") from None
    cases, problems, seen = [], [], set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg})")
            continue
        if not isinstance(raw, dict) or "input" not in raw or not ("expected" in raw or "rubric" in raw):
            problems.append(f"line {number}: a case needs 'input' and 'expected' (or 'rubric')")
            continue
        case_id = str(raw.get("id", number))
        if case_id in seen:
            problems.append(f"line {number}: case id {case_id!r} appears twice")
            continue
        seen.add(case_id)
        cases.append(EvalCase(case_id, str(raw.get("category", "all"))[:100], raw["input"],
                              raw.get("expected", raw.get("rubric"))))
    if problems:
        raise InvalidInputError(f"{path}: " + "; ".join(problems[:20]))
    if not cases:
        raise InvalidInputError(f"{path}: no cases")
    return cases


def load_callable(path: str) -> Callable[..., Any]:
    module, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"cannot import {path!r}: {exc}") from None
    if not callable(target):
        raise InvalidInputError(f"{path!r} is not callable")
    return target


def run_eval(engine: Engine, rollout_id: int, stage_index: int, spec: EvalSpec, *,
             variants: tuple[str, str]) -> int:
    """Run every case not yet stored on both variants; returns how many results were written."""
    cases = load_cases(spec.cases)
    runners = {variants[0]: load_callable(spec.baseline), variants[1]: load_callable(spec.candidate)}
    scorer = load_callable(spec.scorer)
    with transaction(engine) as s:
        done = eval_store.done_cases(s, rollout_id, stage_index)
    todo = [(case, variant) for case in cases for variant in variants if (case.id, variant) not in done]
    # Capacity 1: calls are spaced 1/rate apart from the start, never a first-second burst.
    pace = TokenBucket(spec.rate_limit, capacity=1.0) if spec.rate_limit else None

    def one(item: tuple[EvalCase, str]) -> dict[str, Any]:
        case, variant = item
        if pace is not None:
            pace.wait()
        return _run_case(case, variant, runners[variant], scorer)

    written = 0
    with ThreadPoolExecutor(max_workers=spec.concurrency, thread_name_prefix="rollout-eval") as pool:
        batch: list[dict[str, Any]] = []
        for row in pool.map(one, todo):
            batch.append(row)
            if len(batch) >= 50:
                written += _store(engine, rollout_id, stage_index, batch)
                batch = []
        written += _store(engine, rollout_id, stage_index, batch)
    return written


def _run_case(case: EvalCase, variant: str, runner: Callable[..., Any], scorer: Callable[..., Any]) -> dict[str, Any]:
    started = time.perf_counter()
    cost: float | None = None
    try:
        output = runner(case.input)
        if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], (int, float)):
            output, cost = output[0], float(output[1])
        latency = (time.perf_counter() - started) * 1000
        score = scorer({"id": case.id, "category": case.category, "input": case.input, "expected": case.expected},
                       output)
        value = float(score)
        return {"case_id": case.id, "category": case.category, "variant": variant, "passed": value >= 0.5,
                "score": value, "latency_ms": latency, "cost": cost, "error": None}
    except Exception as exc:  # noqa: BLE001 - a variant that crashes on a case fails that case
        return {"case_id": case.id, "category": case.category, "variant": variant, "passed": False,
                "score": 0.0, "latency_ms": (time.perf_counter() - started) * 1000, "cost": cost,
                "error": f"{type(exc).__name__}: {exc}"[:1000]}


def _store(engine: Engine, rollout_id: int, stage_index: int, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    with transaction(engine) as s:
        eval_store.add_results(s, rollout_id, stage_index, rows)
    return len(rows)


# --- the gate ----------------------------------------------------------------------

def paired_cases(rows: Iterable[EvalResult], variants: tuple[str, str]) -> list[tuple[str, bool, bool]]:
    """(category, baseline passed, candidate passed) for every case both variants ran."""
    by_case: dict[str, dict[str, EvalResult]] = {}
    for r in rows:
        by_case.setdefault(r.case_id, {})[r.variant] = r
    baseline, candidate = variants
    return [(pair[baseline].category, pair[baseline].passed, pair[candidate].passed)
            for pair in by_case.values() if baseline in pair and candidate in pair]


def gate_outcome(session: Session, rollout_id: int, stage_index: int, spec: EvalSpec, *,
                 variants: tuple[str, str], alpha: float) -> tuple[EvalOutcome | None, Any]:
    """The gate's decision once every case has run on both variants (None before), and the test's result."""
    total = len(load_cases(spec.cases))
    pairs = paired_cases(eval_store.eval_results(session, rollout_id, stage_index), variants)
    if len(pairs) < total:
        return None, None
    from rollout.core.stats import eval_gate  # the paired test; imported here so loading this module stays light

    result = eval_gate(pairs, margin=spec.margin, alpha=alpha, min_cases=spec.min_cases)
    return EvalOutcome(result.passed, result.reason), result


def gate_rows(session: Session, rollout_id: int, stage_index: int, plan: RolloutPlan) -> list[dict[str, Any]]:
    """The eval gate's table (overall first, then each category), for the UI and `rollout status`."""
    stage = plan.stages[stage_index]
    if stage.eval is None:
        return []
    try:
        _, result = gate_outcome(session, rollout_id, stage_index, stage.eval,
                                 variants=(plan.baseline, plan.candidate), alpha=plan.alpha)
    except InvalidInputError:
        return []
    if result is None:
        return []
    return [_row(r) for r in (result.overall, *result.categories)]


def _row(r: Any) -> dict[str, Any]:
    return {"category": r.category or "all cases", "cases": r.n, "baseline pass rate": round(r.baseline_rate, 3),
            "candidate pass rate": round(r.candidate_rate, 3), "difference": round(r.difference, 3),
            "lower bound": None if r.lower != r.lower else round(r.lower, 3), "gated": r.gated,
            "verdict": str(r.verdict), "reason": r.reason}
