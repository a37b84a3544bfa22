"""In-memory fakes of every port in rollout.ports, so the controller loop runs in tests without a database.

    store = InMemoryStore()
    clock = FakeClock()
    evidence = ScriptedEvidence(lambda plan, rollout, now: passing_verdict(plan))
    ending = run_foreground(store, document, actor="alice", evidence=evidence, clock=clock)

They keep the rules the SQL store keeps (one active rollout per flag, leases,
owner-only writes, compare-and-set on the flag version, a transaction that
commits all or nothing) and can fail on demand: `store.fail_next(3)` makes the
next three transactions raise StoreUnavailableError, as a database blip would.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rollout.core.controller import ApprovalInput, Observation, RolloutState, Status
from rollout.core.flag import BUCKETS, FlagState, Phase
from rollout.core.plan import EvalSpec, RolloutPlan
from rollout.core.records import ApprovalRecord, DecisionRecord, RolloutRecord
from rollout.core.stats import Code, Decision, HealthCheck, MetricResult, MetricVerdict, Verdict
from rollout.errors import (
    FlagNotFoundError,
    InvalidInputError,
    InvalidPlanError,
    RolloutActiveError,
    StoreUnavailableError,
    VersionConflictError,
)


class FakeClock:
    """rollout.ports.Clock: time stands still until someone sleeps; sleeping moves it on at once."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self._now += timedelta(seconds=seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


@dataclass
class _Data:
    """Everything the fake store holds; a transaction works on a copy and swaps it in on commit."""

    flags: dict[str, FlagState] = field(default_factory=dict)
    rollouts: dict[int, RolloutRecord] = field(default_factory=dict)
    decisions: dict[int, list[DecisionRecord]] = field(default_factory=dict)
    approvals: dict[int, list[ApprovalRecord]] = field(default_factory=dict)
    audit: list[tuple[str, str, str, str]] = field(default_factory=list)   # (flag, actor, action, reason)
    lost_told: dict[int, datetime] = field(default_factory=dict)   # rollout id -> the lost episode last told

    def copy(self) -> _Data:
        # The records are frozen, so copying the containers is enough for all-or-nothing commits.
        return _Data(dict(self.flags), dict(self.rollouts), {k: list(v) for k, v in self.decisions.items()},
                     {k: list(v) for k, v in self.approvals.items()}, list(self.audit), dict(self.lost_told))


class InMemoryStore:
    """rollout.ports.Store in memory, for one namespace."""

    def __init__(self, namespace: str = "default", clock: FakeClock | None = None) -> None:
        self.namespace = namespace
        self.clock = clock or FakeClock()
        self.data = _Data()
        self.transactions = 0          # begun, including the ones that failed
        self._failures: list[BaseException] = []
        self._lock = threading.RLock()

    # --- faults ---------------------------------------------------------------------------------
    def fail_next(self, count: int, error: Callable[[], BaseException] | None = None) -> None:
        """The next `count` transactions raise (StoreUnavailableError unless `error` says otherwise)."""
        make = error or (lambda: StoreUnavailableError("the database could not be reached (fake outage)"))
        with self._lock:
            self._failures.extend(make() for _ in range(count))

    def heal(self) -> None:
        """The outage ends: no more injected failures."""
        with self._lock:
            self._failures.clear()

    @property
    def pending_failures(self) -> int:
        return len(self._failures)

    @contextmanager
    def transaction(self) -> Iterator[_Unit]:
        with self._lock:
            self.transactions += 1
            if self._failures:
                raise self._failures.pop(0)
            working = self.data.copy()
            yield _Unit(working, self)
            self.data = working   # reached only without an error: commit

    # --- reading, for tests ---------------------------------------------------------------------
    def flag(self, key: str) -> FlagState:
        return self.data.flags[key]

    def rollout(self, rollout_id: int) -> RolloutRecord:
        return self.data.rollouts[rollout_id]

    def decisions_of(self, rollout_id: int) -> list[DecisionRecord]:
        return list(self.data.decisions.get(rollout_id, []))


