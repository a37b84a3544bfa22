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
    unit_key: bytes,
    variant: Any = None,
    attributes: Any = None,
    at: float,
    pair_id: int | None = None,
) -> OutcomeEntry:
    """One outcome, validated and ready to store, or InvalidOutcomeError.

    The one validation of an outcome: `record()` and the HTTP service's
    `POST /v1/outcomes` both call it, so both refuse exactly the same input.
    `unit_key` is the namespace's UNIT secret (see `_unit_hash`).
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
    prefix = (flag_id, state.rollout_id, state.stage, variant, stratum, _unit_hash(unit_key, unit))
    if pair_id is not None:
        # Shadow runs pair a baseline and a candidate outcome of one request (see rollout.store.outcomes).
        prefix = (*prefix, pair_id)
    return (prefix, values, at)


def _unit_hash(key: bytes, unit_id: str) -> int:
    """The stored unit hash: keyed BLAKE2b, 64 bits, enough to pair a unit's outcomes, not to read its id back.

    `key` is the namespace's UNIT secret (rollout.store.secrets), which no API
    returns, never the flag's bucketing salt (GET /v1/flags serves salts, so a
    salt-keyed hash could be reversed by hashing candidate ids). Bucketing
    itself (murmur3 of salt:unit) is unchanged.
    """
    keyed = _KEYED.get(key)
    if keyed is None:
        # Setting a key up costs more than hashing a unit id (measured: 2.2 µs keyed from scratch, 1.4 µs
        # from a copy), and a process sees one key per namespace: keep one keyed state per key.
        if len(_KEYED) >= 64:
            _KEYED.clear()
        keyed = _KEYED[key] = hashlib.blake2b(digest_size=8, key=key)
    h = keyed.copy()
    h.update(unit_id.encode())
    return int.from_bytes(h.digest(), "big", signed=True)


_KEYED: dict[bytes, Any] = {}


__all__ = ["outcome_entry"]
