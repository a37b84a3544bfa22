"""One outcome, validated and ready to store: shared by `record()`, shadow runs and the HTTP service.

Its own module so that the client and the shadow runner both import it
without importing each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from rollout.core import CompiledFlag
from rollout.core.outcome import validate_metrics, validate_unit
from rollout.errors import InvalidOutcomeError
from rollout.store.outcomes import OutcomeEntry


def outcome_entry(
    compiled: CompiledFlag,
    flag_id: int,
    unit_id: Any,
    metrics: Any,
    *,
    variant: Any = None,
    attributes: Any = None,
    at: float,
    pair_id: int | None = None,
) -> OutcomeEntry:
    """One outcome, validated and ready to store, or InvalidOutcomeError.

    The one validation of an outcome: `record()` and the HTTP service's
    `POST /v1/outcomes` both call it, so both refuse exactly the same input.
    """
    unit = validate_unit(unit_id)
    values = validate_metrics(metrics)
    if attributes is not None and not isinstance(attributes, Mapping):
        raise InvalidOutcomeError(f"attributes must be a mapping, got {type(attributes).__name__}")
    state = compiled.state
    if variant is None:
        assignment = compiled.evaluate(unit, attributes)
        variant, stratum = assignment.variant, assignment.stratum
    elif not isinstance(variant, str) or variant not in (state.baseline, state.candidate):
        raise InvalidOutcomeError(
            f"variant {variant!r} is not an arm of {state.key!r} ({state.baseline!r} or {state.candidate!r})"
        )
    else:
        stratum = compiled.stratum_of(attributes)
    prefix = (flag_id, state.rollout_id, state.stage, variant, stratum, _unit_hash(state.salt, unit))
    if pair_id is not None:
        # Shadow runs pair a baseline and a candidate outcome of one request (see rollout.store.outcomes).
        prefix = (*prefix, pair_id)
    return (prefix, values, at)


def _unit_hash(salt: str, unit_id: str) -> int:
    """A keyed 64-bit hash: enough to pair a unit's outcomes, not enough to read its id back."""
    digest = hashlib.blake2b(unit_id.encode(), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big", signed=True)


__all__ = ["outcome_entry"]
