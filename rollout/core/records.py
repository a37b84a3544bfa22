"""What the controller reads back about a rollout: frozen records the store converts its rows into."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rollout.core.controller import RolloutState


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    id: int
    flag_id: int
    flag_key: str
    namespace: str
    plan: dict[str, Any]
    state: RolloutState
    flow_run_id: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    started_by: str
    started_at: datetime
    ended_at: datetime | None

    def lost(self, now: datetime) -> bool:
        """Active, but nobody renewed the lease in time: its controller died (or cannot reach the database)."""
        return self.state.status.active and (self.lease_expires_at is None or self.lease_expires_at < now)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    sequence: int
    stage_index: int
    verdict: str
    action: str
    reason: str
    details: Any
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    stage_index: int
    approved: bool
    approver: str
    comment: str
    created_at: datetime


__all__ = ["ApprovalRecord", "DecisionRecord", "RolloutRecord"]
