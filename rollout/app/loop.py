"""The one check loop and the one abort path, shared by the foreground runner and the Prefect flow.

    ending = drive(run, Hooks(sleep=..., wait_for_human=..., on_check=..., emit=...))

The loop checks, shows, waits and checks again until the rollout ends or
another controller takes it over. A database fault never ends it: each check
is retried with the one retry policy (rollout.store.retry) for as long as it
takes, because giving up would leave users on the candidate with nobody
judging it. Anything else that stops the loop while the rollout is active
(Ctrl-C, SIGTERM, a bug) goes through `abort`, which applies the plan's
on_abort if this controller still owns the rollout; if the database cannot be
reached even for that, the controller leaves its lease to expire, so the next
controller takes over and `rollout status` shows the rollout as lost.

The caller passes in how it waits and shows (the flow: Prefect tasks, pauses,
artifacts, events); nothing here imports Prefect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from tenacity import RetryCallState

from rollout.app.online_evals import grade_online
from rollout.app.reconcile import CONTROLLER, CheckResult, RolloutRun, SystemClock, check, lease_for, run_eval_stage
from rollout.core.controller import Action, Emit, Event, RolloutState, Status
from rollout.core.plan import Policy, RolloutPlan
from rollout.ports import Clock, Store
from rollout.store.retry import is_transient, retrying

log = logging.getLogger("rollout.controller")


def _log_event(run: RolloutRun, event: Emit) -> None:
    log.info("rollout %s: %s %s", run.plan.flag, event.event.value, dict(event.payload))


@dataclass
class Hooks:
    """How a controller checks, waits, shows and tells. Defaults fit a plain process."""

    check: Callable[[RolloutRun, str | None], CheckResult] = lambda run, failure: check(run, eval_failure=failure)
    # One round of the plan's online judges, before each check, so the grades it writes are judged at once.
    grade: Callable[[RolloutRun], Any] = lambda run: grade_online(run)
    run_eval: Callable[[RolloutRun, int], tuple[str | None, int]] = run_eval_stage
    sleep: Callable[[float], None] | None = None          # None: the run's clock
    # At an approval gate or a hold. None: sleep one interval (the answer is read from the database).
    wait_for_human: Callable[[RolloutRun, CheckResult], None] | None = None
    on_check: Callable[[RolloutRun, CheckResult], None] = lambda run, result: None
    emit: Callable[[RolloutRun, Emit], None] = _log_event
    on_fault: Callable[[BaseException, float], None] = field(
        default=lambda exc, wait: log.warning("check failed (%s); trying again in %.1f s", exc, wait))


@dataclass(frozen=True)
class Ending:
    """How a controller stopped."""

    state: RolloutState          # the rollout's last known state
    owned: bool = True           # False: another controller holds the rollout; this one touched nothing
    lost: bool = False           # on_abort could not be applied (database unreachable); the lease will expire

    @property
    def reason(self) -> str:
        return self.state.reason


def drive(run: RolloutRun, hooks: Hooks | None = None) -> Ending:
    """Check until the rollout ends; on any interruption while it is active, the plan's on_abort."""
    hooks = hooks or Hooks()
    last: RolloutState | None = None
    try:
        eval_failure: str | None = None
        while True:
            _grade(run, hooks)
            result = check_riding_out_faults(run, hooks, eval_failure)
            eval_failure = None
            last = result.step.state
            hooks.on_check(run, result)
            _flush_events(run, hooks)
            if not result.owned:
                log.warning("another controller owns rollout #%s of %s now; stopping without touching it",
                            run.rollout_id, run.plan.flag)
                return Ending(last, owned=False)
            if not last.status.active:
                return Ending(last)
            eval_failure = _wait(run, hooks, result)
    except KeyboardInterrupt:
        return abort_run(run, "interrupted (Ctrl-C or SIGTERM)", hooks, last)
    except Exception as exc:
        abort_run(run, f"the controller failed: {type(exc).__name__}: {exc}", hooks, last)
        raise


