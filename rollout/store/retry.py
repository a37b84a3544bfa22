"""The one retry policy for database work: exponential backoff with jitter, bounded by a deadline.

Everything that rides out a database fault uses this (the SDK's flusher and
refresher, both controllers' check loops, the CLI's and the API's writes), so
"how long do we keep trying, how fast" is answered in one place. It is tenacity
underneath; this module only names our policy and what counts as transient.

    for attempt in retrying(deadline=30.0):
        with attempt:
            with transaction(engine) as session:
                ...
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    stop_never,
    wait_exponential_jitter,
)

from rollout.errors import StoreUnavailableError

INITIAL_BACKOFF = 0.1   # seconds before the first retry
MAX_BACKOFF = 5.0       # the longest wait between two tries
JITTER = 0.2            # seconds of random spread, so many clients do not retry in step


def is_transient(exc: BaseException) -> bool:
    """A fault that may pass by itself: the database unreachable, a connection lost or timed out.

    Not transient: bad SQL, a constraint violation, a lost compare-and-set (those are answers).
    """
    if isinstance(exc, StoreUnavailableError):
        return True
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def retrying(*, deadline: float | None = None, attempts: int | None = None,
             retry_on: Callable[[BaseException], bool] = is_transient,
             initial: float = INITIAL_BACKOFF, maximum: float = MAX_BACKOFF,
             sleep: Callable[[float], None] = time.sleep,
             before_sleep: Callable[[RetryCallState], Any] | None = None, jitter: float = JITTER) -> Retrying:
    """Our policy as a tenacity `Retrying`: retry `retry_on` faults until `deadline` s or `attempts` tries.

    With neither bound it retries for ever (for loops that must not give up, like a
    controller that owns a half-ramped flag); the last error is re-raised when a bound is hit.
    `jitter` is there for callers that wait on a user's request (the SDK's guarded
    calls), where 0.2 s of spread is too much.
    """
    return Retrying(sleep=sleep, **_policy(deadline, attempts, retry_on, initial, maximum, before_sleep, jitter))


def aretrying(*, deadline: float | None = None, attempts: int | None = None,
              retry_on: Callable[[BaseException], bool] = is_transient,
              initial: float = INITIAL_BACKOFF, maximum: float = MAX_BACKOFF,
              before_sleep: Callable[[RetryCallState], Any] | None = None,
              jitter: float = JITTER) -> AsyncRetrying:
    """The same policy for coroutines (`async for attempt in aretrying(...)`), sleeping with asyncio."""
    return AsyncRetrying(**_policy(deadline, attempts, retry_on, initial, maximum, before_sleep, jitter))


def _policy(deadline: float | None, attempts: int | None, retry_on: Callable[[BaseException], bool],
            initial: float, maximum: float, before_sleep: Callable[[RetryCallState], Any] | None,
            jitter: float) -> dict[str, Any]:
    stops = []
    if deadline is not None:
        stops.append(stop_after_delay(deadline))
    if attempts is not None:
        stops.append(stop_after_attempt(attempts))
    stop = stop_any(*stops) if stops else stop_never
    return {"retry": retry_if_exception(retry_on),
            "wait": wait_exponential_jitter(multiplier=initial, max=maximum, jitter=jitter),
            "stop": stop, "before_sleep": before_sleep, "reraise": True}


def call_with_retry(work: Callable[[], Any], **policy: Any) -> Any:
    """`work()` under `retrying(**policy)`."""
    return retrying(**policy)(work)


__all__ = ["INITIAL_BACKOFF", "JITTER", "MAX_BACKOFF", "aretrying", "call_with_retry", "is_transient", "retrying"]
