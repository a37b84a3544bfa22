"""What `rollout status`, `rollout history`, `rollout watch`, the HTTP service and the Prefect run page say about
a flag's rollout: typed, frozen views. Each renders itself as JSON (`to_json`) with the field names the CLI's
--json and `GET /v1/rollouts/{flag}` have always printed.

Stage numbers for people are 1-based everywhere (`stage_number`); `stage_index` stays 0-based in JSON
for programs, as it always was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from rollout.app.online_evals import JudgeState, judge_states
from rollout.app.plans import cost_like, load_plan
from rollout.core.controller import unpaired_note
from rollout.core.plan import RolloutPlan, StageKind
from rollout.core.policy import stage_name, stage_number
from rollout.core.records import RolloutRecord
from rollout.core.windows import describe_window
from rollout.ports import Store
from rollout.store import flags as flag_store
from rollout.store import outcomes as outcome_store
from rollout.store import rollouts as rollout_store
from rollout.store.models import utcnow


@dataclass(frozen=True)
class MetricLine:
    """One metric of a verdict, as the decisions table keeps it (rollout.app.verdicts.metric_json)."""

    metric: str
    verdict: str
    stratum: str | None
    estimate: float | None
    lower: float | None
    upper: float | None
    margin: float | None
    n_baseline: int
    n_candidate: int
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_json(cls, m: Mapping[str, Any]) -> MetricLine:
        return cls(m["metric"], m["verdict"], m.get("stratum"), m.get("estimate"), m.get("lower"), m.get("upper"), m.get("margin"),
                   m.get("n_baseline", 0), m.get("n_candidate", 0), dict(m))


@dataclass(frozen=True)
class HealthLine:
    name: str
    ok: bool
    reason: str
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class CheckView:
    sequence: int
    at: datetime
    verdict: str
    action: str
    reason: str
    metrics: tuple[MetricLine, ...]
    health: tuple[HealthLine, ...]
    strata: tuple[MetricLine, ...] = ()   # per-stratum results where the judge found harm

    def to_json(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "at": self.at.isoformat(), "verdict": self.verdict, "action": self.action,
                "reason": self.reason, "metrics": [dict(m.raw) for m in self.metrics],
                "health": [dict(h.raw) for h in self.health], "strata": [dict(m.raw) for m in self.strata]}


@dataclass(frozen=True)
class CostLine:
    """What one arm of one stratum cost over the rollout, in one cost-like metric (or a judge's own spend)."""

    arm: str          # candidate (served), shadow (the candidate's shadow runs), baseline, or judge
    variant: str      # the variant key, or the judge's name
    stratum: str      # "*" for a judge: grading is metered per judge, not per stratum
    metric: str
    total: float

    def to_json(self) -> dict[str, Any]:
        return {"arm": self.arm, "variant": self.variant, "stratum": self.stratum, "metric": self.metric,
                "total": self.total}


@dataclass(frozen=True)
class BudgetLine:
    """How much of one budget (a judge's, or a shadow stage's) is spent."""

    budget: str       # e.g. "judge faithfulness per hour", "shadow stage shadow in total"
    spent: float
    limit: float

    @property
    def share(self) -> float:
        return self.spent / self.limit if self.limit > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"budget": self.budget, "spent": self.spent, "limit": self.limit, "share": self.share}


@dataclass(frozen=True)
class CostView:
    lines: tuple[CostLine, ...] = ()
    budgets: tuple[BudgetLine, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"lines": [c.to_json() for c in self.lines], "budgets": [b.to_json() for b in self.budgets]}


def cost_attribution(session: Session, plan: RolloutPlan, *, flag_id: int, rollout_id: int,
                     judges: tuple[JudgeState, ...], now: datetime) -> CostView:
    """Cost per arm and stratum over the rollout (outcome metrics named like a cost, and the judges' spend),
    and the share of each budget spent."""
    metrics = [m for m in outcome_store.rollout_metrics(session, flag_id=flag_id, rollout_id=rollout_id)
               if cost_like(m)]
    shadow_stages = {i for i, st in enumerate(plan.stages) if st.kind is StageKind.SHADOW}
    totals: dict[tuple[str, str, str, str], float] = {}
    for metric, variant, stratum, stage, total in outcome_store.totals_by_cell(
            session, flag_id=flag_id, rollout_id=rollout_id, metrics=metrics):
        arm = ("baseline" if variant == plan.baseline
               else "shadow" if stage in shadow_stages else "candidate" if variant == plan.candidate else "other")
        key = (arm, variant, stratum, metric)
        totals[key] = totals.get(key, 0.0) + total
    lines = [CostLine(*key, total) for key, total in sorted(totals.items())]
    lines += [CostLine("judge", j.judge, "*", "cost_usd", j.spent_total) for j in judges]
    budgets = []
    for j in judges:
        if j.per_hour is not None:
            budgets.append(BudgetLine(f"judge {j.judge} per hour", j.spent_hour, j.per_hour))
        if j.total is not None:
            budgets.append(BudgetLine(f"judge {j.judge} in total", j.spent_total, j.total))
    for i in sorted(shadow_stages):
        budget = plan.stages[i].budget
        if budget is None:
            continue
        meter = {"flag_id": flag_id, "rollout_id": rollout_id, "stage": i, "variant": plan.candidate,
                 "metric": budget.cost_metric}
        name = plan.stages[i].name
        if budget.per_hour is not None:
            hour = outcome_store.spend(session, **meter, since=now - timedelta(hours=1))
            budgets.append(BudgetLine(f"shadow stage {name} per hour", hour, budget.per_hour))
        if budget.total is not None:
            budgets.append(BudgetLine(f"shadow stage {name} in total", outcome_store.spend(session, **meter),
                                      budget.total))
    return CostView(tuple(lines), tuple(budgets))


