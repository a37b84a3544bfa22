"""The rollout flow: Prefect drives a plan from shadow to full release, through the one check loop.

The loop (rollout.app.loop.drive) is the foreground runner's too; the flow
only passes in its own hooks: each check is a task, between checks it sleeps,
at an approval gate it pauses for a human with a form in the Prefect UI while
a watchdog thread keeps judging (so proven harm rolls back even while the gate
waits), and every check updates the run's three artifacts (progress, summary,
verdict) in place and sends the rollout's events. If the run stops while the
rollout is active (cancelled, crashed, failed), the loop's one abort path
applies the plan's on_abort.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import threading
import time
from typing import Annotated, Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger, pause_flow_run, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.events import emit_event
from prefect.input import RunInput
from prefect.states import Completed, Failed, State
from pydantic import Field, StringConstraints

from rollout.adapters.prefect.forms import plan_from_parameters, plan_or_failure
from rollout.adapters.prefect.report import bounds_markdown
from rollout.app.approvals import record_answer
from rollout.app.loop import Hooks, abort, drive
from rollout.app.online_evals import GradingRound, grade_online
from rollout.app.plans import PlanSource
from rollout.app.reconcile import CheckResult, RolloutRun, check, claim, run_eval_stage
from rollout.app.status import StatusView, rollout_status
from rollout.app.verdicts import display_rows, number
from rollout.core.controller import Action, Emit, Event, Status
from rollout.core.plan import Policy
from rollout.core.policy import stage_name, stage_number
from rollout.store import rollouts as rollout_store
from rollout.store.db import make_engine
from rollout.store.unit import SqlStore

Approver = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"\S")]


class StageApproval(RunInput):
    """The form a release manager fills in (Prefect UI, `rollout approve`, or the HTTP API).

    No defaults on purpose: an empty submit must not count as an approval. The
    approver must hold a non-blank character, in the schema itself, so the server
    refuses a blank name before the run ever sees it.
    """

    decision: Literal["approve", "reject"] = Field(description="Go on to the next stage, or roll back")
    approver: Approver = Field(description="Your name; kept in the audit log")
    comment: str = Field(default="", max_length=2000)


class _IntendedEndings(logging.Filter):
    """Drops Prefect's "Engine execution exited with unexpected exception" traceback for our intended endings.

    A served run that returns a Failed state (RolledBack, Aborted, Refused) makes
    Prefect's engine log that line at ERROR with a traceback, as if it crashed. The
    flow has already logged the ending in one WARNING line with the reason, so the
    record is dropped when its exception carries an ending this process returned;
    any other failure keeps its traceback.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reasons: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or not str(record.msg).startswith("Engine execution exited"):
            return True
        exc = record.exc_info[1]
        return not (exc is not None and type(exc).__name__ == "FailedRun" and str(exc) in self.reasons)


_ENDINGS = _IntendedEndings()
logging.getLogger("prefect.flow_runs").addFilter(_ENDINGS)


def _ended(name: str, reason: str) -> State:
    """The final state of an intended ending that is not a success; logged once, without a traceback."""
    _ENDINGS.reasons.add(reason)
    return Failed(name=name, message=reason)


INTERRUPT = "rollout-controller"
"""The approver the watchdog uses when it resumes a paused run itself (harm, timeout, answer by CLI)."""


@task(name="check", cache_policy=NO_CACHE, persist_result=False)
def check_task(run: RolloutRun, eval_failure: str | None = None) -> CheckResult:
    """One check; database faults are retried by the loop around it (the one retry policy), not here."""
    return check(run, eval_failure=eval_failure)


@task(name="online-judges", cache_policy=NO_CACHE, persist_result=False)
def grade_task(run: RolloutRun) -> tuple[GradingRound, ...]:
    """One round of the plan's online judges (before each check), visible in the UI beside the checks."""
    return grade_online(run)


