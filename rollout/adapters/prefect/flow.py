"""The rollout flow: Prefect drives a plan from shadow to full release, one check at a time.

A thin loop around `rollout.app.reconcile.check`: each check re-reads the
database, asks the judge and the pure controller, applies the effects and
writes a decision, all in one transaction (a task with retries). Between
checks it sleeps; at an approval gate it pauses for a human with a form in the
Prefect UI while a watchdog thread keeps judging, so proven harm rolls back
even while the gate waits.
"""

from __future__ import annotations

import contextvars
import re
import threading
import time
from typing import Any, Literal

from prefect import flow, get_run_logger, pause_flow_run, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.context import get_run_context
from prefect.events import emit_event
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from prefect.states import Completed, Failed, State
from prefect.tasks import exponential_backoff
from pydantic import Field

from rollout.core.controller import Status
from rollout.adapters.prefect.forms import plan_from_parameters, plan_or_failure
from rollout.app.plans import PlanSource
from rollout.app.reconcile import CONTROLLER, CheckResult, RolloutRun, check, claim, run_eval_stage
from rollout.store import flags as flag_store
from rollout.store import rollouts as rollout_store
from rollout.store.db import make_engine, transaction


class StageApproval(RunInput):
    """The form a release manager fills in (Prefect UI, `rollout approve`, or the HTTP API).

    No defaults on purpose: an empty submit must not count as an approval.
    """

    decision: Literal["approve", "reject"] = Field(description="Go on to the next stage, or roll back")
    approver: str = Field(min_length=1, max_length=200, description="Your name; kept in the audit log")
    comment: str = Field(default="", max_length=2000)


INTERRUPT = "rollout-controller"
"""The approver the watchdog uses when it resumes a paused run itself (harm, timeout, answer by CLI)."""


@task(name="check", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=0.5), retry_jitter_factor=0.2,
      persist_result=False)
def check_task(run: RolloutRun, eval_failure: str | None = None) -> CheckResult:
    return check(run, eval_failure=eval_failure)


@task(name="eval", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=1),
      retry_jitter_factor=0.2, persist_result=False)
def eval_task(run: RolloutRun, stage_index: int) -> tuple[str | None, int]:
    """Both variants on every case not yet stored (a retry or a restarted flow skips what already ran)."""
    return run_eval_stage(run, stage_index)


# validate_parameters=False: the plan is checked by plan_or_failure, which names every problem in words
# (the server already enforced the parameter schema); Prefect's own check would end in a traceback.
@flow(name="rollout", log_prints=True, persist_result=False, validate_parameters=False)
def run_rollout(plan: PlanSource, started_by: str = "prefect-ui", namespace: str = "default",
                database_url: str | None = None) -> Any:
    """Run a rollout plan until it is promoted, rolled back or held.

    Args:
        plan: The plan: fill in the form, paste its YAML, or pick a plan registered with `rollout plan register`.
        started_by: Who starts it; kept in the audit log.
        namespace: The flags' namespace (tenant or environment).
        database_url: The rollout database; empty: ROLLOUT_DATABASE_URL.
    """
    logger = get_run_logger()
    context = get_run_context()
    flow_run_id = str(context.flow_run.id)  # type: ignore[union-attr]
    engine = make_engine(database_url)
    resolved = plan_or_failure(plan, engine, namespace=namespace)
    if isinstance(resolved, State):
        engine.dispose()
        return resolved
    rollout_plan, document = resolved
    run = claim(engine, rollout_plan, document, owner=flow_run_id, actor=started_by, flow_run_id=flow_run_id,
                namespace=namespace)
    logger.info("rollout #%s of %s: %d stages, checking every %s", run.rollout_id, rollout_plan.flag,
                len(rollout_plan.stages), rollout_plan.check_interval)
    progress = create_progress_artifact(0.0, key=_key(rollout_plan.flag, "progress"),
                                        description=f"Rollout of {rollout_plan.flag}")
    try:
        eval_failure: str | None = None
        while True:
            try:
                result = check_task(run, eval_failure)
            except Exception as exc:  # noqa: BLE001 - retries spent (database down?): keep trying, never give up the flag
                logger.warning("check failed after retries, trying again in %s: %s", rollout_plan.check_interval, exc)
                time.sleep(rollout_plan.check_interval.total_seconds())
                continue
            eval_failure = None
            _show(run, result, progress)
            state = result.step.state
            if not result.owned:
                logger.warning("another controller owns rollout #%s now; stopping without touching it", run.rollout_id)
                return Completed(message="another controller took over")
            if not state.status.active:
                break
            if state.status is Status.EVALUATING:
                eval_failure, written = eval_task(run, state.stage_index)
                _show_eval(run, state.stage_index)
                if written == 0 and eval_failure is None:
                    time.sleep(rollout_plan.check_interval.total_seconds())
            elif state.status.waiting and not result.conflict:
                _wait_for_human(run, result)
            elif result.step.action != "enter_stage":
                time.sleep(rollout_plan.check_interval.total_seconds())
    finally:
        engine.dispose()
    if state.status is Status.ROLLED_BACK:
        return Failed(name="RolledBack", message=state.reason)
    if state.status is Status.ABORTED:
        return Failed(name="Aborted", message=state.reason)
    return Completed(message=state.reason)