class _Unit:
    def __init__(self, data: _Data, store: InMemoryStore) -> None:
        self.flags = _Flags(data, store)
        self.rollouts = _Rollouts(data, store)


class _Flags:
    def __init__(self, data: _Data, store: InMemoryStore) -> None:
        self._d, self._store = data, store

    def get(self, key: str) -> FlagState:
        try:
            return self._d.flags[key]
        except KeyError:
            raise FlagNotFoundError(key) from None

    def _change(self, key: str, expected_version: int | None, actor: str, action: str, reason: str,
                **values: Any) -> FlagState:
        state = self.get(key)
        if expected_version is not None and state.version != expected_version:
            raise VersionConflictError(f"flag {key!r} is at version {state.version}, not {expected_version}")
        new = replace(state, version=state.version + 1, **values)
        self._d.flags[key] = new
        self._d.audit.append((key, actor, action, reason))
        return new

    def set_shadow(self, key: str, basis_points: int, *, actor: str, reason: str,
                   expected_version: int | None = None) -> FlagState:
        names = self.get(key).stratum_names
        return self._change(key, expected_version, actor, "flag.shadow", reason, phase=Phase.SHADOW,
                            shadow_bp=basis_points, allocations={n: 0 for n in names})

    def set_allocations(self, key: str, allocations: Mapping[str, int], *, actor: str, reason: str,
                        expected_version: int | None = None) -> FlagState:
        return self._change(key, expected_version, actor, "flag.set_allocations", reason, phase=Phase.RAMPING,
                            allocations=dict(allocations))

    def promote(self, key: str, *, actor: str, reason: str, expected_version: int | None = None) -> FlagState:
        names = self.get(key).stratum_names
        return self._change(key, expected_version, actor, "flag.promote", reason, phase=Phase.PROMOTED,
                            shadow_bp=0, allocations={n: BUCKETS for n in names})

    def rollback(self, key: str, *, actor: str, reason: str, expected_version: int | None = None) -> FlagState:
        if not reason.strip():
            raise InvalidInputError("a rollback needs a reason")
        names = self.get(key).stratum_names
        new = self._change(key, expected_version, actor, "flag.rollback", reason, phase=Phase.ROLLED_BACK,
                           shadow_bp=0, allocations={n: 0 for n in names})
        now = self._store.clock.now()
        for rid, record in self._d.rollouts.items():   # like SQL: a rollback ends the flag's active rollout
            if record.flag_key == key and record.state.status.active:
                state = replace(record.state, status=Status.ROLLED_BACK, waiting_for=None,
                                reason=f"rolled back by {actor}: {reason}")
                self._d.rollouts[rid] = replace(record, state=state, ended_at=now, lease_expires_at=None)
        return new

    def last_rollback(self, key: str) -> str | None:
        found = [f"{actor}: {reason}" for flag, actor, action, reason in self._d.audit
                 if flag == key and action == "flag.rollback"]
        return found[-1] if found else None


