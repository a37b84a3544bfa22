"""Every error `rollout` raises on purpose, in one tree.

    RolloutError                      base of everything below
    ├── InvalidInputError             the caller's input is wrong; nothing was written
    │   ├── InvalidOutcomeError       an outcome passed to record() or the HTTP API
    │   │   └── InvalidExposureError  an exposure token that is malformed, forged or from another namespace
    │   │       └── ExposureExpiredError  a valid token issued longer ago than the exposure horizon
    │   ├── InvalidFlagError          a flag definition (key, variants, strata, percent)
    │   └── InvalidPlanError          a rollout plan; `.problems` lists every problem
    ├── NotFoundError                 the thing named does not exist
    │   ├── FlagNotFoundError         no flag with that key (in that namespace)
    │   ├── RolloutNotFoundError      no rollout with that id
    │   ├── TokenNotFoundError        no API token with that name (in that namespace)
    │   └── PlanNotFoundError         no registered plan with that name (or version)
    ├── ConflictError                 the state moved under the caller, or the name is taken; nothing was written
    │   ├── FlagExistsError           a flag with that key exists already
    │   ├── TokenExistsError          an API token with that name exists already in the namespace
    │   ├── VersionConflictError      compare-and-set on the flag version lost
    │   └── RolloutActiveError        the flag already has an active rollout
    ├── AccessError                   an HTTP API caller may not do this; nothing was done
    │   ├── AuthenticationError       no token, an unknown or a revoked one (HTTP 401)
    │   ├── PermissionDeniedError     the token's scope is too small (HTTP 403)
    │   └── RateLimitedError          the token is over its request rate; `.retry_after` s (HTTP 429)
    ├── StoreUnavailableError         the database could not be reached or answered; the
    │                                 driver's error is kept as `__cause__`
    └── ClientClosedError             record() on a RolloutClient after close(): nothing was buffered

Two rules hold everywhere:

* Evaluation in an app never raises. `RolloutClient.assign()` answers with the
  baseline (or the last known state) and says why in `Assignment.reason` and
  `Assignment.error_code`, in OpenFeature's words.
* Every `InvalidInputError` is raised before anything changes, so a rejected
  call leaves the database and the client's buffers as they were.

At the boundaries the tree is translated in one place each: the store turns
the driver's connection faults into `StoreUnavailableError`
(`rollout.store.db.transaction`); the HTTP API maps each class to a status
(`rollout.adapters.api.errors`: input 422, not found 404, conflict 409, access
401/403/429, store 503); the CLI maps each class to an exit code
(`rollout.adapters.cli.errors`: 2 for anything the caller can fix, 1 for a
fault). Anything else is a bug: HTTP 500, exit code 1.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "AccessError",
    "AuthenticationError",
    "ClientClosedError",
    "ConflictError",
    "ExposureExpiredError",
    "FlagExistsError",
    "FlagNotFoundError",
    "InvalidFlagError",
    "InvalidInputError",
    "InvalidExposureError",
    "InvalidOutcomeError",
    "InvalidPlanError",
    "NotFoundError",
    "PermissionDeniedError",
    "PlanNotFoundError",
    "RateLimitedError",
    "RolloutActiveError",
    "RolloutError",
    "RolloutNotFoundError",
    "StoreUnavailableError",
    "TokenExistsError",
    "TokenNotFoundError",
    "VersionConflictError",
]


class RolloutError(Exception):
    """Base class of every error raised by `rollout` on purpose."""


class InvalidInputError(RolloutError, ValueError):
    """The caller's input is wrong; nothing was written."""


class InvalidOutcomeError(InvalidInputError):
    """An outcome was refused at the door: bad metric name or value, too many metrics."""


class InvalidExposureError(InvalidOutcomeError):
    """An exposure token was refused: it does not decode, or its signature does not verify in this namespace."""


class ExposureExpiredError(InvalidExposureError):
    """A genuine exposure token, issued longer ago than the exposure horizon: too late to credit what was served."""


class InvalidFlagError(InvalidInputError):
    """A flag definition is wrong: bad key, variants, strata or allocation."""


class InvalidPlanError(InvalidInputError):
    """A rollout plan is wrong. `problems` holds every problem found, not just the first."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"the plan has {len(self.problems)} problem(s):\n{lines}")


class NotFoundError(RolloutError, LookupError):
    """The thing named does not exist."""


class FlagNotFoundError(NotFoundError):
    """No flag with that key."""

    def __init__(self, key: str, detail: str = "") -> None:
        self.key = key
        super().__init__(f"unknown flag {key!r}" + (f" ({detail})" if detail else ""))


class RolloutNotFoundError(NotFoundError):
    """No rollout with that id."""

    def __init__(self, rollout_id: int) -> None:
        self.rollout_id = rollout_id
        super().__init__(f"unknown rollout #{rollout_id}")


class TokenNotFoundError(NotFoundError):
    """No API token with that name in that namespace."""


class PlanNotFoundError(NotFoundError):
    """No plan registered under that name (or no such version) in that namespace."""


class AccessError(RolloutError):
    """An HTTP API caller may not do this; nothing was done."""


class AuthenticationError(AccessError):
    """No token, an unknown one or a revoked one. The message never says which, to give a guesser nothing."""


class PermissionDeniedError(AccessError):
    """The token is valid but its scope (read < write < admin) does not cover this action."""


class RateLimitedError(AccessError):
    """The token sent more requests than its rate allows; try again after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"rate limit exceeded; retry after {retry_after:.2f} s")


class ConflictError(RolloutError):
    """The state moved under the caller; nothing was written."""


class FlagExistsError(ConflictError):
    """A flag with that key exists already."""


class TokenExistsError(ConflictError):
    """An API token with that name exists already in the namespace."""


class VersionConflictError(ConflictError):
    """Compare-and-set on the flag version lost: someone else changed the flag first."""


class RolloutActiveError(ConflictError):
    """The flag already has an active rollout; a second one is refused."""


class StoreUnavailableError(RolloutError):
    """The database could not be reached or did not answer."""


class ClientClosedError(RolloutError, RuntimeError):
    """`record()` was called on a `RolloutClient` after `close()` began: the outcome was not taken.

    Raised rather than accepted silently, because `close()` has already
    reported what it stored; an outcome taken after that would be lost unseen.
    """
