"""rollout: get a new model, prompt or agent in front of users safely.

The public surface for applications is small: `RolloutClient` to ask for
variants, shadow a candidate and report outcomes, the `Assignment` it answers
with, and the error tree in `rollout.errors`. Scorers for shadow runs are in
`rollout.scorers`; the OpenFeature provider in `rollout.openfeature`.
"""

from rollout.client import ClientStats, Retry, RolloutClient, ShadowStats
from rollout.domain import Assignment, ErrorCode, Phase, Reason
from rollout.errors import (
    FlagNotFoundError,
    InvalidInputError,
    InvalidOutcomeError,
    RolloutError,
)

__version__ = "0.1.0"

__all__ = [
    "Assignment",
    "ClientStats",
    "ErrorCode",
    "FlagNotFoundError",
    "InvalidInputError",
    "InvalidOutcomeError",
    "Phase",
    "Reason",
    "Retry",
    "RolloutClient",
    "RolloutError",
    "ShadowStats",
    "__version__",
]