class _Rollouts:
    def __init__(self, data: _Data, store: InMemoryStore) -> None:
        self._d, self._store = data, store

    def _now(self) -> datetime:
        return self._store.clock.now()

    def start(self, plan: RolloutPlan, document: dict[str, Any], *, actor: str, owner: str, lease_for: timedelta,
              flow_run_id: str | None = None) -> RolloutRecord:
        now = self._now()
        flag = self._d.flags.get(plan.flag)
        if flag is None:
            flag = FlagState(key=plan.flag, salt=f"salt-{plan.flag}", baseline=plan.baseline,
                             candidate=plan.candidate, strata=plan.strata,
                             allocations={n: 0 for n in plan.stratum_names},
                             payloads={plan.baseline: None, plan.candidate: None}, namespace=self._store.namespace)
            self._d.flags[plan.flag] = flag
        elif flag.baseline != plan.baseline:
            raise InvalidPlanError([f"baseline: the flag's baseline is {flag.baseline!r}, "
                                    f"the plan says {plan.baseline!r}"])
        existing = self.active(plan.flag)
        if existing is not None:
            if existing.lease_owner == owner:
                return existing
            if not existing.lost(now):
                raise RolloutActiveError(f"flag {plan.flag!r} already has an active rollout (#{existing.id})")
            if existing.plan != document:
                raise RolloutActiveError(f"flag {plan.flag!r} has a lost rollout (#{existing.id}) of a different plan")
            taken = replace(existing, lease_owner=owner, lease_expires_at=now + lease_for, flow_run_id=flow_run_id)
            self._d.rollouts[existing.id] = taken
            self._d.audit.append((plan.flag, actor, "rollout.take_over", existing.lease_owner or ""))
            return taken
        rollout_id = max(self._d.rollouts, default=0) + 1
        record = RolloutRecord(rollout_id, 1, plan.flag, self._store.namespace, copy.deepcopy(document),
                               RolloutState(), flow_run_id, owner, now + lease_for, actor, now, None)
        self._d.rollouts[rollout_id] = record
        self._d.audit.append((plan.flag, actor, "rollout.start", ""))
        return record

    def get(self, rollout_id: int) -> RolloutRecord:
        try:
            return self._d.rollouts[rollout_id]
        except KeyError:
            raise FlagNotFoundError(f"rollout {rollout_id}") from None

    def active(self, flag_key: str) -> RolloutRecord | None:
        return next((r for r in self._d.rollouts.values() if r.flag_key == flag_key and r.state.status.active), None)

    def of_flow_run(self, flow_run_id: str) -> RolloutRecord | None:
        found = [r for r in self._d.rollouts.values() if r.flow_run_id == flow_run_id]
        return found[-1] if found else None

    def _owned(self, rollout_id: int, owner: str) -> RolloutRecord | None:
        record = self._d.rollouts.get(rollout_id)
        return record if record is not None and record.lease_owner == owner and record.state.status.active else None

    def renew_lease(self, rollout_id: int, *, owner: str, lease_for: timedelta, now: datetime) -> bool:
        record = self._owned(rollout_id, owner)
        if record is None:
            return False
        self._d.rollouts[rollout_id] = replace(record, lease_expires_at=now + lease_for)
        return True

    def save_state(self, rollout_id: int, state: RolloutState, *, owner: str, now: datetime) -> bool:
        record = self._owned(rollout_id, owner)
        if record is None:
            return False
        ended = {} if state.status.active else {"ended_at": now, "lease_expires_at": None}
        self._d.rollouts[rollout_id] = replace(record, state=state, **ended)
        return True

    def abort(self, rollout_id: int, *, owner: str, reason: str) -> bool:
        record = self._owned(rollout_id, owner)
        if record is None:
            return False
        state = RolloutState(Status.ABORTED, record.state.stage_index, record.state.stage_started_at, None, None,
                             reason)
        return self.save_state(rollout_id, state, owner=owner, now=self._now())

    def mark_lost_told(self, rollout: RolloutRecord) -> bool:
        current = self._d.rollouts.get(rollout.id)
        episode = rollout.lease_expires_at or rollout.started_at
        if (current is None or not current.state.status.active or current.lease_expires_at != rollout.lease_expires_at
                or self._d.lost_told.get(rollout.id) == episode):
            return False
        self._d.lost_told[rollout.id] = episode
        return True

    def approvals(self, rollout_id: int) -> Sequence[ApprovalInput]:
        return [ApprovalInput(a.stage_index, a.approved, a.approver, a.comment)
                for a in self._d.approvals.get(rollout_id, [])]

    def record_approval(self, rollout: RolloutRecord, *, stage_index: int, approved: bool, approver: str,
                        comment: str = "") -> ApprovalRecord:
        approver = approver.strip()
        if not approver:
            raise InvalidInputError("an approval needs the approver's name")
        record = ApprovalRecord(stage_index, approved, approver, comment, self._now())
        self._d.approvals.setdefault(rollout.id, []).append(record)
        return record

    def record_decision(self, rollout_id: int, *, stage_index: int, verdict: str, action: str, reason: str,
                        details: Any) -> int:
        kept = self._d.decisions.setdefault(rollout_id, [])
        sequence = len(kept) + 1
        kept.append(DecisionRecord(sequence, stage_index, verdict, action, reason, copy.deepcopy(details),
                                   self._now()))
        return sequence

    def decisions(self, rollout_id: int, *, limit: int | None = None) -> Sequence[DecisionRecord]:
        kept = self._d.decisions.get(rollout_id, [])
        return list(kept[-limit:] if limit else kept)


