"""The `rollout` command line (Typer + rich): flags, plans, rollouts, tokens, the HTTP service.

`main` is the console script. It imports the commands only when called, so an
install without the `controller` extra (no Typer) gets a sentence naming the
extra to install instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    from rollout.adapters.cli import errors

    try:
        from rollout.adapters.cli.main import main as run
    except ModuleNotFoundError as exc:
        print(f"rollout: {errors.message(exc)}", file=sys.stderr)
        if argv is None:
            sys.exit(errors.FAULT)
        return errors.FAULT
    return run(argv)


def __getattr__(name: str) -> Any:
    if name == "app":
        from rollout.adapters.cli.main import app

        return app
    raise AttributeError(f"module 'rollout.adapters.cli' has no attribute {name!r}")


__all__ = ["app", "main"]
