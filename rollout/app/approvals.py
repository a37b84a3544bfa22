"""Answering an approval gate: from outside the Prefect UI (`rollout approve`, the HTTP API) and from the form.

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

from rollout.app.plans import load_plan
from rollout.app.reconcile import RolloutRun
from rollout.core.policy import stage_name
from rollout.errors import ConflictError, InvalidInputError, NotFoundError
from rollout.store.unit import SqlStore

log = logging.getLogger("rollout.approvals")


@dataclass(frozen=True)
class ApprovalResult:
    rollout_id: int
    stage: str
    approved: bool
    resumed_flow_run: bool


def submit_approval(engine: Engine, flag_key: str, *, approver: str, approved: bool, comment: str = "",
                    namespace: str = "default", resume: bool = True) -> ApprovalResult:
    with SqlStore(engine, namespace).transaction() as unit:
        record = unit.rollouts.active(flag_key)
        if record is None:
            raise NotFoundError(f"flag {flag_key!r} has no active rollout")
        state = record.state
        if not state.status.waiting or state.waiting_for is None:
            raise ConflictError(f"rollout #{record.id} of {flag_key!r} is {state.status.value}; nothing waits for approval")
        stage = stage_name(load_plan(record.plan), state.waiting_for) or "?"
        unit.rollouts.record_approval(record, stage_index=state.waiting_for, approved=approved,
                                      approver=approver, comment=comment)
    resumed = bool(resume and record.flow_run_id and os.environ.get("PREFECT_API_URL")
                   and _resume(record.flow_run_id, approver, approved, comment))
    return ApprovalResult(record.id, stage, approved, resumed)


def record_answer(run: RolloutRun, stage_index: int, *, approved: bool, approver: str, comment: str = "") -> str | None:
    """Keep an answer the controller received (the Prefect form) if the rollout still waits on that stage.

    Returns why the answer could not be used (e.g. a blank approver), or None:
    the caller then asks again with the reason, rather than failing the rollout.
    """
    try:
        with run.store.transaction() as unit:
            record = unit.rollouts.get(run.rollout_id)
            if record.state.status.waiting and record.state.waiting_for == stage_index:
                unit.rollouts.record_approval(record, stage_index=stage_index, approved=approved,
                                              approver=approver, comment=comment)
    except InvalidInputError as exc:
        return f"the last answer could not be used: {exc}"
    return None


def _resume(flow_run_id: str, approver: str, approved: bool, comment: str) -> bool:
    from prefect.flow_runs import resume_flow_run

    try:
        resume_flow_run(flow_run_id, run_input={"decision": "approve" if approved else "reject",
                                                "approver": approver, "comment": comment})
        return True
    except Exception as exc:  # noqa: BLE001 - not paused (yet, or any more): the next check reads the answer
        log.info("flow run %s was not resumed: %s", flow_run_id, exc)
        return False
