"""The pure core: flags, assignment and (later) the rollout controller. No I/O here."""

from rollout.core.assignment import Assignment, CompiledFlag, ErrorCode, Reason, bucket, error_assignment
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
    "CompiledFlag",
    "Condition",
    "ErrorCode",
    "FlagState",
    "Op",
    "Phase",
    "Reason",
    "Stratum",
    "bucket",
    "error_assignment",
    "percent_to_bp",
]
