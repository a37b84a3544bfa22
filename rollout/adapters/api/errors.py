"""The error tree as HTTP statuses: the one place the API decides what a failure answers with.

Routes raise the domain's errors (`rollout.errors`) and the app's exception
handler answers with `error_response(exc)`: the status from `STATUS` (the
nearest class in the error's ancestry wins), a JSON `{"error": ...}` body and
the headers a client needs to act on it (a Bearer challenge, Retry-After).
"""

from __future__ import annotations

from starlette.responses import Response

from rollout.adapters.api.auth import retry_after_header
from rollout.adapters.api.common import error
from rollout.errors import (
    AccessError,
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    RolloutError,
    StoreUnavailableError,
)

STATUS: dict[type[RolloutError], int] = {
    InvalidInputError: 422,       # the body parsed but says something impossible
    NotFoundError: 404,           # in the token's namespace
    ConflictError: 409,           # the state moved, or the name is taken
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    AccessError: 403,
    RateLimitedError: 429,
    StoreUnavailableError: 503,   # nothing was done; retry
    RolloutError: 500,            # a new branch of the tree nobody mapped yet is a bug, said as one
}


def status_of(exc: RolloutError) -> int:
    """The status of the nearest class of `exc` in `STATUS`."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    raise TypeError(f"{type(exc).__name__} is not a RolloutError")


def headers_of(exc: RolloutError) -> dict[str, str]:
    if isinstance(exc, AuthenticationError):
        return {"WWW-Authenticate": 'Bearer realm="rollout"'}
    if isinstance(exc, RateLimitedError):
        return {"Retry-After": retry_after_header(exc)}
    if isinstance(exc, StoreUnavailableError):
        return {"Retry-After": "1"}
    return {}


def message_of(exc: RolloutError) -> str:
    # The driver's text can hold host names and SQL: a client learns only that it may retry.
    if isinstance(exc, StoreUnavailableError):
        return "the database is unavailable; retry"
    return " ".join(str(exc).split())


def error_response(exc: RolloutError) -> Response:
    return error(status_of(exc), message_of(exc), headers_of(exc))


__all__ = ["STATUS", "error_response", "headers_of", "message_of", "status_of"]
