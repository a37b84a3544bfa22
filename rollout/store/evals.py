"""Eval gate results in SQL: one row per case and variant, so a restarted eval skips what already ran."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rollout.store.models import EvalResult


def done_cases(session: Session, rollout_id: int, stage_index: int) -> set[tuple[str, str]]:
    """(case id, variant) of every result already stored for this eval stage."""
    return {(c, v) for c, v in session.execute(select(EvalResult.case_id, EvalResult.variant).where(
        EvalResult.rollout_id == rollout_id, EvalResult.stage_index == stage_index))}


def add_results(session: Session, rollout_id: int, stage_index: int, rows: Iterable[dict[str, Any]]) -> None:
    session.add_all(EvalResult(rollout_id=rollout_id, stage_index=stage_index, **row) for row in rows)
    session.flush()


def eval_results(session: Session, rollout_id: int, stage_index: int) -> list[EvalResult]:
    return list(session.scalars(select(EvalResult).where(
        EvalResult.rollout_id == rollout_id, EvalResult.stage_index == stage_index).order_by(EvalResult.id)))