# --- evidence -------------------------------------------------------------------------------------

Script = Callable[[RolloutPlan, RolloutRecord, datetime], Observation]


class ScriptedEvidence:
    """rollout.ports.EvidenceSource that answers what the test's script says for each check."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.calls = 0

    def observe(self, plan: RolloutPlan, rollout: RolloutRecord, now: datetime,
                eval_failure: str | None = None) -> Observation:
        self.calls += 1
        return self.script(plan, rollout, now)


def verdict_of(decision: Decision, plan: RolloutPlan, *, n: int = 1_000, estimate: float = 0.0,
               reason: str | None = None) -> Verdict:
    """A judge's verdict with one result per plan metric, as the judge would give it."""
    metric_verdict = {Decision.PASS: MetricVerdict.NON_INFERIOR, Decision.ROLLBACK: MetricVerdict.HARM}.get(
        decision, MetricVerdict.INCONCLUSIVE)
    results = tuple(
        MetricResult(metric=m.name, stratum=None, verdict=metric_verdict, code=Code.OK, estimate=estimate,
                     lower=estimate - 0.01, upper=estimate + 0.01, margin=m.margin, n_baseline=n, n_candidate=n,
                     baseline_value=0.1, candidate_value=0.1 + estimate, p_value=0.5, e_value=1.0,
                     alpha=plan.alpha, reason=f"{m.name}: {metric_verdict.value}")
        for m in plan.metrics)
    return Verdict(decision, reason or f"{decision.value} on every metric", results, (),
                   (HealthCheck("sample_ratio", True, Code.OK, "allocation as planned"),))


def passing(plan: RolloutPlan, rollout: RolloutRecord, now: datetime) -> Observation:
    """Evidence that proves the candidate no worse, with plenty of samples."""
    return Observation(verdict_of(Decision.PASS, plan), stage_samples=100_000)


def harmful(plan: RolloutPlan, rollout: RolloutRecord, now: datetime) -> Observation:
    """Evidence that proves harm beyond the margin."""
    return Observation(verdict_of(Decision.ROLLBACK, plan, estimate=0.2, reason="error: harm proven"),
                       stage_samples=100_000)


class FakeEvalRunner:
    """rollout.ports.EvalRunner that runs nothing and reports what it was told."""

    def __init__(self, failure: str | None = None, written: int = 0) -> None:
        self.failure, self.written, self.runs = failure, written, 0

    def run(self, rollout_id: int, stage_index: int, spec: EvalSpec, *,
            variants: tuple[str, str]) -> tuple[str | None, int]:
        self.runs += 1
        return self.failure, self.written


class ListOutcomeSink:
    """rollout.ports.OutcomeSink that keeps what it is given."""

    def __init__(self) -> None:
        self.entries: list[Any] = []

    def write(self, entries: Sequence[Any]) -> int:
        self.entries.extend(entries)
        return len(entries)


__all__ = ["FakeClock", "FakeEvalRunner", "InMemoryStore", "ListOutcomeSink", "ScriptedEvidence", "harmful",
           "passing", "verdict_of"]