# --- waiting for a human ------------------------------------------------------------------

def _wait_for_human(run: RolloutRun, result: CheckResult) -> None:
    """Pause with the approval form; meanwhile a watchdog keeps checking, and wakes the run if it must."""
    logger = get_run_logger()
    state = result.step.state
    stage = run.plan.stages[state.waiting_for] if state.waiting_for is not None and state.waiting_for < len(run.plan.stages) else None
    interrupted = threading.Event()
    stop = threading.Event()
    flow_run_id = run.owner
    # Prefect's settings (the API URL among them) may live in context variables,
    # which a new thread does not inherit; run the watchdog in a copy of ours.
    context = contextvars.copy_context()
    watchdog = threading.Thread(target=context.run, args=(_watch, run, state.status, stop, interrupted, flow_run_id),
                                name="rollout-watchdog", daemon=True)
    watchdog.start()
    description = _approval_text(run, result, stage.name if stage else "completion")
    try:
        answer = pause_flow_run(
            wait_for_input=StageApproval.with_initial_data(description=description),
            timeout=int(run.plan.approval_timeout.total_seconds()) + 7 * 86400,
            poll_interval=1,
            key=f"approval-{run.rollout_id}-{state.waiting_for}-{result.sequence}",
        )
    finally:
        stop.set()
        watchdog.join(timeout=30)
    if interrupted.is_set() or answer is None or answer.approver == INTERRUPT:
        return  # the next check sees why (harm, timeout, an answer given through the CLI or HTTP)
    with transaction(run.engine) as s:
        record = rollout_store.get_rollout(s, run.rollout_id)
        if record.state.status.waiting and record.state.waiting_for == state.waiting_for:
            rollout_store.record_approval(s, record, stage_index=state.waiting_for, approved=answer.decision == "approve",
                                          approver=answer.approver, comment=answer.comment)
    logger.info("%s %s stage %s", answer.approver, "approved" if answer.decision == "approve" else "rejected",
                stage.name if stage else "")


def _watch(run: RolloutRun, waiting: Status, stop: threading.Event, interrupted: threading.Event,
           flow_run_id: str) -> None:
    """Keep judging while the run is paused; resume it when the controller moved on by itself."""
    from prefect.flow_runs import resume_flow_run

    interval = run.plan.check_interval.total_seconds()
    while not stop.wait(interval):
        try:
            result = check(run)
        except Exception as exc:  # noqa: BLE001 - the database may be down; try again next interval
            print(f"watchdog check failed, retrying: {exc}")
            continue
        if result.step.state.status is waiting and result.step.action in ("wait", "continue"):
            continue
        interrupted.set()
        for _ in range(10):
            try:
                resume_flow_run(flow_run_id, run_input={"decision": "reject", "approver": INTERRUPT,
                                                        "comment": result.step.reason[:2000]})
                return
            except Exception:  # noqa: BLE001 - not paused yet, or the API blinked
                if stop.wait(1):
                    return
        return


def _approval_text(run: RolloutRun, result: CheckResult, stage_name: str) -> str:
    lines = [f"## Approve stage **{stage_name}** of `{run.plan.flag}`?", "",
             f"{result.step.reason}", "", "Evidence so far (candidate minus baseline; positive = worse):", "",
             "| metric | estimate | bounds | n baseline | n candidate | verdict |", "|---|---|---|---|---|---|"]
    for row in _metric_rows(result):
        lines.append("| " + " | ".join(str(row[k]) for k in ("metric", "estimate", "bounds", "n_baseline",
                                                               "n_candidate", "verdict")) + " |")
    lines += ["", "Choose **approve** to go on or **reject** to roll back. The judge keeps watching: proven harm "
              "rolls back even while this form waits."]
    return "\n".join(lines)