@dataclass(frozen=True)
class RolloutView:
    id: int
    status: str
    lost: bool
    stage_index: int
    stage: str | None
    stages: tuple[str, ...]
    reason: str
    pending_approval: str | None
    started_by: str
    started_at: datetime
    ended_at: datetime | None
    flow_run_id: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_check: CheckView | None
    eval: Mapping[str, list[dict[str, Any]]]   # the eval gate's rows per stage (rollout.app.evals.gate_rows)
    window: str = ""                          # the plan's ramp windows, and the next one (rollout.core.windows)
    judges: tuple[JudgeState, ...] = ()       # the online judges' spend, and why one is paused
    cost: CostView = CostView()
    unpaired: int = 0                         # shadow: candidate outcomes without a pair_id, judged as two arms

    @property
    def stage_number(self) -> int:
        return stage_number(self.stage_index)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "status": self.status, "lost": self.lost, "stage_index": self.stage_index,
            "stage_number": self.stage_number, "stage": self.stage, "stages": list(self.stages),
            "reason": self.reason, "pending_approval": self.pending_approval, "started_by": self.started_by,
            "started_at": self.started_at.isoformat(), "ended_at": _iso(self.ended_at),
            "flow_run_id": self.flow_run_id, "lease_owner": self.lease_owner,
            "lease_expires_at": _iso(self.lease_expires_at),
            "last_check": self.last_check.to_json() if self.last_check else None, "eval": dict(self.eval),
            "window": self.window, "judges": [j.to_json() for j in self.judges], "cost": self.cost.to_json(),
            "unpaired": self.unpaired, "unpaired_note": self.unpaired_note,
        }

    @property
    def unpaired_note(self) -> str:
        if not self.unpaired:
            return ""
        return unpaired_note(self.unpaired)


@dataclass(frozen=True)
class StatusView:
    flag: Mapping[str, Any]          # rollout.store.flags.flag_to_json: the flag as the audit log keeps it
    rollout: RolloutView | None

    def to_json(self) -> dict[str, Any]:
        return {"flag": dict(self.flag), "rollout": self.rollout.to_json() if self.rollout else None}


def rollout_status(session: Session, flag_key: str, *, namespace: str = "default",
                   now: datetime | None = None) -> StatusView:
    """The flag, its latest rollout, the last verdict per metric and what waits for a human."""
    now = now or utcnow()
    flag = flag_store.get_flag(session, flag_key, namespace=namespace)
    record = rollout_store.latest_rollout(session, flag_key, namespace=namespace)
    if record is None:
        return StatusView(flag_store.flag_to_json(flag), None)
    plan = load_plan(record.plan)
    state = record.state
    last = rollout_store.decisions(session, record.id, limit=1)
    check = None
    if last:
        d = last[0]
        details = d.details or {}
        check = CheckView(d.sequence, d.created_at, d.verdict, d.action, d.reason,
                          tuple(MetricLine.from_json(m) for m in details.get("metrics", [])),
                          tuple(HealthLine(h["name"], h["ok"], h["reason"], dict(h)) for h in details.get("health", [])),
                          tuple(MetricLine.from_json(m) for m in details.get("strata", [])))
    from rollout.app.evals import gate_rows

    evals = {plan.stages[i].name: gate_rows(session, record.id, i, plan)
             for i in range(len(plan.stages)) if plan.stages[i].eval is not None and i <= max(state.stage_index, 0)}
    judges, cost = _spend(session, record, plan, now)
    view = RolloutView(
        id=record.id, status=state.status.value, lost=record.lost(now), stage_index=state.stage_index,
        stage=stage_name(plan, state.stage_index) if state.stage_index < len(plan.stages) else None,
        stages=tuple(s.name for s in plan.stages), reason=state.reason,
        pending_approval=stage_name(plan, state.waiting_for) if state.status.waiting else None,
        started_by=record.started_by, started_at=record.started_at, ended_at=record.ended_at,
        flow_run_id=record.flow_run_id, lease_owner=record.lease_owner, lease_expires_at=record.lease_expires_at,
        last_check=check, eval=evals, window=describe_window(plan, now), judges=judges, cost=cost,
        unpaired=int((last[0].details or {}).get("unpaired", 0)) if last else 0,
    )
    return StatusView(flag_store.flag_to_json(flag), view)


