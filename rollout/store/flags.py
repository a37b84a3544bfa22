"""Flag state in SQL: create, read, change. Every change is versioned and audited.

Each function takes a Session and never commits; the caller owns the
transaction. A change bumps the flag's version with compare-and-set and writes
its audit row in the same transaction, so either both land or neither does,
and two writers racing on one flag cannot both win.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rollout.core.flag import (
    BUCKETS,
    DEFAULT_STRATUM,
    KEY_PATTERN,
    check_payload,
    FlagState,
    Phase,
    Stratum,
)
from rollout.core.policy import online_sample, shadow_rate
from rollout.errors import (
    FlagExistsError,
    FlagNotFoundError,
    InvalidFlagError,
    VersionConflictError,
)
from rollout.store.models import Allocation, AuditEntry, Flag, Rollout, StratumRow, Variant, utcnow

NOTIFY_CHANNEL = "rollout_flags"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    namespace: str
    flag_key: str | None
    actor: str
    action: str
    before: Any
    after: Any
    reason: str
    created_at: datetime


# --- reading ------------------------------------------------------------------

def get_flag(session: Session, key: str, *, namespace: str = "default") -> FlagState:
    states = _load_states(session, namespace=namespace, keys=[key])
    if not states:
        raise FlagNotFoundError(key)
    return states[0]


def list_flags(session: Session, *, namespace: str | None = "default") -> list[FlagState]:
    return _load_states(session, namespace=namespace)


def fingerprint(session: Session, *, namespace: str | None = "default") -> tuple[int, int, int]:
    """Changes whenever any flag, or the stage of an active rollout, changes. One cheap query.

    (flag count, sum of versions, sum over active rollouts of id and stage):
    versions only ever rise, so the sum only rises; a new flag raises the count.
    """
    flags = select(func.count(Flag.id), func.coalesce(func.sum(Flag.version), 0))
    rollouts = (
        select(func.coalesce(func.sum(Rollout.id * 1000 + Rollout.stage_index), 0))
        .join(Flag, Flag.id == Rollout.flag_id)
        .where(Rollout.active_flag_id.is_not(None))
    )
    if namespace is not None:
        flags = flags.where(Flag.namespace == namespace)
        rollouts = rollouts.where(Flag.namespace == namespace)
    count, total = session.execute(flags).one()
    stages = session.execute(rollouts).scalar_one()
    return int(count), int(total), int(stages)


def _load_states(
    session: Session, *, namespace: str | None, keys: Sequence[str] | None = None
) -> list[FlagState]:
    """All matching flags in five queries, however many flags there are."""
    q = select(Flag).order_by(Flag.namespace, Flag.key)
    if namespace is not None:
        q = q.where(Flag.namespace == namespace)
    if keys is not None:
        q = q.where(Flag.key.in_(keys))
    flags = session.scalars(q).all()
    if not flags:
        return []
    ids = [f.id for f in flags]
    variants: dict[int, list[Variant]] = {i: [] for i in ids}
    for v in session.scalars(select(Variant).where(Variant.flag_id.in_(ids)).order_by(Variant.position)):
        variants[v.flag_id].append(v)
    strata: dict[int, list[StratumRow]] = {i: [] for i in ids}
    for s in session.scalars(select(StratumRow).where(StratumRow.flag_id.in_(ids)).order_by(StratumRow.position)):
        strata[s.flag_id].append(s)
    allocations: dict[int, dict[str, int]] = {i: {} for i in ids}
    for a in session.scalars(select(Allocation).where(Allocation.flag_id.in_(ids))):
        allocations[a.flag_id][a.stratum] = a.basis_points
    active = {
        r.flag_id: r
        for r in session.scalars(select(Rollout).where(Rollout.active_flag_id.in_(ids)))
    }
    return [
        _to_state(f, variants[f.id], strata[f.id], allocations[f.id], active.get(f.id))
        for f in flags
    ]


def _to_state(
    f: Flag,
    variants: list[Variant],
    strata: list[StratumRow],
    allocations: dict[str, int],
    rollout: Rollout | None,
) -> FlagState:
    return FlagState(
        key=f.key,
        salt=f.salt,
        baseline=f.baseline,
        candidate=f.candidate,
        version=f.version,
        phase=Phase(f.phase),
        strata=tuple(Stratum.from_json({"name": s.name, "match": s.rules}) for s in strata),
        allocations=allocations,
        shadow_bp=f.shadow_bp,
        payloads={v.key: v.payload for v in variants},
        rollout_id=rollout.id if rollout else None,
        stage=rollout.stage_index if rollout else 0,
        namespace=f.namespace,
        shadow_rate=shadow_rate(rollout.plan, rollout.stage_index) if rollout else None,
        online_sample=online_sample(rollout.plan) if rollout else None,
    )


def flag_to_json(state: FlagState) -> dict[str, Any]:
    """The flag as plain JSON: what the audit log keeps, what `flag show --json` prints."""
    return {
        "namespace": state.namespace,
        "key": state.key,
        "version": state.version,
        "phase": state.phase.value,
        "baseline": state.baseline,
        "candidate": state.candidate,
        "variants": list(state.payloads),
        "strata": [s.to_json() for s in state.strata],
        "allocations": {name: state.allocation(name) for name in state.stratum_names},
        "shadow_bp": state.shadow_bp,
        "rollout_id": state.rollout_id,
        "stage": state.stage,
    }


# --- creating -----------------------------------------------------------------

def create_flag(
    session: Session,
    key: str,
    *,
    variants: Sequence[str] | Mapping[str, Any],
    actor: str,
    description: str = "",
    strata: Iterable[Stratum] = (),
    namespace: str = "default",
    salt: str | None = None,
) -> FlagState:
    """A new flag, inactive (everyone gets the baseline). The first variant is the baseline, the second the candidate."""
    payloads = dict(variants) if isinstance(variants, Mapping) else {v: None for v in variants}
    names = list(payloads)
    if len(names) != len(variants) or len(names) < 2:
        raise InvalidFlagError("a flag needs at least two distinct variants: the baseline first, then the candidate")
    for name in names:
        if not isinstance(name, str) or not KEY_PATTERN.match(name):
            raise InvalidFlagError(f"variant {name!r} must be 1-100 letters, digits, '.', '_' or '-'")
        check_payload(name, payloads[name])
    strata = tuple(strata)
    salt = salt or secrets.token_hex(8)
    # Validate the whole definition before touching the database.
    state = FlagState(key=key, salt=salt, baseline=names[0], candidate=names[1], strata=strata,
                      payloads=payloads, namespace=namespace)
    if session.scalar(select(Flag.id).where(Flag.namespace == namespace, Flag.key == key)) is not None:
        raise FlagExistsError(f"flag {key!r} exists already")
    row = Flag(namespace=namespace, key=key, description=description, salt=salt,
               phase=Phase.INACTIVE.value, version=1, baseline=state.baseline,
               candidate=state.candidate, shadow_bp=0)
    row.variants = [Variant(position=i, key=k, payload=payloads[k]) for i, k in enumerate(names)]
    row.strata = [StratumRow(position=i, name=s.name, rules=s.to_json()["match"]) for i, s in enumerate(strata)]
    row.allocations = [Allocation(stratum=n, basis_points=0) for n in state.stratum_names]
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError as exc:  # lost a race with another creator
        raise FlagExistsError(f"flag {key!r} exists already") from exc
    _audit(session, state, actor=actor, action="flag.create", before=None, after=flag_to_json(state),
           reason=description)
    _notify(session, state)
    return state


# --- changing -----------------------------------------------------------------

def set_allocation(
    session: Session,
    key: str,
    basis_points: int,
    *,
    actor: str,
    stratum: str | None = None,
    reason: str = "",
    namespace: str = "default",
    expected_version: int | None = None,
) -> FlagState:
    """Serve the candidate to this share of one stratum (or all). Puts the flag in the ramping phase."""
    if isinstance(basis_points, bool) or not isinstance(basis_points, int) or not 0 <= basis_points <= BUCKETS:
        raise InvalidFlagError(f"allocation must be 0..10000 basis points, got {basis_points!r}")

    def change(state: FlagState) -> dict[str, Any]:
        names = state.stratum_names
        if stratum is not None and stratum not in names:
            raise InvalidFlagError(f"flag {key!r} has no stratum {stratum!r}; it has {list(names)}")
        targets = [stratum] if stratum is not None else list(names)
        return {"phase": Phase.RAMPING, "allocations": {n: basis_points for n in targets}}

    return _change(session, key, namespace, change, actor=actor, action="flag.set_allocation",
                   reason=reason, expected_version=expected_version)


def set_allocations(
    session: Session,
    key: str,
    allocations: Mapping[str, int],
    *,
    actor: str,
    reason: str = "",
    namespace: str = "default",
    expected_version: int | None = None,
    phase: Phase = Phase.RAMPING,
) -> FlagState:
    """Set several strata at once (what a ramp stage does), in one version bump."""
    def change(state: FlagState) -> dict[str, Any]:
        unknown = set(allocations) - set(state.stratum_names)
        if unknown:
            raise InvalidFlagError(f"flag {key!r} has no strata {sorted(unknown)}")
        return {"phase": phase, "allocations": dict(allocations)}

    return _change(session, key, namespace, change, actor=actor, action="flag.set_allocations",
                   reason=reason, expected_version=expected_version)


def set_shadow(
    session: Session,
    key: str,
    basis_points: int,
    *,
    actor: str,
    reason: str = "",
    namespace: str = "default",
    expected_version: int | None = None,
) -> FlagState:
    """Shadow phase: everyone is served the baseline, and this share is marked to also run the candidate."""
    if isinstance(basis_points, bool) or not isinstance(basis_points, int) or not 0 <= basis_points <= BUCKETS:
        raise InvalidFlagError(f"shadow sample must be 0..10000 basis points, got {basis_points!r}")
    return _change(session, key, namespace,
                   lambda state: {"phase": Phase.SHADOW, "shadow_bp": basis_points,
                                  "allocations": {n: 0 for n in state.stratum_names}},
                   actor=actor, action="flag.shadow", reason=reason, expected_version=expected_version)


def promote(
    session: Session, key: str, *, actor: str, reason: str = "", namespace: str = "default",
    expected_version: int | None = None,
) -> FlagState:
    """Everyone gets the candidate."""
    return _change(session, key, namespace,
                   lambda state: {"phase": Phase.PROMOTED, "shadow_bp": 0,
                                  "allocations": {n: BUCKETS for n in state.stratum_names}},
                   actor=actor, action="flag.promote", reason=reason, expected_version=expected_version)


def rollback(
    session: Session, key: str, *, actor: str, reason: str, namespace: str = "default",
    expected_version: int | None = None,
) -> FlagState:
    """Everyone back on the baseline, at once; an active rollout of the flag ends as rolled back."""
    if not reason or not reason.strip():
        raise InvalidFlagError("a rollback needs a reason")

    def change(state: FlagState) -> dict[str, Any]:
        return {"phase": Phase.ROLLED_BACK, "shadow_bp": 0,
                "allocations": {n: 0 for n in state.stratum_names}}

    # The rollout row first, then the flag: a controller's check locks them in
    # the same order, so the two can never deadlock on PostgreSQL.
    now = utcnow()
    session.execute(
        update(Rollout)
        .where(Rollout.active_flag_id.is_not(None), Rollout.flag_id == _flag_id(session, key, namespace))
        .values(status="rolled_back", active_flag_id=None, reason=f"rolled back by {actor}: {reason}",
                ended_at=now, updated_at=now)
    )
    return _change(session, key, namespace, change, actor=actor, action="flag.rollback",
                   reason=reason, expected_version=expected_version)


def _flag_id(session: Session, key: str, namespace: str) -> int:
    flag_id = session.scalar(select(Flag.id).where(Flag.namespace == namespace, Flag.key == key))
    if flag_id is None:
        raise FlagNotFoundError(key)
    return flag_id


def _change(
    session: Session,
    key: str,
    namespace: str,
    change: Callable[[FlagState], dict[str, Any]],
    *,
    actor: str,
    action: str,
    reason: str,
    expected_version: int | None,
) -> FlagState:
    if not actor or not str(actor).strip():
        raise InvalidFlagError("every change needs an actor (who is making it)")
    before = get_flag(session, key, namespace=namespace)
    if expected_version is not None and before.version != expected_version:
        raise VersionConflictError(
            f"flag {key!r} is at version {before.version}, not {expected_version}: someone changed it first"
        )
    fields = change(before)
    flag_id = _flag_id(session, key, namespace)
    values: dict[str, Any] = {"version": before.version + 1, "updated_at": utcnow()}
    if "phase" in fields:
        values["phase"] = Phase(fields["phase"]).value
    if "shadow_bp" in fields:
        values["shadow_bp"] = fields["shadow_bp"]
    # Compare-and-set: the row must still be at the version we read. On
    # PostgreSQL a racing writer waits for our row lock, then finds the version
    # moved and updates nothing.
    result = session.execute(
        update(Flag).where(Flag.id == flag_id, Flag.version == before.version).values(**values)
    )
    if result.rowcount != 1:
        raise VersionConflictError(f"flag {key!r} changed while this change was being made; try again")
    for stratum, bp in fields.get("allocations", {}).items():
        session.execute(
            update(Allocation).where(Allocation.flag_id == flag_id, Allocation.stratum == stratum)
            .values(basis_points=bp)
        )
    session.expire_all()
    after = get_flag(session, key, namespace=namespace)
    _audit(session, after, actor=actor, action=action, before=flag_to_json(before),
           after=flag_to_json(after), reason=reason)
    _notify(session, after)
    return after


def _audit(
    session: Session, state: FlagState, *, actor: str, action: str, before: Any, after: Any, reason: str
) -> None:
    session.add(AuditEntry(namespace=state.namespace, flag_key=state.key, actor=actor, action=action,
                           before=before, after=after, reason=reason or ""))
    session.flush()


def _notify(session: Session, state: FlagState) -> None:
    """Wake listening clients; PostgreSQL delivers it only if the transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": NOTIFY_CHANNEL, "payload": f"{state.namespace}:{state.key}:{state.version}"})


def audit_log(session: Session, key: str | None = None, *, namespace: str = "default",
              limit: int = 100) -> list[AuditRecord]:
    q = select(AuditEntry).where(AuditEntry.namespace == namespace).order_by(AuditEntry.id.desc()).limit(limit)
    if key is not None:
        q = q.where(AuditEntry.flag_key == key)
    return [
        AuditRecord(e.id, e.namespace, e.flag_key, e.actor, e.action, e.before, e.after, e.reason, e.created_at)
        for e in session.scalars(q)
    ]


__all__ = [
    "DEFAULT_STRATUM",
    "NOTIFY_CHANNEL",
    "AuditRecord",
    "audit_log",
    "create_flag",
    "fingerprint",
    "flag_to_json",
    "get_flag",
    "list_flags",
    "promote",
    "rollback",
    "set_allocation",
    "set_allocations",
    "set_shadow",
]