def check_riding_out_faults(run: RolloutRun, hooks: Hooks, eval_failure: str | None = None) -> CheckResult:
    """One check, retried through any database fault for as long as it lasts (the lease may expire meanwhile:
    then another controller may take over, and this one's next check sees that and stops)."""
    sleep = hooks.sleep or run.clock.sleep

    def tell(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        if exc is not None:
            hooks.on_fault(exc, wait)

    for attempt in retrying(sleep=sleep, before_sleep=tell,
                            maximum=max(run.plan.check_interval.total_seconds(), 1.0)):
        with attempt:
            return hooks.check(run, eval_failure)
    raise AssertionError("unreachable: retrying() without bounds retries for ever")


def _wait(run: RolloutRun, hooks: Hooks, result: CheckResult) -> str | None:
    """Until the next check: run an eval, wait for a human, or sleep. Returns why an eval could not run."""
    sleep = hooks.sleep or run.clock.sleep
    state, interval = result.step.state, run.plan.check_interval.total_seconds()
    if state.status is Status.EVALUATING:
        failure, written = hooks.run_eval(run, state.stage_index)
        if written == 0 and failure is None:
            sleep(interval)
        return failure  # the next check judges the gate, or fails it with this reason
    if state.status.waiting and not result.conflict and hooks.wait_for_human is not None:
        hooks.wait_for_human(run, result)
    elif result.step.action is not Action.ENTER_STAGE:
        sleep(interval)
    return None


def _grade(run: RolloutRun, hooks: Hooks) -> None:
    if not run.plan.online_evals:
        return
    try:
        hooks.grade(run)
    except Exception as exc:  # noqa: BLE001 - grading informs the judge; it must never stop the rollout
        log.warning("online judges of %s failed this round: %s", run.plan.flag, exc)


def _flush_events(run: RolloutRun, hooks: Hooks) -> None:
    events, run.events[:] = list(run.events), []
    for event in events:
        try:
            hooks.emit(run, event)
        except Exception as exc:  # noqa: BLE001 - telling people must never stop a rollout
            log.warning("could not emit %s: %s", event.event.value, exc)


# --- the one abort path ----------------------------------------------------------------------

def abort_run(run: RolloutRun, reason: str, hooks: Hooks | None = None,
              last: RolloutState | None = None) -> Ending:
    """The plan's on_abort for this controller's rollout (see `abort`), with its event."""
    hooks = hooks or Hooks()
    state = abort(run.store, run.plan, owner=run.owner, reason=reason, rollout_id=run.rollout_id, clock=run.clock,
                  deadline=run.lease_for.total_seconds())
    if state is None:
        lost = replace(last or RolloutState(), reason=f"{reason}; the database could not be reached, so on_abort "
                                                     "was not applied: the lease will expire and the next "
                                                     "controller takes over")
        run.events.append(Emit(Event.LOST, {"reason": lost.reason}))
        _flush_events(run, hooks)
        return Ending(lost, lost=True)
    if state.status is Status.ABORTED:
        run.events.append(Emit(Event.ABORTED, {"reason": state.reason, "on_abort": run.plan.on_abort.value}))
        _flush_events(run, hooks)
    return Ending(state)


def abort(store: Store, plan: RolloutPlan, *, owner: str, reason: str, rollout_id: int | None = None,
          clock: Clock | None = None, deadline: float | None = None) -> RolloutState | None:
    """Mark the rollout aborted and apply the plan's on_abort, if `owner` still owns it.

    `rollout_id` None: the flag's active rollout (a Prefect hook knows only the flag).
    Returns the rollout's state afterwards (unchanged if someone else owns it), or
    None when the database could not be reached within `deadline` seconds (default:
    one lease), in which case nothing was changed and the lease is left to expire.
    """
    clock = clock or SystemClock()
    # The deadline is read on the controller's clock (tenacity's own would use the wall clock).
    until = clock.now() + timedelta(seconds=deadline if deadline is not None else lease_for(plan).total_seconds())
    try:
        for attempt in retrying(sleep=clock.sleep, retry_on=lambda exc: is_transient(exc) and clock.now() < until):
            with attempt:
                return _abort_once(store, plan, owner=owner, reason=reason, rollout_id=rollout_id)
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning("rollout of %s: could not apply on_abort (%s): %s; leaving the lease to expire so the next "
                    "controller takes over", plan.flag, reason, exc)
        return None
    raise AssertionError("unreachable")


def _abort_once(store: Store, plan: RolloutPlan, *, owner: str, reason: str,
                rollout_id: int | None) -> RolloutState | None:
    with store.transaction() as unit:
        record = (unit.rollouts.get(rollout_id) if rollout_id is not None else unit.rollouts.active(plan.flag))
        if record is None:
            return RolloutState(reason="the flag has no active rollout; nothing to abort")
        if record.lease_owner != owner or not record.state.status.active:
            return record.state  # a refused duplicate, or a rollout someone else now drives: hands off
        if unit.rollouts.abort(record.id, owner=owner, reason=reason) and plan.on_abort is Policy.ROLLBACK:
            unit.flags.rollback(plan.flag, actor=CONTROLLER, reason=f"on_abort: {reason}")
        return unit.rollouts.get(record.id).state


__all__ = ["Ending", "Hooks", "abort", "abort_run", "check_riding_out_faults", "drive"]