# --- what the UI shows ----------------------------------------------------------------------

def _key(flag: str, what: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", f"rollout-{flag}-{what}".lower())


def _metric_rows(result: CheckResult) -> list[dict[str, Any]]:
    if result.verdict is None:
        return []
    rows = []
    for r in result.verdict.metrics:
        rows.append({"metric": r.metric, "estimate": _num(r.estimate), "bounds": f"[{_num(r.lower)}, {_num(r.upper)}]",
                     "margin": _num(r.margin), "n_baseline": r.n_baseline, "n_candidate": r.n_candidate,
                     "verdict": r.verdict.value, "reason": r.reason})
    return rows


def _num(x: float) -> str:
    return "–" if x != x else f"{x:+.4g}"


def _show(run: RolloutRun, result: CheckResult, progress_id: Any) -> None:
    """Progress, the check's table and its summary in the UI; Prefect events for automations."""
    plan = run.plan
    state = result.step.state
    done = {Status.PROMOTED: 1.0}.get(state.status, max(state.stage_index, 0) / len(plan.stages))
    try:
        update_progress_artifact(progress_id, done * 100,
                                 description=f"{plan.flag}: {state.status.value}, stage "
                                             f"{state.stage_index + 1} of {len(plan.stages)}")
        rows = _metric_rows(result)
        if rows:
            create_table_artifact(rows, key=_key(plan.flag, "verdict"),
                                  description=f"Check {result.sequence}: {result.step.action}")
        with transaction(run.engine) as s:
            flag = flag_store.get_flag(s, plan.flag, namespace=run.namespace)
        allocations = ", ".join(f"{n} {flag.allocation(n) / 100:g} %" for n in flag.stratum_names)
        create_markdown_artifact(
            f"### {plan.flag}: {state.status.value}\n\n**{result.step.action}**: {result.step.reason}\n\n"
            f"Stage {state.stage_index + 1} of {len(plan.stages)}; flag phase {flag.phase.value}, "
            f"allocations: {allocations}\n", key=_key(plan.flag, "summary"))
    except Exception as exc:  # noqa: BLE001 - the UI is a view; a failed artifact must not stop a rollout
        print(f"could not update artifacts: {exc}")
    for event in run.events:
        try:
            emit_event(event=event.event, resource={"prefect.resource.id": f"rollout.flag.{plan.flag}",
                                                    "prefect.resource.name": plan.flag},
                       payload={"rollout_id": run.rollout_id, **dict(event.payload)})
        except Exception as exc:  # noqa: BLE001
            print(f"could not emit {event.event}: {exc}")
    run.events.clear()


def _show_eval(run: RolloutRun, stage_index: int) -> None:
    """The eval gate's per-category table in the UI."""
    from rollout.app.evals import gate_rows

    try:
        with transaction(run.engine) as s:
            rows = gate_rows(s, run.rollout_id, stage_index, run.plan)
        if rows:
            create_table_artifact(rows, key=_key(run.plan.flag, "eval"),
                                  description=f"Eval gate {run.plan.stages[stage_index].name}: pass rate per category")
    except Exception as exc:  # noqa: BLE001 - a view only
        print(f"could not show the eval results: {exc}")


# --- cancelled or crashed: the plan's on_abort, only for the run that owns the rollout ------

def _on_abort(flow: Any, flow_run: Any, state: State) -> None:
    params = flow_run.parameters or {}
    owner = str(flow_run.id)
    try:
        plan = plan_from_parameters(params)
    except Exception:  # noqa: BLE001 - a run that never had a valid plan owns nothing
        return
    namespace = params.get("namespace", "default")
    engine = make_engine(params.get("database_url"))
    try:
        with transaction(engine) as s:
            record = rollout_store.active_rollout(s, plan.flag, namespace=namespace)
            if record is None or record.lease_owner != owner:
                return  # a refused duplicate, or a rollout someone else now drives: hands off
            reason = f"flow run {state.name.lower()}: {state.message or 'no message'}"
            rollout_store.abort(s, record.id, owner=owner, reason=reason)
            if plan.on_abort.value == "rollback":
                flag_store.rollback(s, plan.flag, actor=CONTROLLER, reason=f"on_abort: {reason}", namespace=namespace)
    finally:
        engine.dispose()


run_rollout = run_rollout.with_options(on_cancellation=[_on_abort], on_crashed=[_on_abort])