@task(name="eval", cache_policy=NO_CACHE, persist_result=False)
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
    store = SqlStore(engine, namespace)
    try:
        refused = _refuse_restart(store, rollout_plan, flow_run_id)
        if refused is not None:
            logger.warning(refused)
            return _ended("Refused", refused)
        run = claim(engine, rollout_plan, document, owner=flow_run_id, actor=started_by, flow_run_id=flow_run_id,
                    namespace=namespace)
        _name_run(flow_run_id, f"{rollout_plan.flag} #{run.rollout_id}")
        logger.info("rollout #%s of %s: %d stages, checking every %s", run.rollout_id, rollout_plan.flag,
                    len(rollout_plan.stages), rollout_plan.check_interval)
        view = _RunPage(run)
        ending = drive(run, Hooks(check=lambda r, failure: check_task(r, failure), grade=lambda r: grade_task(r),
                                  run_eval=_eval_and_show,
                                  sleep=time.sleep, wait_for_human=_wait_for_human, on_check=view.show,
                                  emit=_emit, on_fault=lambda exc, wait: logger.warning(
                                      "check failed (%s); trying again in %.1f s", exc, wait)))
    finally:
        engine.dispose()
    state = ending.state
    if not ending.owned:
        logger.warning("another controller owns rollout #%s now; stopping without touching it", run.rollout_id)
        return Completed(message="another controller took over")
    if ending.lost:
        logger.warning("rollout #%s: %s", run.rollout_id, ending.reason)
        return _ended("Lost", ending.reason)
    # Intended endings: one line with the reason, and a final state named after the ending.
    if state.status is Status.ROLLED_BACK:
        logger.warning("rolled back: %s", state.reason)
        return _ended("RolledBack", state.reason)
    if state.status is Status.ABORTED:
        logger.warning("aborted: %s", state.reason)
        return _ended("Aborted", state.reason)
    logger.info("%s: %s", state.status.value, state.reason)
    return Completed(message=state.reason)


def _refuse_restart(store: SqlStore, plan: Any, flow_run_id: str) -> str | None:
    """A retried run (same flow run id) whose rollout has ended must not start another one from the top."""
    with store.transaction() as unit:
        earlier = unit.rollouts.of_flow_run(flow_run_id)
    if earlier is None or earlier.state.status.active or plan.restart_allowed:
        return None
    return (f"rollout #{earlier.id} of {plan.flag} ended {earlier.state.status.value} ({earlier.state.reason}); "
            "this run will not start another one. Start a new run, or set `restart: allowed` in the plan.")


def _name_run(flow_run_id: str, name: str) -> None:
    """Name the run after the flag and the rollout number (e.g. `ticket-summarizer #3`)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(UUID(flow_run_id), name=name)
    except Exception as exc:  # noqa: BLE001 - a name is a courtesy
        logging.getLogger("rollout.prefect").info("could not rename the flow run: %s", exc)


_LOST_TOLD: set[str] = set()
"""Flow runs (owners) that already sent `rollout.lost` from this process: the loop sends it when it gives up,
and then Prefect runs the failure hook, which tries on_abort once more and must not send it twice."""


def _emit(run: RolloutRun, event: Emit) -> None:
    """A Prefect event on the flag's resource, with the reason in the payload; automations react to it."""
    if event.event is Event.LOST:
        _LOST_TOLD.add(run.owner)
    emit_event(event=event.event.value, resource={"prefect.resource.id": f"rollout.flag.{run.plan.flag}",
                                                  "prefect.resource.name": run.plan.flag},
               payload={"rollout_id": run.rollout_id, **dict(event.payload)})


# --- waiting for a human ------------------------------------------------------------------

def _wait_for_human(run: RolloutRun, result: CheckResult) -> None:
    """Pause with the approval form; meanwhile a watchdog keeps checking, and wakes the run if it must."""
    logger = get_run_logger()
    state = result.step.state
    waiting_for = state.waiting_for
    interrupted = threading.Event()
    stop = threading.Event()
    flow_run_id = run.owner
    # Prefect's settings (the API URL among them) may live in context variables,
    # which a new thread does not inherit; run the watchdog in a copy of ours.
    context = contextvars.copy_context()
    watchdog = threading.Thread(target=context.run, args=(_watch, run, state.status, stop, interrupted, flow_run_id),
                                name="rollout-watchdog", daemon=True)
    watchdog.start()
    description = _approval_text(run, result, stage_name(run.plan, waiting_for) or "?")
    try:
        answer = pause_flow_run(
            wait_for_input=StageApproval.with_initial_data(description=description),
            timeout=int(run.plan.approval_timeout.total_seconds()) + 7 * 86400,
            poll_interval=1,
            key=f"approval-{run.rollout_id}-{waiting_for}-{result.sequence}",
        )
    finally:
        stop.set()
        watchdog.join(timeout=30)
    if interrupted.is_set() or answer is None or answer.approver == INTERRUPT or waiting_for is None:
        return  # the next check sees why (harm, timeout, an answer given through the CLI or HTTP)
    approved = answer.decision == "approve"
    problem = record_answer(run, waiting_for, approved=approved, approver=answer.approver, comment=answer.comment)
    if problem is not None:
        # Never fail the rollout over an answer: ask again, saying why (the next pause shows it).
        run.notice = problem
        logger.warning("%s; asking again", problem)
        return
    run.notice = ""
    logger.info("%s %s stage %s", answer.approver.strip(), "approved" if approved else "rejected",
                stage_name(run.plan, waiting_for))


