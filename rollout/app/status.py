"""What `rollout status`, `rollout history` and the HTTP service say about a flag's rollout."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from rollout.app.plans import load_plan
from rollout.core.windows import describe_window
from rollout.store import flags as flag_store
from rollout.store import rollouts as rollout_store
from rollout.store.models import utcnow


def rollout_status(session: Session, flag_key: str, *, namespace: str = "default",
                   now: datetime | None = None) -> dict[str, Any]:
    """The flag, its latest rollout, the last verdict per metric and what waits for a human; plain JSON."""
    now = now or utcnow()
    flag = flag_store.get_flag(session, flag_key, namespace=namespace)
    out: dict[str, Any] = {"flag": flag_store.flag_to_json(flag), "rollout": None}
    record = rollout_store.latest_rollout(session, flag_key, namespace=namespace)
    if record is None:
        return out
    plan = load_plan(record.plan)
    state = record.state
    stage = plan.stages[state.stage_index] if 0 <= state.stage_index < len(plan.stages) else None
    waiting = (plan.stages[state.waiting_for].name
               if state.waiting_for is not None and state.waiting_for < len(plan.stages) else None)
    last = rollout_store.decisions(session, record.id, limit=1)
    out["rollout"] = {
        "id": record.id,
        "status": state.status.value,
        "lost": record.lost(now),
        "stage_index": state.stage_index,
        "stage": stage.name if stage else None,
        "stages": [s.name for s in plan.stages],
        "reason": state.reason,
        "pending_approval": waiting if state.status.waiting else None,
        "started_by": record.started_by,
        "started_at": record.started_at.isoformat(),
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
        "flow_run_id": record.flow_run_id,
        "lease_owner": record.lease_owner,
        "lease_expires_at": record.lease_expires_at.isoformat() if record.lease_expires_at else None,
        "last_check": None,
        "window": describe_window(plan, now),
    }
    from rollout.app.evals import gate_rows

    out["rollout"]["eval"] = {plan.stages[i].name: gate_rows(session, record.id, i, plan)
                              for i in range(len(plan.stages)) if plan.stages[i].eval is not None
                              and i <= max(state.stage_index, 0)}
    if last:
        d = last[0]
        out["rollout"]["last_check"] = {
            "sequence": d.sequence, "at": d.created_at.isoformat(), "verdict": d.verdict, "action": d.action,
            "reason": d.reason, "metrics": (d.details or {}).get("metrics", []),
            "health": (d.details or {}).get("health", []),
        }
    return out


def rollout_history(session: Session, flag_key: str, *, namespace: str = "default") -> dict[str, Any]:
    """Decisions and approvals of the latest rollout, and the flag's audit log; plain JSON."""
    record = rollout_store.latest_rollout(session, flag_key, namespace=namespace)
    audit = [{"at": e.created_at.isoformat(), "actor": e.actor, "action": e.action, "reason": e.reason}
             for e in reversed(flag_store.audit_log(session, flag_key, namespace=namespace, limit=500))]
    if record is None:
        return {"rollout": None, "decisions": [], "approvals": [], "audit": audit}
    return {
        "rollout": record.id,
        "decisions": [{"sequence": d.sequence, "at": d.created_at.isoformat(), "stage_index": d.stage_index,
                       "verdict": d.verdict, "action": d.action, "reason": d.reason}
                      for d in rollout_store.decisions(session, record.id)],
        "approvals": [{"at": a.created_at.isoformat(), "stage_index": a.stage_index, "approved": a.approved,
                       "approver": a.approver, "comment": a.comment}
                      for a in rollout_store.approvals(session, record.id)],
        "audit": audit,
    }
