"""The pure core: flags, assignment and (later) the rollout controller. No I/O here."""

from rollout.core.assignment import (
    Assignment,
    Cell,
    CompiledFlag,
    ErrorCode,
    Exposure,
    Reason,
    bind,
    bucket,
    error_assignment,
)
from rollout.core.flag import (
    BUCKETS,
    DEFAULT_STRATUM,
    Condition,
    FlagState,
    Op,
    Phase,
    Stratum,
    percent_to_bp,
)

__all__ = [
    "BUCKETS",
    "DEFAULT_STRATUM",
    "Assignment",
    "Cell",
    "CompiledFlag",
    "Condition",
    "ErrorCode",
    "Exposure",
    "FlagState",
    "Op",
    "Phase",
    "Reason",
    "Stratum",
    "bind",
    "bucket",
    "error_assignment",
    "percent_to_bp",
]
