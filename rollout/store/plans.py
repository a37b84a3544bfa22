"""Plans registered by name: every `rollout plan register` adds a version; none is rewritten or deleted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rollout.errors import PlanNotFoundError
from rollout.store.models import RegisteredPlan, utcnow


@dataclass(frozen=True, slots=True)
class PlanVersion:
    name: str
    version: int
    flag: str
    document: dict[str, Any]
    registered_by: str
    registered_at: datetime
    comment: str


def register_plan(session: Session, name: str, document: dict[str, Any], *, flag: str, actor: str,
                  comment: str = "", namespace: str = "default") -> PlanVersion:
    """Store the (already validated) document as the next version of `name`.

    Two registrations at once: one of them fails on the unique (namespace, name, version) and the caller retries.
    """
    latest = session.scalar(select(func.max(RegisteredPlan.version)).where(
        RegisteredPlan.namespace == namespace, RegisteredPlan.name == name))
    row = RegisteredPlan(namespace=namespace, name=name, version=(latest or 0) + 1, flag_key=flag, document=document,
                         registered_by=actor, registered_at=utcnow(), comment=comment)
    session.add(row)
    session.flush()
    return _to_version(row)


def get_plan(session: Session, name: str, version: int | None = None, *, namespace: str = "default") -> PlanVersion:
    query = select(RegisteredPlan).where(RegisteredPlan.namespace == namespace, RegisteredPlan.name == name)
    query = (query.where(RegisteredPlan.version == version) if version is not None
             else query.order_by(RegisteredPlan.version.desc()).limit(1))
    row = session.scalars(query).first()
    if row is None:
        known = ", ".join(p.name for p in list_plans(session, namespace=namespace)) or "none yet"
        what = f"plan {name!r}" + (f" version {version}" if version is not None else "")
        raise PlanNotFoundError(f"no registered {what} (registered plans: {known}; add one with `rollout plan register FILE`)")
    return _to_version(row)


def list_plans(session: Session, *, namespace: str = "default") -> list[PlanVersion]:
    """The latest version of every registered plan, by name."""
    newest = (select(RegisteredPlan.name, func.max(RegisteredPlan.version).label("version"))
              .where(RegisteredPlan.namespace == namespace).group_by(RegisteredPlan.name).subquery())
    rows = session.scalars(select(RegisteredPlan).join(
        newest, (RegisteredPlan.name == newest.c.name) & (RegisteredPlan.version == newest.c.version))
        .where(RegisteredPlan.namespace == namespace).order_by(RegisteredPlan.name))
    return [_to_version(r) for r in rows]


def plan_history(session: Session, name: str, *, namespace: str = "default") -> list[PlanVersion]:
    """Every version of one plan, oldest first."""
    rows = session.scalars(select(RegisteredPlan).where(RegisteredPlan.namespace == namespace,
                                                        RegisteredPlan.name == name).order_by(RegisteredPlan.version))
    return [_to_version(r) for r in rows]


def _to_version(row: RegisteredPlan) -> PlanVersion:
    return PlanVersion(name=row.name, version=row.version, flag=row.flag_key, document=dict(row.document),
                       registered_by=row.registered_by, registered_at=row.registered_at, comment=row.comment)
