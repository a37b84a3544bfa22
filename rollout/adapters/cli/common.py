"""What every `rollout` command shares: the global options, the database engine, who is acting."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from rollout.errors import InvalidInputError


class CliContext:
    def __init__(self, db: str | None, namespace: str) -> None:
        self.db = db
        self.namespace = namespace
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from rollout.store.db import make_engine

            self._engine = make_engine(self.db)
        return self._engine


DbOption = Annotated[str | None, typer.Option("--db", envvar="ROLLOUT_DATABASE_URL",
                                              help="Database URL [default: sqlite:///rollout.db]")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who is making the change [default: OS user]")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text")]


def actor_name(by: str | None) -> str:
    if by is not None:
        if not by.strip():
            raise InvalidInputError("--by must name someone")
        return by.strip()
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in a bare container
        return "unknown"


def transaction(ctx: typer.Context) -> Any:
    from rollout.store.db import transaction as store_transaction

    return store_transaction(ctx.obj.engine)


def table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    """A plain rich table for command output: a header row, no borders, so it reads well in a pipe too."""
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for name in columns:
        t.add_column(name, justify="right" if name in right else "left")
    return t


def print_table(t: Table) -> None:
    # Off a terminal (a pipe, a log, a test) rich would assume 80 columns and wrap cells; use a wide page.
    console = Console(width=None if sys.stdout.isatty() else 240, highlight=False, soft_wrap=False)
    console.print(t)
