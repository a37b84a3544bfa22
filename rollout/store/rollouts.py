"""Rollouts in SQL: one active per flag (the database refuses a second), a lease, decisions and approvals.

The controller that owns a rollout renews its lease at every check. A
controller killed without any hook running (SIGKILL) simply stops renewing;
`rollout status` then shows the rollout as lost, and a restart takes it over.
Every write here that changes a rollout checks that the caller still owns it,
so a refused duplicate run can never touch the flag or the rollout.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rollout.core.controller import ApprovalInput, RolloutState, Status
from rollout.core.records import ApprovalRecord, DecisionRecord, RolloutRecord
from rollout.core.flag import Stratum
from rollout.core.plan import RolloutPlan
from rollout.errors import InvalidPlanError, RolloutActiveError, RolloutNotFoundError
from rollout.store import flags as flag_store
from rollout.store.models import (
    Allocation,
    Approval,
    AuditEntry,
    Decision,
    Flag,
    Rollout,
    StratumRow,
    Variant,
    utcnow,
)


def _record(row: Rollout, flag_key: str) -> RolloutRecord:
    state = RolloutState(
        status=Status(row.status), stage_index=row.stage_index, stage_started_at=row.stage_started_at,
        waiting_for=row.waiting_for, waiting_since=row.waiting_since, reason=row.reason,
    )
    return RolloutRecord(row.id, row.flag_id, flag_key, row.namespace, row.plan, state, row.flow_run_id,
                         row.lease_owner, row.lease_expires_at, row.started_by, row.started_at, row.ended_at)


def get_rollout(session: Session, rollout_id: int) -> RolloutRecord:
    row = session.get(Rollout, rollout_id, populate_existing=True)
    if row is None:
        raise RolloutNotFoundError(rollout_id)
    key = session.scalar(select(Flag.key).where(Flag.id == row.flag_id))
    return _record(row, key or "?")


def active_rollout(session: Session, flag_key: str, *, namespace: str = "default") -> RolloutRecord | None:
    row = session.scalar(
        select(Rollout).join(Flag, Flag.id == Rollout.flag_id)
        .where(Flag.namespace == namespace, Flag.key == flag_key, Rollout.active_flag_id.is_not(None))
    )
    return _record(row, flag_key) if row else None


def latest_rollout(session: Session, flag_key: str, *, namespace: str = "default") -> RolloutRecord | None:
    row = session.scalar(
        select(Rollout).join(Flag, Flag.id == Rollout.flag_id)
        .where(Flag.namespace == namespace, Flag.key == flag_key).order_by(Rollout.id.desc()).limit(1)
    )
    return _record(row, flag_key) if row else None


# --- starting and owning -------------------------------------------------------------

def start_rollout(
    session: Session,
    plan: RolloutPlan,
    document: dict[str, Any],
    *,
    actor: str,
    owner: str,
    lease_for: timedelta,
    flow_run_id: str | None = None,
    namespace: str = "default",
    now: datetime | None = None,
) -> RolloutRecord:
    """Start a rollout of `plan`, or take over this flag's lost rollout of the same plan.

    Raises RolloutActiveError when the flag has an active rollout whose
    controller is alive, or a lost one of a different plan.
    """
    now = now or utcnow()
    flag_id = _ensure_flag(session, plan, actor=actor, namespace=namespace)
    existing = active_rollout(session, plan.flag, namespace=namespace)
    if existing is not None:
        if existing.lease_owner == owner:
            return existing
        if not existing.lost(now):
            raise RolloutActiveError(
                f"flag {plan.flag!r} already has an active rollout (#{existing.id}, {existing.state.status.value}, "
                f"owned by {existing.lease_owner}); it must end or be rolled back first"
            )
        if existing.plan != document:
            raise RolloutActiveError(
                f"flag {plan.flag!r} has a lost rollout (#{existing.id}) of a different plan; "
                "roll it back (`rollout rollback`) before starting another"
            )
        return _take_over(session, existing, owner=owner, lease_for=lease_for, flow_run_id=flow_run_id,
                          actor=actor, now=now)
    row = Rollout(flag_id=flag_id, active_flag_id=flag_id, plan=document, status=Status.PENDING.value,
                  stage_index=-1, flow_run_id=flow_run_id, started_by=actor, reason="", namespace=namespace,
                  lease_owner=owner, lease_expires_at=now + lease_for, started_at=now, updated_at=now)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError as exc:  # another controller won the race for this flag
        raise RolloutActiveError(f"flag {plan.flag!r} already has an active rollout") from exc
    _audit(session, namespace, plan.flag, actor, "rollout.start", {"rollout_id": row.id, "flow_run_id": flow_run_id})
    return _record(row, plan.flag)


def _take_over(session: Session, existing: RolloutRecord, *, owner: str, lease_for: timedelta,
               flow_run_id: str | None, actor: str, now: datetime) -> RolloutRecord:
    # Compare-and-set on the old owner: if two restarts race, one wins.
    same_owner = (Rollout.lease_owner.is_(None) if existing.lease_owner is None
                  else Rollout.lease_owner == existing.lease_owner)
    result = session.execute(
        update(Rollout).where(Rollout.id == existing.id, same_owner)
        .values(lease_owner=owner, lease_expires_at=now + lease_for, flow_run_id=flow_run_id, updated_at=now)
    )
    if result.rowcount != 1:
        raise RolloutActiveError(f"rollout #{existing.id} was taken over by another controller")
    _audit(session, existing.namespace, existing.flag_key, actor, "rollout.take_over",
           {"rollout_id": existing.id, "from": existing.lease_owner, "to": owner})
    return get_rollout(session, existing.id)


def _ensure_flag(session: Session, plan: RolloutPlan, *, actor: str, namespace: str) -> int:
    """The plan's flag, created from the plan if new. An existing flag must have the plan's baseline;
    its candidate and strata follow the plan, but only while nobody is on the candidate."""
    row = session.scalar(select(Flag).where(Flag.namespace == namespace, Flag.key == plan.flag))
    if row is None:
        flag_store.create_flag(session, plan.flag, variants=[plan.baseline, plan.candidate], actor=actor,
                               strata=plan.strata, namespace=namespace)
        return session.scalar(select(Flag.id).where(Flag.namespace == namespace, Flag.key == plan.flag))  # type: ignore[return-value]
    state = flag_store.get_flag(session, plan.flag, namespace=namespace)
    if state.baseline != plan.baseline:
        raise InvalidPlanError([f"baseline: the flag's baseline is {state.baseline!r}, the plan says {plan.baseline!r}"])
    if state.candidate == plan.candidate and state.strata == plan.strata:
        return row.id
    if state.phase.value not in ("inactive", "rolled_back"):
        raise InvalidPlanError([
            f"flag {plan.flag!r} is {state.phase.value} with candidate {state.candidate!r} and its own strata; "
            "the plan's candidate or strata differ, so roll it back first"
        ])
    before = flag_store.flag_to_json(state)
    existing = {v.key for v in row.variants}
    if plan.candidate not in existing:
        row.variants.append(Variant(position=len(existing), key=plan.candidate, payload=None))
    row.candidate = plan.candidate
    row.strata.clear()
    session.flush()
    row.strata.extend(StratumRow(position=i, name=s.name, rules=_rules(s)) for i, s in enumerate(plan.strata))
    allocations = {a.stratum for a in row.allocations}
    for name in plan.stratum_names:
        if name not in allocations:
            row.allocations.append(Allocation(stratum=name, basis_points=0))
    row.version += 1
    row.updated_at = utcnow()
    session.flush()
    session.expire_all()
    after = flag_store.get_flag(session, plan.flag, namespace=namespace)
    session.add(AuditEntry(namespace=namespace, flag_key=plan.flag, actor=actor, action="flag.update",
                           before=before, after=flag_store.flag_to_json(after), reason="set by the rollout plan"))
    flag_store._notify(session, after)  # noqa: SLF001 - same package
    return row.id


def _rules(stratum: Stratum) -> Any:
    return stratum.to_json()["match"]


def renew_lease(session: Session, rollout_id: int, *, owner: str, lease_for: timedelta,
                now: datetime | None = None) -> bool:
    """Extend the lease; False if this owner no longer holds the rollout (it was taken over or ended)."""
    now = now or utcnow()
    result = session.execute(
        update(Rollout).where(Rollout.id == rollout_id, Rollout.lease_owner == owner,
                              Rollout.active_flag_id.is_not(None))
        .values(lease_expires_at=now + lease_for, updated_at=now)
    )
    return result.rowcount == 1


def mark_lost_told(session: Session, rollout: RolloutRecord) -> bool:
    """Claim the telling of this lost episode (the lease `rollout` holds, expired): True only for the first
    caller. A compare-and-set, so two status calls at once tell it once (the second waits for the first's
    row lock on PostgreSQL, and SQLite serialises writers); a lease renewed meanwhile claims nothing."""
    episode = rollout.lease_expires_at or rollout.started_at  # no lease at all: the episode began at the start
    same_lease = (Rollout.lease_expires_at.is_(None) if rollout.lease_expires_at is None
                  else Rollout.lease_expires_at == rollout.lease_expires_at)
    result = session.execute(
        update(Rollout).where(Rollout.id == rollout.id, Rollout.active_flag_id.is_not(None), same_lease,
                              or_(Rollout.lost_told_for.is_(None), Rollout.lost_told_for != episode))
        .values(lost_told_for=episode)
    )
    return result.rowcount == 1


def save_state(session: Session, rollout_id: int, state: RolloutState, *, owner: str,
               now: datetime | None = None) -> bool:
    """Persist the controller's state; a final state frees the flag for the next rollout.

    Only the owner may write; returns False (and writes nothing) otherwise.
    """
    now = now or utcnow()
    values: dict[str, Any] = {
        "status": state.status.value, "stage_index": state.stage_index,
        "stage_started_at": state.stage_started_at, "waiting_for": state.waiting_for,
        "waiting_since": state.waiting_since, "reason": state.reason, "updated_at": now,
    }
    if not state.status.active:
        values |= {"active_flag_id": None, "ended_at": now, "lease_expires_at": None}
    result = session.execute(
        update(Rollout).where(Rollout.id == rollout_id, Rollout.lease_owner == owner,
                              Rollout.active_flag_id.is_not(None)).values(**values)
    )
    return result.rowcount == 1


def abort(session: Session, rollout_id: int, *, owner: str, reason: str) -> bool:
    """Mark the rollout aborted (the flow was cancelled or crashed); only its owner may."""
    record = get_rollout(session, rollout_id)
    if not record.state.status.active or record.lease_owner != owner:
        return False
    state = RolloutState(Status.ABORTED, record.state.stage_index, record.state.stage_started_at, None, None, reason)
    return save_state(session, rollout_id, state, owner=owner)


# --- decisions and approvals -----------------------------------------------------------

def next_sequence(session: Session, rollout_id: int) -> int:
    return int(session.scalar(select(func.coalesce(func.max(Decision.sequence), 0))
                              .where(Decision.rollout_id == rollout_id)) or 0) + 1


def record_decision(session: Session, rollout_id: int, *, sequence: int, stage_index: int, verdict: str,
                    action: str, reason: str, details: Any) -> bool:
    """Keep one check's decision. Idempotent: a retried write of the same sequence number is a no-op."""
    exists = session.scalar(select(Decision.id).where(Decision.rollout_id == rollout_id, Decision.sequence == sequence))
    if exists is not None:
        return False
    try:
        with session.begin_nested():
            session.add(Decision(rollout_id=rollout_id, sequence=sequence, stage_index=stage_index,
                                 verdict=verdict, action=action, reason=reason, details=details))
            session.flush()
    except IntegrityError:
        return False
    return True