@dataclass(frozen=True)
class DecisionLine:
    sequence: int
    at: datetime
    stage_index: int
    verdict: str
    action: str
    reason: str

    @property
    def stage_number(self) -> int:
        return stage_number(self.stage_index)


@dataclass(frozen=True)
class ApprovalLine:
    at: datetime
    stage_index: int
    approved: bool
    approver: str
    comment: str

    @property
    def stage_number(self) -> int:
        return stage_number(self.stage_index)


@dataclass(frozen=True)
class AuditLine:
    at: datetime
    actor: str
    action: str
    reason: str


@dataclass(frozen=True)
class HistoryView:
    rollout: int | None
    decisions: tuple[DecisionLine, ...]
    approvals: tuple[ApprovalLine, ...]
    audit: tuple[AuditLine, ...]
    cost: CostView = CostView()

    def to_json(self) -> dict[str, Any]:
        return {
            "rollout": self.rollout, "cost": self.cost.to_json(),
            "decisions": [{"sequence": d.sequence, "at": d.at.isoformat(), "stage_index": d.stage_index,
                           "stage_number": d.stage_number, "verdict": d.verdict, "action": d.action,
                           "reason": d.reason} for d in self.decisions],
            "approvals": [{"at": a.at.isoformat(), "stage_index": a.stage_index, "stage_number": a.stage_number,
                           "approved": a.approved, "approver": a.approver, "comment": a.comment}
                          for a in self.approvals],
            "audit": [{"at": e.at.isoformat(), "actor": e.actor, "action": e.action, "reason": e.reason}
                      for e in self.audit],
        }


def rollout_history(session: Session, flag_key: str, *, namespace: str = "default",
                    now: datetime | None = None) -> HistoryView:
    """Decisions and approvals of the latest rollout, what it cost, and the flag's audit log."""
    record = rollout_store.latest_rollout(session, flag_key, namespace=namespace)
    audit = tuple(AuditLine(e.created_at, e.actor, e.action, e.reason)
                  for e in reversed(flag_store.audit_log(session, flag_key, namespace=namespace, limit=500)))
    if record is None:
        return HistoryView(None, (), (), audit)
    return HistoryView(
        record.id,
        tuple(DecisionLine(d.sequence, d.created_at, d.stage_index, d.verdict, d.action, d.reason)
              for d in rollout_store.decisions(session, record.id)),
        tuple(ApprovalLine(a.created_at, a.stage_index, a.approved, a.approver, a.comment)
              for a in rollout_store.approvals(session, record.id)),
        audit,
        _rollout_cost(session, record, now or utcnow()),
    )


def _rollout_cost(session: Session, record: Any, now: datetime) -> CostView:
    return _spend(session, record, load_plan(record.plan), now)[1]


def _spend(session: Session, record: Any, plan: RolloutPlan, now: datetime) -> tuple[tuple[JudgeState, ...], CostView]:
    """The judges' meters and the rollout's cost per arm and stratum (status and history show both)."""
    judges = judge_states(session, flag_id=record.flag_id, rollout_id=record.id, specs=plan.online_evals, now=now)
    return judges, cost_attribution(session, plan, flag_id=record.flag_id, rollout_id=record.id, judges=judges, now=now)


def tell_if_lost(store: Store, flag_key: str, tell: Callable[[RolloutRecord, str], None], *,
                 now: datetime | None = None) -> bool:
    """Tell (`rollout.lost`) that the flag's rollout has no live controller, once per lost episode.

    The first observer that sees the lease expired tells it; later ones (every `rollout status`, a script
    polling it, other processes) stay quiet until a controller takes over and its lease expires again,
    which is a new episode. `tell(record, reason)` runs inside the transaction that claims the episode, so
    if telling fails nothing is claimed and the next observer tries again: at least once, never per tick.
    True when this call told it.
    """
    now = now or utcnow()
    with store.transaction() as unit:
        record = unit.rollouts.active(flag_key)
        if record is None or not record.lost(now) or not unit.rollouts.mark_lost_told(record):
            return False
        since = record.lease_expires_at.isoformat() if record.lease_expires_at else "it started"
        tell(record, f"no controller renewed the lease since {since}")
    return True


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


__all__ = ["BudgetLine", "CheckView", "CostLine", "CostView", "HistoryView", "MetricLine", "RolloutView", "StatusView",
           "cost_attribution", "rollout_history", "rollout_status", "tell_if_lost"]
