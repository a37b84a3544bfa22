"""`rollout automations install`: ready-made Prefect alerts for rollouts that need a human or went wrong."""

from __future__ import annotations

from typing import Annotated

import typer

from rollout.errors import InvalidInputError

automations_app = typer.Typer(help="Prefect automations that alert people about rollouts.", no_args_is_help=True)


@automations_app.command("install")
def install(
    block: Annotated[str, typer.Option("--block", help="Notification block to send to: NAME or TYPE/NAME")],
    flag: Annotated[str, typer.Option("--flag", help="Only this flag's rollouts [default: every flag]")] = "*",
) -> None:
    """Create (or replace) automations for approval requested, held, rolled back and lost, on the Prefect server."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        raise InvalidInputError("automations live on a Prefect server: set PREFECT_API_URL")
    from rollout.adapters.prefect.automations import install as install_automations

    for a in install_automations(block, flag=flag):
        typer.echo(f"installed automation {a.name!r} ({a.id}): {a.event} on rollout.flag.{flag} -> {block}")