def _watch(run: RolloutRun, waiting: Status, stop: threading.Event, interrupted: threading.Event,
           flow_run_id: str) -> None:
    """Keep judging while the run is paused; resume it when the controller moved on by itself."""
    from prefect.flow_runs import resume_flow_run

    interval = run.plan.check_interval.total_seconds()
    while not stop.wait(interval):
        try:
            if run.plan.online_evals:
                grade_online(run)  # the judges keep grading while the form waits, so harm they find rolls back
            result = check(run)
        except Exception as exc:  # noqa: BLE001 - the database may be down; the next interval tries again
            print(f"watchdog check failed, retrying: {exc}")
            continue
        if result.step.state.status is waiting and result.step.action in (Action.WAIT, Action.CONTINUE):
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


def _approval_text(run: RolloutRun, result: CheckResult, stage: str) -> str:
    """One line per metric (estimate, bounds, margin, verdict): narrow enough to read without scrolling."""
    lines = [f"## Approve stage **{stage}** of `{run.plan.flag}`?", ""]
    if run.notice:
        lines += [f"> **{run.notice}**", ""]
    lines += [f"{result.step.reason}", "", "Evidence so far (candidate minus baseline; positive = worse):", ""]
    # A list, not a table: a table as wide as its five columns needs sideways scrolling in the pause dialog.
    lines += [metric_line(row) for row in display_rows(result.details)] or ["- no evidence yet"]
    lines += ["", "Choose **approve** to go on or **reject** to roll back. The judge keeps watching: proven harm "
              "rolls back even while this form waits."]
    return "\n".join(lines)


def metric_line(row: dict[str, Any]) -> str:
    """One metric of a verdict in one short markdown line (a row of verdicts.display_rows)."""
    return (f"- **{row['metric']}**: {row['verdict']}; estimate {row['estimate']}, bounds {row['bounds']}, "
            f"margin {row['margin']}")


# --- the run page: one progress, one summary, one verdict artifact, updated in place ----------------

