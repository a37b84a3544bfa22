"""Feedback comments: the text a user wrote about what they were served (stored only where opted in)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rollout.store.db import transaction
from rollout.store.models import FeedbackComment


@dataclass(frozen=True, slots=True)
class CommentRecord:
    rollout_id: int
    stage: int
    variant: str
    stratum: str
    unit_hash: int
    comment: str
    created_at: datetime


def insert_comment(engine: Engine, *, flag_id: int, rollout_id: int | None, stage: int, variant: str, stratum: str,
                   unit_hash: int, comment: str, at: float, source: int | None = None,
                   seq: int | None = None) -> bool:
    """Store one comment in its own transaction; False when (source, seq) was stored before (a resend)."""
    row = {"flag_id": flag_id, "rollout_id": rollout_id or 0, "stage": stage, "variant": variant,
           "stratum": stratum, "unit_hash": unit_hash, "comment": comment,
           "created_at": datetime.fromtimestamp(at, UTC), "source": source, "seq": seq}
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    with transaction(engine) as session:
        stored = session.scalars(dialect.insert(FeedbackComment).values(row).on_conflict_do_nothing()
                                 .returning(FeedbackComment.id)).all()
    return bool(stored)


def comments(session: Session, *, flag_id: int, rollout_id: int | None = None) -> list[CommentRecord]:
    """A flag's comments (one rollout's, or all), oldest first."""
    q = select(FeedbackComment).where(FeedbackComment.flag_id == flag_id)
    if rollout_id is not None:
        q = q.where(FeedbackComment.rollout_id == rollout_id)
    return [CommentRecord(c.rollout_id, c.stage, c.variant, c.stratum, c.unit_hash, c.comment, c.created_at)
            for c in session.scalars(q.order_by(FeedbackComment.id))]


__all__ = ["CommentRecord", "comments", "insert_comment"]
