"""Release managers' commands: validate a plan, start it, watch it, approve a stage, read its history."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from rollout.adapters.cli.common import ByOption, JsonOption, print_table, table
from rollout.app.verdicts import number
from rollout.core.policy import BUCKETS
from rollout.errors import InvalidInputError

plan_app = typer.Typer(help="Rollout plans.", no_args_is_help=True)



def _read_plan(path: Path) -> dict[str, Any]:
    from rollout.app.plans import canonical_document

    return canonical_document(Path(path))


@plan_app.command("validate")
def plan_validate(file: Path) -> None:
    """Check a plan; every problem is listed. Changes nothing."""
    from rollout.app.plans import load_plan

    plan = load_plan(Path(file))
    typer.echo(f"{file}: valid plan for flag {plan.flag} ({plan.baseline} -> {plan.candidate})")
    for i, s in enumerate(plan.stages, 1):
        if s.eval is not None:
            alloc = f"{s.eval.candidate} against {s.eval.baseline} on {s.eval.cases} (margin {s.eval.margin:g})"
        elif s.kind.value == "shadow":
            alloc = f"sample {s.shadow_bp / 100:g} %" + (f", budget {s.budget.total:g} in total" if s.budget and s.budget.total else "")
        else:
            alloc = ", ".join(f"{n} {bp / 100:g} %" for n, bp in s.allocations.items())
        gate = ", approval required" if s.approval else ""
        typer.echo(f"  {i}. {s.name:<10} {s.kind.value:<7} {alloc}{gate}")
    typer.echo("  metrics: " + ", ".join(f"{m.name} (margin {m.margin:g}{' relative' if m.relative else ''})"
                                         for m in plan.metrics))


@plan_app.command("register")
def plan_register(
    ctx: typer.Context,
    file: Path,
    name: Annotated[str | None, typer.Option("--name", help="Register under this name [default: the plan's flag]")] = None,
    comment: Annotated[str, typer.Option("--comment", help="What changed; kept with the version")] = "",
    by: ByOption = None,
) -> None:
    """Store a plan in the database under a name, as its next version; start it by name from the Prefect UI."""
    from rollout.adapters.cli.common import actor_name, transaction
    from rollout.app.plans import load_plan
    from rollout.store import plans as plan_store

    document = _read_plan(file)
    plan = load_plan(document)
    key = (name or plan.flag).strip()
    if not key or len(key) > 100:
        raise InvalidInputError("--name must be 1-100 characters")
    with transaction(ctx) as s:
        version = plan_store.register_plan(s, key, document, flag=plan.flag, actor=actor_name(by), comment=comment,
                                           namespace=ctx.obj.namespace)
    typer.echo(f"registered plan {version.name} version {version.version} (flag {plan.flag}); "
               f"start it with `rollout start {version.name}` or pick it by name in the Prefect UI")


@plan_app.command("list")
def plan_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Registered plans: the latest version of each."""
    from rollout.adapters.cli.common import transaction
    from rollout.store import plans as plan_store

    with transaction(ctx) as s:
        plans = plan_store.list_plans(s, namespace=ctx.obj.namespace)
    _print_plan_versions(plans, as_json, empty="no registered plans; add one with `rollout plan register FILE`")


@plan_app.command("history")
def plan_history(ctx: typer.Context, name: str, as_json: JsonOption = False) -> None:
    """Every registered version of one plan, oldest first."""
    from rollout.adapters.cli.common import transaction
    from rollout.store import plans as plan_store

    with transaction(ctx) as s:
        versions = plan_store.plan_history(s, name, namespace=ctx.obj.namespace)
    _print_plan_versions(versions, as_json, empty=f"no registered plan {name!r}")


def _print_plan_versions(versions: list[Any], as_json: bool, *, empty: str) -> None:
    if as_json:
        typer.echo(json.dumps([{"name": v.name, "version": v.version, "flag": v.flag, "registered_by": v.registered_by,
                                "registered_at": v.registered_at.isoformat(), "comment": v.comment,
                                "plan": v.document} for v in versions], indent=2))
        return
    if not versions:
        typer.echo(empty)
    for v in versions:
        stages = " > ".join(s.get("name", "?") for s in v.document.get("stages", []))
        typer.echo(f"{v.name:<24} v{v.version:<3} flag {v.flag:<24} {v.registered_at:%Y-%m-%d %H:%M} "
                   f"by {v.registered_by}  {stages}" + (f"  ({v.comment})" if v.comment else ""))