def _key(flag: str, what: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", f"rollout-{flag}-{what}".lower())


class _RunPage:
    """The three artifacts of a rollout. Each is created once per run and then updated in place (PATCH of the
    artifact, which the server applies to the key's latest version too), so the Artifacts tab holds three
    cards, not one per check. An artifact is only sent again when its text changed."""

    def __init__(self, run: RolloutRun) -> None:
        self.run = run
        self.progress: Any = None
        self.ids: dict[str, Any] = {}
        self.sent: dict[str, Any] = {}

    def show(self, run: RolloutRun, result: CheckResult) -> None:
        try:
            self._show(result)
        except Exception as exc:  # noqa: BLE001 - the UI is a view; a failed artifact must not stop a rollout
            print(f"could not update artifacts: {exc}")

    def _show(self, result: CheckResult) -> None:
        plan, state = self.run.plan, result.step.state
        stages = len(plan.stages)
        done = 100.0 if state.status is Status.PROMOTED else 100.0 * max(state.stage_index, 0) / stages
        where = f"{plan.flag}: {state.status.value}, stage {stage_number(state.stage_index)} of {stages}"
        if self.progress is None:
            self.progress = create_progress_artifact(done, key=_key(plan.flag, "progress"), description=where)
        elif self.sent.get("progress") != (done, where):
            update_progress_artifact(self.progress, done, description=where)
        self.sent["progress"] = (done, where)
        rows = display_rows(result.details)
        if rows:
            self._put("verdict", rows, f"Check {result.sequence}: {result.step.action.value}")
        self._put("summary", summary_card(self.run.store, plan.flag), f"Rollout #{self.run.rollout_id} of {plan.flag}")

    def _put(self, what: str, data: Any, description: str) -> None:
        if self.sent.get(what) == data:
            return
        self.sent[what] = data
        if what not in self.ids:
            make = create_table_artifact if isinstance(data, list) else create_markdown_artifact
            self.ids[what] = make(data, key=_key(self.run.plan.flag, what), description=description)
            return
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactUpdate

        payload = json.dumps(data) if isinstance(data, list) else data
        with get_client(sync_client=True) as client:
            client.update_artifact(self.ids[what], ArtifactUpdate(data=payload, description=description))


def summary_card(store: SqlStore, flag: str) -> str:
    """The summary card of the flag's latest rollout, as the run page shows it: its status and its bounds chart."""
    with store.transaction() as unit:
        view = rollout_status(unit.session, flag, namespace=store.namespace)  # type: ignore[attr-defined]
        decisions = rollout_store.decisions(unit.session, view.rollout.id) if view.rollout else []  # type: ignore[attr-defined]
    return summary_markdown(view, bounds_markdown(decisions, f"{flag}: each metric's bounds against its margin"))


def summary_markdown(view: StatusView, chart: str = "") -> str:
    """The summary card: the status view (the same one `rollout status` prints) as markdown, then `chart`
    (rollout.adapters.prefect.report.bounds_markdown: each metric's bounds against its margin over the checks)."""
    flag, r = view.flag, view.rollout
    lines = [f"### {flag['key']}: {r.status if r else flag['phase']}", ""]
    if r is not None:
        lines += [f"Rollout #{r.id}, stage {r.stage_number} of {len(r.stages)} ({r.stage or '-'}): "
                  + " > ".join(f"**{n}**" if n == r.stage else n for n in r.stages), "", f"*{r.reason}*", ""]
        if r.pending_approval:
            lines += [f"Waiting for approval of stage **{r.pending_approval}**.", ""]
    lines += [f"Flag phase {flag['phase']} (version {flag['version']}); allocation per stratum:", "",
              "| stratum | candidate |", "|---|---|"]
    lines += [f"| {name} | {bp / 100:g} % |" for name, bp in flag["allocations"].items()]
    check = r.last_check if r is not None else None
    if check is not None:
        lines += ["", f"Check #{check.sequence}: {check.verdict} -> {check.action}", "",
                  "| metric | estimate | bounds | margin | verdict |", "|---|---|---|---|---|"]
        lines += [f"| {m.metric} | {number(m.estimate)} | [{number(m.lower)}, {number(m.upper)}] | "
                  f"{number(m.margin)} | {m.verdict} |" for m in check.metrics]
        if check.strata:
            lines += ["", "Strata where the judge found harm:", ""]
            lines += [f"- {m.stratum}: {m.metric} {number(m.estimate)} [{number(m.lower)}, {number(m.upper)}]"
                      for m in check.strata]
        lines += [f"- health: {h.name}: {h.reason}" for h in check.health if not h.ok]
    if r is not None and r.unpaired_note:
        lines += ["", f"Shadow: {r.unpaired_note}."]
    if r is not None and r.judges:
        lines += ["", "| judge | grades | spent | state |", "|---|---|---|---|"]
        lines += [f"| {j.judge} | {j.grades} | ${j.spent_total:.4f} | {'**paused**: ' + j.paused if j.paused else 'grading'} |"
                  for j in r.judges]
    if r is not None and (r.cost.lines or r.cost.budgets):
        lines += ["", "Cost over the rollout:", "", "| arm | variant | stratum | metric | total |", "|---|---|---|---|---|"]
        lines += [f"| {c.arm} | {c.variant} | {c.stratum} | {c.metric} | {number(c.total)} |" for c in r.cost.lines]
        lines += [f"- budget {b.budget}: {number(b.spent)} of {b.limit:g} ({b.share:.0%})" for b in r.cost.budgets]
    if chart:
        lines += ["", "Bounds over the checks (band: confidence bounds, dashed red: the margin; above it is harm):",
                  "", chart]
    return "\n".join(lines) + "\n"


def _eval_and_show(run: RolloutRun, stage_index: int) -> tuple[str | None, int]:
    """Run the eval stage (a task), then its per-category table in the UI."""
    from rollout.app.evals import gate_rows

    outcome = eval_task(run, stage_index)
    try:
        with run.store.transaction() as unit:
            rows = gate_rows(unit.session, run.rollout_id, stage_index, run.plan)  # type: ignore[attr-defined]
        if rows:
            create_table_artifact(rows, key=_key(run.plan.flag, "eval"),
                                  description=f"Eval gate {run.plan.stages[stage_index].name}: pass rate per category")
    except Exception as exc:  # noqa: BLE001 - a view only
        print(f"could not show the eval results: {exc}")
    return outcome


# --- cancelled, crashed or failed: the loop's one abort path, only for the run that owns the rollout ------

def _on_abort(flow: Any, flow_run: Any, state: State) -> None:
    params = flow_run.parameters or {}
    owner = str(flow_run.id)
    try:
        plan = plan_from_parameters(params)
    except Exception:  # noqa: BLE001 - a run that never had a valid plan owns nothing
        return
    namespace = params.get("namespace", "default")
    engine = make_engine(params.get("database_url"))
    reason = _stop_reason(state)
    logger = _hook_logger(flow, flow_run)
    try:
        # Only an active rollout this run owns is touched: a refused duplicate, or a rollout that ended
        # (RolledBack is a Failed state too), or one someone else drives now, are left alone.
        store = SqlStore(engine, namespace)
        after = abort(store, plan, owner=owner, reason=reason)
        if after is not None and after.status is Status.ABORTED and after.reason == reason:
            # One line that says what on_abort did, where the release manager looks (the run's logs, the card).
            logger.warning(on_abort_line(plan, reason))
            _refresh_summary(store, plan, owner)
        elif after is None:
            logger.warning("%s; on_abort (%s) could not be applied: the database could not be reached, the lease "
                           "will expire and the next controller takes over", reason, plan.on_abort.value)
    finally:
        engine.dispose()
    try:
        if after is None and owner not in _LOST_TOLD:
            _LOST_TOLD.add(owner)
            _emit_for(plan.flag, Event.LOST, {"reason": f"{reason}; on_abort could not be applied, the lease will "
                                                        "expire and the next controller takes over"})
        elif after.status is Status.ABORTED and after.reason == reason:
            _emit_for(plan.flag, Event.ABORTED, {"reason": reason, "on_abort": plan.on_abort.value})
    except Exception as exc:  # noqa: BLE001 - the abort itself is done
        print(f"could not emit the abort event: {exc}")


def _stop_reason(state: State) -> str:
    """Why the run stopped, in words: "flow run cancelled", "flow run crashed (the process was killed)".

    The cancellation hook runs on entering Cancelling, whose message only repeats it ("Flow run was cancelled."),
    so a message is kept only when it says more than the state's name."""
    name = {"cancelling": "cancelled"}.get(state.name.lower(), state.name.lower())
    message = (state.message or "").strip()
    return f"flow run {name}" + (f" ({message})" if message and name not in message.lower() else "")


def on_abort_line(plan: Any, reason: str) -> str:
    """What the plan's on_abort did, in words (no traceback follows it)."""
    if plan.on_abort is Policy.ROLLBACK:
        done = (f"the flag {plan.flag} serves everyone the baseline ({plan.baseline}) again")
    else:
        done = (f"the flag {plan.flag} keeps its allocations but nobody judges it any more; roll back by hand "
                f"with `rollout rollback {plan.flag}` or start a new run")
    return f"{reason}: the rollout is aborted and the plan's on_abort ({plan.on_abort.value}) was applied: {done}"


def _hook_logger(flow: Any, flow_run: Any) -> Any:
    """The run's logger (its lines show on the run page) even where a hook runs outside the run's context."""
    try:
        from prefect.logging.loggers import flow_run_logger

        return flow_run_logger(flow_run, flow)
    except Exception:  # noqa: BLE001 - a hook called with stand-ins (tests) or without Prefect's logging
        return logging.getLogger("rollout.prefect")


def _refresh_summary(store: SqlStore, plan: Any, flow_run_id: str) -> None:
    """The run's summary card, redrawn after the hook's abort, so it no longer shows the rollout as running."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactUpdate
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

        text = summary_card(store, plan.flag)
        with get_client(sync_client=True) as client:
            cards = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[_key(plan.flag, "summary")]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])))
            for card in cards:
                client.update_artifact(card.id, ArtifactUpdate(data=text))
    except Exception as exc:  # noqa: BLE001 - a view only; the abort is done
        print(f"could not update the summary card: {exc}")


def _emit_for(flag: str, event: Event, payload: dict[str, Any]) -> None:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():  # a hook called outside any Prefect server (tests): nobody to tell
        return
    emit_event(event=event.value, resource={"prefect.resource.id": f"rollout.flag.{flag}",
                                            "prefect.resource.name": flag}, payload=payload)


run_rollout = run_rollout.with_options(on_cancellation=[_on_abort], on_crashed=[_on_abort], on_failure=[_on_abort])
