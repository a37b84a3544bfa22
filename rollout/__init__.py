"""rollout: get a new model, prompt or agent in front of users safely.

The public surface for applications is small: `RolloutClient` to ask for
variants, shadow a candidate and report outcomes, the `Exposure` (an
`Assignment` bound to its unit) it answers with, and the error tree in `rollout.errors`. Scorers for shadow runs are in
`rollout.core.scorers`; the OpenFeature provider in `rollout.adapters.openfeature`.

Names are imported on first use, so `import rollout.core` (the pure core) loads
no database driver, web framework or Prefect.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_SURFACE = {
    "Assignment": "rollout.core",
    "ErrorCode": "rollout.core",
    "Exposure": "rollout.core",
    "Phase": "rollout.core",
    "Reason": "rollout.core",
    "ClientStats": "rollout.sdk",
    "Retry": "rollout.sdk",
    "RolloutClient": "rollout.sdk",
    "ShadowStats": "rollout.sdk",
    "ExposureExpiredError": "rollout.errors",
    "FlagNotFoundError": "rollout.errors",
    "InvalidExposureError": "rollout.errors",
    "InvalidInputError": "rollout.errors",
    "InvalidOutcomeError": "rollout.errors",
    "RolloutError": "rollout.errors",
}

__all__ = sorted([*_SURFACE, "__version__"])

if TYPE_CHECKING:
    from rollout.core import Assignment, ErrorCode, Exposure, Phase, Reason
    from rollout.errors import (
        ExposureExpiredError,
        FlagNotFoundError,
        InvalidExposureError,
        InvalidInputError,
        InvalidOutcomeError,
        RolloutError,
    )
    from rollout.sdk import ClientStats, Retry, RolloutClient, ShadowStats


def __getattr__(name: str) -> Any:
    module = _SURFACE.get(name)
    if module is None:
        raise AttributeError(f"module 'rollout' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
