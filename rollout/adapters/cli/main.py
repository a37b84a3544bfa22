"""The `rollout` command line, for release managers and operators.

Every change is audited with the actor (`--by`, default the OS user). Bad
input prints one line on stderr, exits with code 2 and writes nothing; what
each error exits with is decided in `rollout.adapters.cli.errors`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from rollout.adapters.cli import errors
from rollout.adapters.cli import rollouts as rollout_commands
from rollout.adapters.cli.automations import automations_app
from rollout.adapters.cli.common import (
    ByOption,
    CliContext,
    DbOption,
    JsonOption,
    actor_name,
    print_table,
    table,
    transaction,
)
from rollout.adapters.cli.evals import eval_app
from rollout.adapters.cli.tokens import serve_cmd, token_app
from rollout.core.flag import FlagState, Stratum, percent_to_bp
from rollout.errors import InvalidFlagError, RolloutError

app = typer.Typer(help="Roll out a new model, prompt or agent safely.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
flag_app = typer.Typer(help="Create, inspect and change flags.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(flag_app, name="flag")


app.add_typer(token_app, name="token")
app.add_typer(eval_app, name="eval")
app.add_typer(automations_app, name="automations")
app.command("serve")(serve_cmd)


@app.callback()
def _root(
    ctx: typer.Context,
    db: DbOption = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n", envvar="ROLLOUT_NAMESPACE",
                                           help="Namespace (tenant or environment)")] = "default",
) -> None:
    ctx.obj = CliContext(db, namespace)





# --- db ---------------------------------------------------------------------------

@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, revision: str = typer.Argument("head")) -> None:
    """Create or migrate the schema to the latest revision."""
    from rollout.store import migrate

    migrate.upgrade(ctx.obj.db, revision)
    typer.echo(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(ctx: typer.Context, revision: str = typer.Argument(...)) -> None:
    """Migrate the schema down to REVISION (`base` drops everything)."""
    from rollout.store import migrate

    migrate.downgrade(ctx.obj.db, revision)
    typer.echo(f"database at {revision}")


# --- flag -------------------------------------------------------------------------

def parse_stratum(spec: str) -> Stratum:
    """`internal:email_domain=example.com|example.org`, `free:tier=free & region!=eu`, `beta:beta?`, or JSON.

    `=` with one value is equals, with `|` it is in; `!=` is not in; `attr?` is exists.
    """
    spec = spec.strip()
    if spec.startswith("{"):
        try:
            return Stratum.from_json(json.loads(spec))
        except json.JSONDecodeError as exc:
            raise InvalidFlagError(f"stratum JSON is not valid: {exc.msg}") from exc
    name, sep, rules = spec.partition(":")
    if not sep or not rules.strip():
        raise InvalidFlagError(f"stratum {spec!r} must look like NAME:ATTRIBUTE=VALUE")
    conditions: list[dict[str, Any]] = []
    for part in (p.strip() for p in rules.split("&")):
        if part.endswith("?"):
            conditions.append({"attribute": part[:-1].strip(), "exists": True})
        elif "!=" in part:
            attr, _, values = part.partition("!=")
            conditions.append({"attribute": attr.strip(), "not_in": [v.strip() for v in values.split("|")]})
        elif "=" in part:
            attr, _, values = part.partition("=")
            items = [v.strip() for v in values.split("|")]
            conditions.append({"attribute": attr.strip(), **({"equals": items[0]} if len(items) == 1 else {"in": items})})
        else:
            raise InvalidFlagError(f"condition {part!r} must be ATTRIBUTE=VALUE, ATTRIBUTE!=VALUE or ATTRIBUTE?")
    return Stratum.from_json({"name": name.strip(), "match": conditions})


@flag_app.command("create")
def flag_create(
    ctx: typer.Context,
    key: str,
    variants: Annotated[str, typer.Option("--variants", help="baseline,candidate[,more]: the baseline first")],
    description: Annotated[str, typer.Option("--description")] = "",
    stratum: Annotated[list[str] | None, typer.Option("--stratum", help="NAME:ATTR=VALUE (repeat; first match wins)")] = None,
    salt: Annotated[str | None, typer.Option("--salt", help="Bucketing salt [default: random]")] = None,
    by: ByOption = None,
) -> None:
    """Create a flag; everyone gets the baseline until a rollout or `flag set` says otherwise."""
    from rollout.store.flags import create_flag

    names = [v.strip() for v in variants.split(",") if v.strip()]
    strata = [parse_stratum(s) for s in stratum or []]
    actor = actor_name(by)
    with transaction(ctx) as session:
        state = create_flag(session, key, variants=names, actor=actor, description=description,
                            strata=strata, namespace=ctx.obj.namespace, salt=salt)
    typer.echo(f"created {state.key}: baseline {state.baseline}, candidate {state.candidate}, "
               f"strata {', '.join(state.stratum_names)}")


@flag_app.command("list")
def flag_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """All flags in the namespace."""
    from rollout.store.flags import flag_to_json, list_flags

    with transaction(ctx) as session:
        states = list_flags(session, namespace=ctx.obj.namespace)
    if as_json:
        typer.echo(json.dumps([flag_to_json(s) for s in states], indent=2))
        return
    if not states:
        typer.echo("no flags")
        return
    rows = table("FLAG", "PHASE", "VERSION", "ALLOCATION", right=("VERSION",))
    for s in states:
        rows.add_row(s.key, s.phase.value, str(s.version), _allocation_text(s))
    print_table(rows)


@flag_app.command("show")
def flag_show(ctx: typer.Context, key: str, as_json: JsonOption = False) -> None:
    """One flag: phase, variants, strata and allocations."""
    from rollout.store.flags import flag_to_json, get_flag

    with transaction(ctx) as session:
        state = get_flag(session, key, namespace=ctx.obj.namespace)
    if as_json:
        typer.echo(json.dumps(flag_to_json(state), indent=2))
        return
    typer.echo(f"flag      {state.key} (namespace {state.namespace})")
    typer.echo(f"phase     {state.phase.value}, version {state.version}")
    typer.echo(f"baseline  {state.baseline}")
    typer.echo(f"candidate {state.candidate}")
    if state.phase.value == "shadow":
        typer.echo(f"shadow    {state.shadow_bp / 100:g} % of units also run the candidate")
    typer.echo("strata (first match wins):")
    for s in state.strata:
        rules = " and ".join(_rule_text(c.to_json()) for c in s.conditions)
        typer.echo(f"  {s.name:<16} {state.allocation(s.name) / 100:>7g} %   {rules}")
    typer.echo(f"  {'default':<16} {state.allocation('default') / 100:>7g} %   (everyone else)")


def _rule_text(rule: dict[str, Any]) -> str:
    attr = rule["attribute"]
    op, value = next((k, v) for k, v in rule.items() if k != "attribute")
    return f"{attr} {op.replace('_', ' ')} {value}"


def _allocation_text(state: FlagState) -> str:
    return ", ".join(f"{n} {state.allocation(n) / 100:g}%" for n in state.stratum_names)


@flag_app.command("set")
def flag_set(
    ctx: typer.Context,
    key: str,
    percent: Annotated[float, typer.Option("--percent", help="Share of units on the candidate, 0-100 (0.01 steps)")],
    stratum: Annotated[str | None, typer.Option("--stratum", help="Only this stratum [default: all]")] = None,
    reason: Annotated[str, typer.Option("--reason")] = "",
    by: ByOption = None,
) -> None:
    """Serve the candidate to PERCENT of a stratum (or of every stratum), by hand."""
    from rollout.store.flags import set_allocation

    from rollout.store.db import retry_transaction

    bp = percent_to_bp(percent)
    actor = actor_name(by)
    state = retry_transaction(ctx.obj.engine, lambda session: set_allocation(
        session, key, bp, actor=actor, stratum=stratum, reason=reason, namespace=ctx.obj.namespace))
    typer.echo(f"{state.key} v{state.version}: {_allocation_text(state)}")


@app.command("rollback")
def rollback_cmd(
    ctx: typer.Context,
    key: str,
    reason: Annotated[str, typer.Option("--reason", help="Why; kept in the audit log")],
    by: ByOption = None,
) -> None:
    """Put everyone back on the baseline now. An active rollout of the flag ends as rolled back."""
    from rollout.store.flags import rollback

    from rollout.store.db import retry_transaction

    actor = actor_name(by)
    state = retry_transaction(ctx.obj.engine, lambda session: rollback(
        session, key, actor=actor, reason=reason, namespace=ctx.obj.namespace))
    typer.echo(f"{state.key} rolled back to {state.baseline} (version {state.version}) by {actor}: {reason}")


# --- rollouts (plan, start, status, approve, history, watch) -----------------------

rollout_commands.register(app, lambda ctx: ctx.obj.engine, actor_name, transaction)


# --- entry point ------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns (and, as a script, exits with) 0, or the code `cli.errors` gives the failure."""
    from sqlalchemy.exc import SQLAlchemyError

    command = typer.main.get_command(app)
    try:
        result = command.main(args=list(argv) if argv is not None else None, prog_name="rollout",
                              standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except typer.TyperException as exc:
        # Typer vendors click; its exceptions are reached through this public base.
        if type(exc).__name__ == "NoArgsIsHelpError" and getattr(exc, "ctx", None) is not None:
            typer.echo(exc.ctx.get_help())  # type: ignore[attr-defined]
            code = 0
        else:
            text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            typer.echo(f"rollout: {' '.join(text.split())}", err=True)
            code = getattr(exc, "exit_code", errors.USAGE) or errors.USAGE
    except typer.Abort:
        typer.echo("rollout: aborted", err=True)
        code = errors.FAULT
    except (RolloutError, ModuleNotFoundError) as exc:
        typer.echo(f"rollout: {errors.message(exc)}", err=True)
        code = errors.exit_code(exc)
    except SQLAlchemyError as exc:
        # Not a fault of the connection (the store turns those into StoreUnavailableError): a bug or a schema
        # that is not there yet.
        typer.echo(f"rollout: database error: {errors.message(exc)[:300]}", err=True)
        code = errors.FAULT
    if __name__ == "__main__" or argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
