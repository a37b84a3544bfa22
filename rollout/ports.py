"""Protocols for everything outside the core that the controller and the use cases reach.

Each port is small and speaks the core's frozen types. `rollout.store` adapts
SQLAlchemy to them (`rollout.store.unit.SqlStore`, `rollout.app.evidence.StoreEvidence`),
and `rollout.testing.fakes` ships an in-memory implementation of each, so the
controller loop can be tested in milliseconds without a database.

Blocks are kept apart on purpose (controller ports here; the SDK's and the
service's ports in their own block below), so that parts written at the same
time merge cleanly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    # Annotations only: the SDK reads its ports from here, and an app's core install (no numpy, no
    # scipy) must not load the judge through the controller's types.
    from rollout.core.controller import ApprovalInput, Observation, RolloutState
    from rollout.core.flag import FlagState
    from rollout.core.plan import EvalSpec, RolloutPlan
    from rollout.core.records import ApprovalRecord, DecisionRecord, RolloutRecord

# --- the controller's ports ---------------------------------------------------------------


class Clock(Protocol):
    """Time, and waiting for it: a fake advances `now()` on `sleep()`, so loops run instantly in tests."""

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class FlagStore(Protocol):
    """A flag's state and the controller's writes to it, inside one unit of work.

    Every write bumps the version and audits; `expected_version` makes it a
    compare-and-set that loses (VersionConflictError) to anyone who wrote first.
    """

    def get(self, key: str) -> FlagState: ...

    def set_shadow(self, key: str, basis_points: int, *, actor: str, reason: str,
                   expected_version: int | None = None) -> FlagState: ...

    def set_allocations(self, key: str, allocations: Mapping[str, int], *, actor: str, reason: str,
                        expected_version: int | None = None) -> FlagState: ...

    def promote(self, key: str, *, actor: str, reason: str, expected_version: int | None = None) -> FlagState: ...

    def rollback(self, key: str, *, actor: str, reason: str, expected_version: int | None = None) -> FlagState: ...

    def last_rollback(self, key: str) -> str | None:
        """'actor: reason' of the flag's latest rollback, if any (to say who rolled back by hand)."""
        ...


class RolloutRepository(Protocol):
    """Rollouts: one active per flag, a lease its controller renews, decisions and approvals."""

    def start(self, plan: RolloutPlan, document: dict[str, Any], *, actor: str, owner: str, lease_for: timedelta,
              flow_run_id: str | None = None) -> RolloutRecord:
        """Start (or take over a lost one). Raises RolloutActiveError if the flag's rollout is someone else's."""
        ...

    def get(self, rollout_id: int) -> RolloutRecord: ...

    def active(self, flag_key: str) -> RolloutRecord | None: ...

    def of_flow_run(self, flow_run_id: str) -> RolloutRecord | None:
        """The latest rollout this Prefect flow run started or took over."""
        ...

    def renew_lease(self, rollout_id: int, *, owner: str, lease_for: timedelta, now: datetime) -> bool: ...

    def save_state(self, rollout_id: int, state: RolloutState, *, owner: str, now: datetime) -> bool: ...

    def abort(self, rollout_id: int, *, owner: str, reason: str) -> bool: ...

    def mark_lost_told(self, rollout: RolloutRecord) -> bool:
        """Claim telling that `rollout` (seen lost) is lost: True once per expired lease, False after."""
        ...

    def approvals(self, rollout_id: int) -> Sequence[ApprovalInput]: ...

    def record_approval(self, rollout: RolloutRecord, *, stage_index: int, approved: bool, approver: str,
                        comment: str = "") -> ApprovalRecord: ...

    def record_decision(self, rollout_id: int, *, stage_index: int, verdict: str, action: str, reason: str,
                        details: Any) -> int:
        """Keep one check's decision under the next sequence number; returns that number."""
        ...

    def decisions(self, rollout_id: int, *, limit: int | None = None) -> Sequence[DecisionRecord]: ...


class UnitOfWork(Protocol):
    """One transaction: everything done through it commits together or not at all."""

    flags: FlagStore
    rollouts: RolloutRepository


class Store(Protocol):
    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        """Commit when the block ends, roll back on any error; StoreUnavailableError when unreachable."""
        ...


class EvidenceSource(Protocol):
    """What a check reads from outcomes: the judge's verdict on the stage in force, its samples, the eval gate,
    shadow spend. Returns an Observation with those fields filled (the check adds what the flag says)."""

    def observe(self, plan: RolloutPlan, rollout: RolloutRecord, now: datetime,
                eval_failure: str | None = None) -> Observation: ...


class EvalRunner(Protocol):
    """Runs an eval stage's cases not stored yet; returns (why it could not run, or None; results written)."""

    def run(self, rollout_id: int, stage_index: int, spec: EvalSpec, *,
            variants: tuple[str, str]) -> tuple[str | None, int]: ...


class OutcomeSink(Protocol):
    """Where recorded outcomes go (the SDK's buffer flushes into one); returns how many were stored."""

    def write(self, entries: Sequence[Any]) -> int: ...


# --- snapshot source (the SDK's and the service's flag snapshot; rollout.sdk.snapshot) -------------

Fingerprint = tuple[int, int, int]
"""Changes whenever a flag or an active rollout's stage changes (rollout.store.flags.fingerprint)."""


class FlagSource(Protocol):
    """Where a flag snapshot is read from. Either call may raise or hang: the snapshot copes."""

    def fingerprint(self, namespace: str | None) -> Fingerprint:
        """One cheap read that changes whenever the flags of `namespace` (None: every namespace) change."""
        ...

    def load(self, namespace: str | None) -> tuple[Fingerprint, Sequence[tuple[FlagState, int]]]:
        """The fingerprint and every flag of `namespace` (None: all) with its database id, read together."""
        ...

    def listen(self, wake: Callable[[], None], stop: threading.Event) -> None:
        """Call `wake` whenever a change is announced, until `stop` is set; return at once if nothing is."""
        ...


__all__ = ["Clock", "EvalRunner", "EvidenceSource", "Fingerprint", "FlagSource", "FlagStore", "OutcomeSink",
           "RolloutRepository", "Store", "UnitOfWork"]