def parse_start_time(text: str | None) -> Any:
    """`--at 2026-12-02T09:00Z`: an aware time, not in the past (a past one would start at once, by surprise)."""
    from datetime import UTC, datetime, timedelta

    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(f"--at {text!r} is not a time like 2026-12-02T09:00Z") from None
    if at.tzinfo is None:
        raise InvalidInputError(f"--at {text!r} needs a time zone, e.g. 2026-12-02T09:00Z or +01:00")
    if at < datetime.now(UTC) - timedelta(minutes=1):
        raise InvalidInputError(f"--at {text!r} is in the past")
    return at


def _plan_source(ctx: typer.Context, file: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the document, what goes in the deployment's `plan` parameter): a file's plan, or a registered one by name."""
    if file.exists() or file.suffix in (".yaml", ".yml", ".json"):
        document = _read_plan(file)
        return document, document
    from rollout.app.plans import resolve_plan

    _, document = resolve_plan({"name": str(file)}, ctx.obj.engine, namespace=ctx.obj.namespace)
    return document, {"name": str(file)}


def register(app: typer.Typer, context_engine: Any, actor: Any, transaction: Any) -> None:
    """Add the rollout commands to the root app (cli.py owns the shared options)."""
    app.add_typer(plan_app, name="plan")

    @app.command("start")
    def start(
        ctx: typer.Context,
        file: Annotated[Path, typer.Argument(help="A plan file, or the name of a registered plan")],
        by: ByOption = None,
        foreground: Annotated[bool, typer.Option(
            "--foreground", help="Run the checks in this process without Prefect")] = False,
        deployment: Annotated[str, typer.Option(help="Prefect deployment to run")] = "rollout/rollout",
        at: Annotated[str | None, typer.Option(
            "--at", help="Start later: a scheduled flow run at this time, e.g. 2026-12-02T09:00Z")] = None,
    ) -> None:
        """Start a rollout: a run of the Prefect deployment when a Prefect API is configured, else in this process."""
        document, source = _plan_source(ctx, file)
        who = actor(by)
        start_at = parse_start_time(at)
        if start_at is not None and (foreground or not os.environ.get("PREFECT_API_URL")):
            raise InvalidInputError("--at schedules a Prefect flow run: set PREFECT_API_URL and serve the deployment")
        if os.environ.get("PREFECT_API_URL") and not foreground:
            _start_on_prefect(ctx, document, who, deployment, source=source, at=start_at)
            return
        from rollout.app.runner import run_foreground

        typer.echo("no Prefect API configured (PREFECT_API_URL): running the checks in this process; "
                   "approve with `rollout approve`, stop with Ctrl-C (applies on_abort)")
        ending = run_foreground(context_engine(ctx), document, actor=who, namespace=ctx.obj.namespace,
                                on_check=lambda r: typer.echo(f"[{r.step.state.status.value}] {r.step.action.value}: "
                                                              f"{r.step.reason}"))
        if ending.lost:
            typer.echo(f"controller stopped, rollout LOST: {ending.reason}")
        else:
            typer.echo(f"rollout ended {ending.state.status.value}: {ending.reason}")
        raise typer.Exit(0 if ending.state.status.value == "promoted" else 1)

    @app.command("status")
    def status(ctx: typer.Context, flag: str, as_json: JsonOption = False) -> None:
        """Phase, stage, allocations, the last verdict per metric and any pending approval."""
        from rollout.app.status import rollout_status

        with transaction(ctx) as s:
            view = rollout_status(s, flag, namespace=ctx.obj.namespace)
        _report_lost(view.to_json())
        if as_json:
            typer.echo(json.dumps(view.to_json(), indent=2))
            return
        _print_status(view)

    @app.command("approve")
    def approve(
        ctx: typer.Context,
        flag: str,
        by: Annotated[str, typer.Option("--by", help="Your name; kept in the audit log")],
        reject: Annotated[bool, typer.Option("--reject", help="Reject the stage: roll back")] = False,
        comment: Annotated[str, typer.Option("--comment")] = "",
    ) -> None:
        """Answer the approval gate a rollout waits at (the same input as the Prefect UI form)."""
        from rollout.app.approvals import submit_approval

        if not by.strip():
            raise InvalidInputError("--by must name who approves")
        result = submit_approval(context_engine(ctx), flag, approver=by.strip(), approved=not reject,
                                 comment=comment, namespace=ctx.obj.namespace)
        verb = "rejected" if reject else "approved"
        how = "the paused flow run was resumed" if result.resumed_flow_run else "the controller reads it at its next check"
        typer.echo(f"stage {result.stage} of {flag} {verb} by {by.strip()}; {how}")

    @app.command("history")
    def history(ctx: typer.Context, flag: str, as_json: JsonOption = False) -> None:
        """Every decision and approval of the latest rollout, and the flag's audit log."""
        from rollout.app.status import rollout_history

        with transaction(ctx) as s:
            view = rollout_history(s, flag, namespace=ctx.obj.namespace)
        if as_json:
            typer.echo(json.dumps(view.to_json(), indent=2))
            return
        typer.echo(f"decisions of rollout #{view.rollout}:" if view.rollout else "no rollout yet")
        if view.decisions:  # stage numbers 1-based, as `rollout status` shows them
            rows = table("AT", "#", "STAGE", "VERDICT", "ACTION", "REASON", right=("#", "STAGE"))
            for d in view.decisions:
                rows.add_row(f"{d.at:%H:%M:%S}", str(d.sequence), str(d.stage_number), d.verdict, d.action, d.reason)
            print_table(rows)
        if view.approvals:
            typer.echo("approvals:")
            rows = table("AT", "STAGE", "ANSWER", "COMMENT", right=("STAGE",))
            for a in view.approvals:
                rows.add_row(f"{a.at:%H:%M:%S}", str(a.stage_number),
                             f"{'approved' if a.approved else 'rejected'} by {a.approver}", a.comment)
            print_table(rows)
        if view.cost.lines or view.cost.budgets:
            typer.echo("cost of the rollout:")
            _print_cost(view.cost)
        typer.echo("audit log:")
        rows = table("AT", "ACTOR", "ACTION", "REASON")
        for e in view.audit:
            rows.add_row(f"{e.at:%Y-%m-%dT%H:%M:%S}", e.actor, e.action, e.reason)
        print_table(rows)

    @app.command("watch")
    def watch(
        ctx: typer.Context,
        flag: str,
        interval: Annotated[float, typer.Option(help="Seconds between refreshes")] = 2.0,
        once: Annotated[bool, typer.Option(help="Draw once and exit")] = False,
    ) -> None:
        """A live view of a rollout: stage progress, allocations and the judge's latest bounds."""
        from rich.console import Console
        from rich.live import Live

        from rollout.app.status import rollout_status

        console = Console()

        def frame() -> Any:
            with transaction(ctx) as s:
                return _watch_view(rollout_status(s, flag, namespace=ctx.obj.namespace))

        if once:
            console.print(frame())
            return
        with Live(frame(), console=console, refresh_per_second=4) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(frame())
            except KeyboardInterrupt:
                pass


def _start_on_prefect(ctx: typer.Context, document: dict[str, Any], who: str, deployment: str, *,
                      source: dict[str, Any] | None = None, at: Any = None) -> None:
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    parameters = {"plan": source if source is not None else document, "started_by": who,
                  "namespace": ctx.obj.namespace, "database_url": ctx.obj.db}
    try:
        flow_run = run_deployment(name=deployment, parameters=parameters, timeout=0, scheduled_time=at)
    except ObjectNotFound:
        if at is not None:
            raise InvalidInputError(f"no deployment {deployment!r} on the Prefect server to schedule; "
                                    "serve it first (python -m rollout.adapters.prefect.serve)") from None
        typer.echo(f"no deployment {deployment!r} on the Prefect server; running the flow in this process")
        from rollout.adapters.prefect.flow import run_rollout

        state = run_rollout(**parameters, return_state=True)
        typer.echo(f"flow run ended {state.name}: {state.message or ''}")
        raise typer.Exit(0 if state.is_completed() else 1) from None
    api = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    ui = api[:-4] if api.endswith("/api") else api
    if at is not None:
        typer.echo(f"scheduled flow run {flow_run.name} ({flow_run.id}) of {deployment} for {at.isoformat()}")
    else:
        typer.echo(f"started flow run {flow_run.name} ({flow_run.id}) of {deployment}")
    typer.echo(f"watch it: {ui}/runs/flow-run/{flow_run.id}   or   rollout watch {document['flag']}")


def _print_status(view: Any) -> None:
    flag, r = view.flag, view.rollout
    alloc = ", ".join(f"{n} {bp / 100:g} %" for n, bp in flag["allocations"].items())
    typer.echo(f"flag      {flag['key']}: {flag['phase']} (version {flag['version']}), "
               f"{flag['baseline']} -> {flag['candidate']}")
    typer.echo(f"allocated {alloc}")
    if r is None:
        typer.echo("rollout   none yet")
        return
    lost = ("  ** LOST: its controller stopped renewing the lease (it died or cannot reach the database); "
            "start it again to take over **") if r.lost else ""
    typer.echo(f"rollout   #{r.id} {r.status}, stage {r.stage_number} of {len(r.stages)}"
               f" ({r.stage or '-'}), started by {r.started_by}{lost}")
    typer.echo(f"why       {r.reason}")
    for line in _window_line(r.to_json()):
        typer.echo(line)
    if r.pending_approval:
        typer.echo(f"waiting   for approval of stage {r.pending_approval}: rollout approve {flag['key']} --by NAME")
    evals = [(stage, row) for stage, rows in r.eval.items() for row in rows]
    if evals:
        rows = table("EVAL", "CATEGORY", "CASES", "BASELINE", "CANDIDATE", "VERDICT",
                     right=("CASES", "BASELINE", "CANDIDATE"))
        for stage, row in evals:
            rows.add_row(stage, row["category"], str(row["cases"]), f"{row['baseline pass rate']:.0%}",
                         f"{row['candidate pass rate']:.0%}", row["verdict"])
        print_table(rows)
    check = r.last_check
    if check:
        typer.echo(f"last check #{check.sequence} at {check.at:%H:%M:%S}: {check.verdict} -> {check.action}")
        if check.metrics:
            rows = table("METRIC", "VERDICT", "ESTIMATE", "BOUNDS", "MARGIN", "N BASE/CAND",
                         right=("ESTIMATE", "MARGIN", "N BASE/CAND"))
            for m in check.metrics:
                rows.add_row(m.metric, m.verdict, number(m.estimate), f"[{number(m.lower)}, {number(m.upper)}]",
                             number(m.margin), f"{m.n_baseline}/{m.n_candidate}")
            print_table(rows)
        for h in check.health:
            if not h.ok:
                typer.echo(f"  health: {h.name}: {h.reason}")
    if r.unpaired_note:
        typer.echo(f"shadow    {r.unpaired_note}")
    for j in r.judges:
        typer.echo(f"judge     {j.judge}: {j.grades} grades, ${j.spent_total:.4f} spent"
                   + (f"; PAUSED: {j.paused}" if j.paused else ""))
    _print_cost(r.cost)


def _print_cost(cost: Any) -> None:
    """Cost per arm and stratum over the rollout, and the share of each budget spent (status and history)."""
    if cost.lines:
        rows = table("ARM", "VARIANT", "STRATUM", "METRIC", "TOTAL", right=("TOTAL",))
        for c in cost.lines:
            rows.add_row(c.arm, c.variant, c.stratum, c.metric, f"{c.total:.4g}")
        print_table(rows)
    for b in cost.budgets:
        typer.echo(f"budget    {b.budget}: {b.spent:.4g} of {b.limit:g} ({b.share:.0%})")


def _report_lost(info: dict[str, Any]) -> None:
    """A lost rollout (nobody judges it) is an alert, not just a line: emit `rollout.lost` when Prefect is there."""
    r = info["rollout"]
    if not (r and r["lost"] and os.environ.get("PREFECT_API_URL")):
        return
    from rollout.adapters.prefect.automations import emit_lost

    try:
        emit_lost(info["flag"]["key"], r["id"], f"no controller renewed the lease since {r['lease_expires_at']}")
    except Exception as exc:  # noqa: BLE001 - status must still print
        typer.echo(f"could not tell Prefect the rollout is lost: {exc}", err=True)


def _window_line(rollout: dict[str, Any]) -> list[str]:
    """The next ramp window, while the rollout can still advance."""
    active = rollout["status"] not in ("promoted", "rolled_back", "aborted")
    return [f"window    {rollout['window']}"] if active and rollout.get("window") else []


def _watch_view(view: Any) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    flag, r = view.flag, view.rollout
    parts: list[Any] = [Text(f"{flag['key']}  {flag['phase']}  v{flag['version']}", style="bold")]
    if r:
        done = len(r.stages) if r.status == "promoted" else max(r.stage_index, 0)
        parts.append(Text(f"rollout #{r.id} {r.status}: stage {r.stage_number} of {len(r.stages)} "
                          f"({' > '.join(r.stages)})"))
        parts.append(ProgressBar(total=len(r.stages), completed=done, width=50))
        parts.append(Text(r.reason, style="italic"))
    table = Table("stratum", "allocation", "")
    for name, bp in flag["allocations"].items():
        table.add_row(name, f"{bp / 100:g} %", ProgressBar(total=BUCKETS, completed=bp, width=30))
    parts.append(table)
    if r and r.last_check:
        metrics = Table("metric", "verdict", "estimate", "bounds", "margin", "n base/cand")
        for m in r.last_check.metrics:
            metrics.add_row(m.metric, m.verdict, number(m.estimate), f"[{number(m.lower)}, {number(m.upper)}]",
                            number(m.margin), f"{m.n_baseline}/{m.n_candidate}")
        parts.append(metrics)
    return Group(*parts)
