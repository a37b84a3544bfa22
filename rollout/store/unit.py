"""The controller's ports (rollout.ports) over SQLAlchemy: thin wrappers that bind a session and a namespace.

The SQL itself stays in rollout.store.flags and rollout.store.rollouts; this
module only adapts their session-first functions to the ports, and turns a
database that cannot be reached into StoreUnavailableError (the error tree's
word for it), so the controller's retry policy sees one kind of fault.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from rollout.core.controller import ApprovalInput, RolloutState
from rollout.core.flag import FlagState
from rollout.core.plan import RolloutPlan
from rollout.core.records import ApprovalRecord, DecisionRecord, RolloutRecord
from rollout.errors import StoreUnavailableError
from rollout.store import flags as flag_store
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction
from rollout.store.models import Rollout
from rollout.store.retry import is_transient


class SqlFlags:
    def __init__(self, session: Session, namespace: str) -> None:
        self._s, self._ns = session, namespace

    def get(self, key: str) -> FlagState:
        return flag_store.get_flag(self._s, key, namespace=self._ns)

    def set_shadow(self, key: str, basis_points: int, *, actor: str, reason: str,
                   expected_version: int | None = None) -> FlagState:
        return flag_store.set_shadow(self._s, key, basis_points, actor=actor, reason=reason, namespace=self._ns,
                                     expected_version=expected_version)

    def set_allocations(self, key: str, allocations: Mapping[str, int], *, actor: str, reason: str,
                        expected_version: int | None = None) -> FlagState:
        return flag_store.set_allocations(self._s, key, dict(allocations), actor=actor, reason=reason,
                                          namespace=self._ns, expected_version=expected_version)

    def promote(self, key: str, *, actor: str, reason: str, expected_version: int | None = None) -> FlagState:
        return flag_store.promote(self._s, key, actor=actor, reason=reason, namespace=self._ns,
                                  expected_version=expected_version)

    def rollback(self, key: str, *, actor: str, reason: str, expected_version: int | None = None) -> FlagState:
        return flag_store.rollback(self._s, key, actor=actor, reason=reason, namespace=self._ns,
                                   expected_version=expected_version)

    def last_rollback(self, key: str) -> str | None:
        entries = [e for e in flag_store.audit_log(self._s, key, namespace=self._ns, limit=20)
                   if e.action == "flag.rollback"]
        return f"{entries[0].actor}: {entries[0].reason}" if entries else None


class SqlRollouts:
    def __init__(self, session: Session, namespace: str) -> None:
        self._s, self._ns = session, namespace

    def start(self, plan: RolloutPlan, document: dict[str, Any], *, actor: str, owner: str, lease_for: timedelta,
              flow_run_id: str | None = None) -> RolloutRecord:
        return rollout_store.start_rollout(self._s, plan, document, actor=actor, owner=owner, lease_for=lease_for,
                                           flow_run_id=flow_run_id, namespace=self._ns)

    def get(self, rollout_id: int) -> RolloutRecord:
        return rollout_store.get_rollout(self._s, rollout_id)

    def active(self, flag_key: str) -> RolloutRecord | None:
        return rollout_store.active_rollout(self._s, flag_key, namespace=self._ns)

    def of_flow_run(self, flow_run_id: str) -> RolloutRecord | None:
        rollout_id = self._s.scalar(select(Rollout.id).where(Rollout.flow_run_id == flow_run_id,
                                                             Rollout.namespace == self._ns)
                                    .order_by(Rollout.id.desc()).limit(1))
        return rollout_store.get_rollout(self._s, rollout_id) if rollout_id is not None else None

    def renew_lease(self, rollout_id: int, *, owner: str, lease_for: timedelta, now: datetime) -> bool:
        return rollout_store.renew_lease(self._s, rollout_id, owner=owner, lease_for=lease_for, now=now)

    def save_state(self, rollout_id: int, state: RolloutState, *, owner: str, now: datetime) -> bool:
        return rollout_store.save_state(self._s, rollout_id, state, owner=owner, now=now)

    def abort(self, rollout_id: int, *, owner: str, reason: str) -> bool:
        return rollout_store.abort(self._s, rollout_id, owner=owner, reason=reason)

    def mark_lost_told(self, rollout: RolloutRecord) -> bool:
        return rollout_store.mark_lost_told(self._s, rollout)

    def approvals(self, rollout_id: int) -> Sequence[ApprovalInput]:
        return rollout_store.approval_inputs(self._s, rollout_id)

    def record_approval(self, rollout: RolloutRecord, *, stage_index: int, approved: bool, approver: str,
                        comment: str = "") -> ApprovalRecord:
        return rollout_store.record_approval(self._s, rollout, stage_index=stage_index, approved=approved,
                                             approver=approver, comment=comment)

    def record_decision(self, rollout_id: int, *, stage_index: int, verdict: str, action: str, reason: str,
                        details: Any) -> int:
        sequence = rollout_store.next_sequence(self._s, rollout_id)
        rollout_store.record_decision(self._s, rollout_id, sequence=sequence, stage_index=stage_index,
                                      verdict=verdict, action=action, reason=reason, details=details)
        return sequence

    def decisions(self, rollout_id: int, *, limit: int | None = None) -> Sequence[DecisionRecord]:
        return rollout_store.decisions(self._s, rollout_id, limit=limit)


class SqlUnit:
    def __init__(self, session: Session, namespace: str) -> None:
        self.session = session   # for SQL the ports do not cover (the evidence source reads outcomes with it)
        self.flags = SqlFlags(session, namespace)
        self.rollouts = SqlRollouts(session, namespace)


class SqlStore:
    """rollout.ports.Store over an engine, for one namespace."""

    def __init__(self, engine: Engine, namespace: str = "default") -> None:
        self.engine, self.namespace = engine, namespace

    @contextmanager
    def transaction(self) -> Iterator[SqlUnit]:
        try:
            with transaction(self.engine) as session:
                yield SqlUnit(session, self.namespace)
        except StoreUnavailableError:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise StoreUnavailableError(f"the database could not be reached: {_first_line(exc)}") from exc
            raise


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


__all__ = ["SqlFlags", "SqlRollouts", "SqlStore", "SqlUnit"]