def decisions(session: Session, rollout_id: int, *, limit: int | None = None) -> list[DecisionRecord]:
    q = select(Decision).where(Decision.rollout_id == rollout_id).order_by(Decision.sequence.desc())
    if limit is not None:
        q = q.limit(limit)
    rows = list(session.scalars(q))
    rows.reverse()
    return [DecisionRecord(d.sequence, d.stage_index, d.verdict, d.action, d.reason, d.details, d.created_at)
            for d in rows]


def record_approval(session: Session, rollout: RolloutRecord, *, stage_index: int, approved: bool,
                    approver: str, comment: str = "") -> ApprovalRecord:
    """A human's answer on a stage, kept with an audit row. The same answer twice is kept once."""
    approver = approver.strip()
    if not approver:
        from rollout.errors import InvalidInputError

        raise InvalidInputError("an approval needs the approver's name")
    same = session.scalar(select(Approval).where(
        Approval.rollout_id == rollout.id, Approval.stage_index == stage_index, Approval.approved == approved,
        Approval.approver == approver, Approval.comment == comment))
    if same is not None:
        return ApprovalRecord(same.stage_index, same.approved, same.approver, same.comment, same.created_at)
    row = Approval(rollout_id=rollout.id, stage_index=stage_index, approved=approved, approver=approver,
                   comment=comment)
    session.add(row)
    session.flush()
    _audit(session, rollout.namespace, rollout.flag_key, approver,
           "rollout.approve" if approved else "rollout.reject",
           {"rollout_id": rollout.id, "stage_index": stage_index, "comment": comment})
    return ApprovalRecord(row.stage_index, row.approved, row.approver, row.comment, row.created_at)


def approvals(session: Session, rollout_id: int) -> list[ApprovalRecord]:
    return [ApprovalRecord(a.stage_index, a.approved, a.approver, a.comment, a.created_at)
            for a in session.scalars(select(Approval).where(Approval.rollout_id == rollout_id).order_by(Approval.id))]


def approval_inputs(session: Session, rollout_id: int) -> list[ApprovalInput]:
    return [ApprovalInput(a.stage_index, a.approved, a.approver, a.comment) for a in approvals(session, rollout_id)]


def _audit(session: Session, namespace: str, flag_key: str, actor: str, action: str, after: Any) -> None:
    session.add(AuditEntry(namespace=namespace, flag_key=flag_key, actor=actor, action=action, before=None,
                           after=after, reason=str(after.get("comment", "")) if isinstance(after, dict) else ""))
    session.flush()
