"""Answering an approval gate from outside the Prefect UI (`rollout approve`, the HTTP API).

The answer is recorded in our database (the source of truth, with the audit
log), then the paused flow run is resumed with the very input the UI form
sends, so it wakes at once; a run that is not paused (the foreground runner,
or one the watchdog already woke) picks the answer up at its next check.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from sqlalchemy import Engine

from rollout.errors import ConflictError, NotFoundError
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction

log = logging.getLogger("rollout.approvals")


@dataclass(frozen=True)
class ApprovalResult:
    rollout_id: int
    stage: str
    approved: bool
    resumed_flow_run: bool


def submit_approval(engine: Engine, flag_key: str, *, approver: str, approved: bool, comment: str = "",
                    namespace: str = "default", resume: bool = True) -> ApprovalResult:
    with transaction(engine) as s:
        record = rollout_store.active_rollout(s, flag_key, namespace=namespace)
        if record is None:
            raise NotFoundError(f"flag {flag_key!r} has no active rollout")
        state = record.state
        if not state.status.waiting or state.waiting_for is None:
            raise ConflictError(f"rollout #{record.id} of {flag_key!r} is {state.status.value}; nothing waits for approval")
        stages = record.plan.get("stages", [])
        stage = stages[state.waiting_for]["name"] if state.waiting_for < len(stages) else "completion"
        rollout_store.record_approval(s, record, stage_index=state.waiting_for, approved=approved,
                                      approver=approver, comment=comment)
    resumed = bool(resume and record.flow_run_id and os.environ.get("PREFECT_API_URL")
                   and _resume(record.flow_run_id, approver, approved, comment))
    return ApprovalResult(record.id, stage, approved, resumed)


def _resume(flow_run_id: str, approver: str, approved: bool, comment: str) -> bool:
    from prefect.flow_runs import resume_flow_run

    try:
        resume_flow_run(flow_run_id, run_input={"decision": "approve" if approved else "reject",
                                                "approver": approver, "comment": comment})
        return True
    except Exception as exc:  # noqa: BLE001 - not paused (yet, or any more): the next check reads the answer
        log.info("flow run %s was not resumed: %s", flow_run_id, exc)
        return False
