"""One example of every error class in `rollout.errors`, for the tables that map the tree at a boundary.

`EXAMPLES` must name every class the module exports: the boundary tests check
that, so a new error cannot reach a boundary unmapped and untested.
"""

from __future__ import annotations

import rollout.errors as errors

EXAMPLES: dict[str, errors.RolloutError] = {
    "RolloutError": errors.RolloutError("something of ours"),
    "InvalidInputError": errors.InvalidInputError("percent must be 0-100"),
    "InvalidOutcomeError": errors.InvalidOutcomeError("metric 'x y' is not a name"),
    "InvalidExposureError": errors.InvalidExposureError("the exposure token's signature does not verify"),
    "ExposureExpiredError": errors.ExposureExpiredError("the exposure token is older than the horizon"),
    "InvalidFlagError": errors.InvalidFlagError("a flag needs two variants"),
    "InvalidPlanError": errors.InvalidPlanError(["stage 1 has no name", "no metrics"]),
    "NotFoundError": errors.NotFoundError("no such thing"),
    "FlagNotFoundError": errors.FlagNotFoundError("summarizer"),
    "RolloutNotFoundError": errors.RolloutNotFoundError(7),
    "TokenNotFoundError": errors.TokenNotFoundError("no token named 'ci'"),
    "PlanNotFoundError": errors.PlanNotFoundError("no registered plan named 'summarizer'"),
    "ConflictError": errors.ConflictError("nothing waits for approval"),
    "FlagExistsError": errors.FlagExistsError("flag 'summarizer' exists already"),
    "TokenExistsError": errors.TokenExistsError("a token named 'ci' exists already"),
    "VersionConflictError": errors.VersionConflictError("flag changed"),
    "RolloutActiveError": errors.RolloutActiveError("a rollout is active"),
    "AccessError": errors.AccessError("not allowed"),
    "AuthenticationError": errors.AuthenticationError("unknown token"),
    "PermissionDeniedError": errors.PermissionDeniedError("needs admin"),
    "RateLimitedError": errors.RateLimitedError(1.2),
    "StoreUnavailableError": errors.StoreUnavailableError("database unavailable: connection refused"),
    "ClientClosedError": errors.ClientClosedError("record() after close()"),
}

