"""The error tree as exit codes: the one place the CLI decides what a failure exits with and says.

0 is success; 2 is anything the caller can fix by changing the command (bad
input, an unknown name, a conflict, a refused token); 1 is a fault the command
line cannot fix (the database is down, a piece of the install is missing, a
bug). This module imports no third-party package, so the `rollout` script can
still explain a missing extra when Typer itself is what is missing.
"""

from __future__ import annotations

from rollout.errors import (
    AccessError,
    ConflictError,
    InvalidInputError,
    InvalidPlanError,
    NotFoundError,
    RolloutError,
    StoreUnavailableError,
)

OK, FAULT, USAGE = 0, 1, 2

EXIT_CODES: dict[type[BaseException], int] = {
    InvalidInputError: USAGE,
    NotFoundError: USAGE,
    ConflictError: USAGE,
    AccessError: USAGE,
    StoreUnavailableError: FAULT,
    RolloutError: USAGE,
    ModuleNotFoundError: FAULT,   # an extra is not installed: see EXTRA_OF
}

# The top-level module a command imports -> the extra of pyproject.toml that installs it.
EXTRA_OF: dict[str, str] = {
    **dict.fromkeys(("typer", "click", "rich", "yaml", "pydantic", "alembic", "prefect", "numpy", "scipy",
                     "matplotlib", "jsonschema"), "controller"),
    **dict.fromkeys(("fastapi", "starlette", "uvicorn", "httptools", "uvloop", "orjson", "prometheus_client",
                     "pydantic_settings"), "server"),
    "openfeature": "openfeature",
}


def exit_code(exc: BaseException) -> int:
    """The code of the nearest class of `exc` in `EXIT_CODES`; anything unmapped is a fault."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return FAULT


def message(exc: BaseException) -> str:
    """What to print after `rollout: `: one line, except a plan's problems (a list a person works through)."""
    if isinstance(exc, ModuleNotFoundError):
        return missing_extra(exc)
    if isinstance(exc, InvalidPlanError):
        return str(exc)
    return " ".join(str(exc).split())[:1000]


def missing_extra(exc: ModuleNotFoundError) -> str:
    module = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(module)
    if extra is None:
        return f"a module this command needs is missing: {module or exc}"
    return (f"this command needs the {extra!r} extra (module {module!r} is not installed): "
            f"pip install 'rollout[{extra}]'")


__all__ = ["EXIT_CODES", "EXTRA_OF", "FAULT", "OK", "USAGE", "exit_code", "message", "missing_extra"]
