"""Exposure tokens over HTTP: `POST /v1/evaluate` issues them, `POST /v1/outcomes` items may carry one.

The service signs and verifies with the same per-namespace keys and the same
code as the SDK (`rollout.sdk.exposures`), so a token issued over HTTP can be
recorded by a Python app and the other way round. Keys are read from the
database once per namespace, on a worker thread; while that fails, answers
carry no token (evaluation itself never fails) and token outcomes get a 503.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool

from rollout.adapters.api.common import ServiceState
from rollout.core import Assignment
from rollout.errors import FlagNotFoundError, InvalidOutcomeError, StoreUnavailableError
from rollout.sdk.outcomes import _unit_hash
from rollout.sdk.exposures import ExposureKeys, Served, served_entry, served_of
from rollout.store.outcomes import OutcomeEntry

_RETRY_AFTER = 5.0  # seconds between attempts to read a namespace's keys while the database is down


async def namespace_keys(state: ServiceState, namespace: str) -> ExposureKeys:
    """This namespace's keys, loaded on first use (and retried, at most every few seconds, until loaded)."""
    keys, tried = state.exposure_keys.get(namespace, (None, 0.0))
    if keys is None:
        keys = ExposureKeys(state.engine, namespace)
    if not keys.loaded and time.monotonic() - tried > _RETRY_AFTER:
        await run_in_threadpool(keys.load)
        tried = time.monotonic()
    state.exposure_keys[namespace] = (keys, tried)
    return keys


def token_for(keys: ExposureKeys, ids: dict[str, int], answer: Assignment, unit_id: Any,
              unit_key: bytes | None) -> str | None:
    """The exposure token of one evaluation, or None (an error answer, keys or UNIT key not loaded yet)."""
    cell = answer.cell
    flag_id = ids.get(cell.flag) if cell is not None else None
    if flag_id is None or not keys.loaded or not unit_key:
        return None
    # evaluate() answered with a cell, so the unit is a non-empty string or a whole number.
    return keys.sign(served_of(cell, flag_id, _unit_hash(unit_key, str(unit_id)), time.time()))


async def unit_key_of(state: ServiceState, namespace: str) -> bytes | None:
    """The namespace's UNIT key, from the cache when it is there (the evaluation path), or None if unreadable."""
    key = state.unit_keys.cached(namespace)
    if key is not None:
        return key
    try:
        return await run_in_threadpool(state.unit_keys.get, namespace)
    except Exception:  # noqa: BLE001 - no token then; the evaluation itself is still answered
        return None


def exposure_outcome(keys: ExposureKeys, ids: dict[str, int], raw: dict[str, Any], at: float, *,
                     horizon: float) -> OutcomeEntry:
    """One `{exposure, metrics}` item as an outcome credited to what was served, or InvalidOutcomeError."""
    for field in ("flag", "unit_id", "variant", "attributes"):
        if raw.get(field) is not None:
            raise InvalidOutcomeError(f"an outcome with 'exposure' takes no {field!r}: the token says what was served")
    return served_entry(exposure_served(keys, ids, raw["exposure"], horizon=horizon), raw.get("metrics"), at=at)


def exposure_served(keys: ExposureKeys, ids: dict[str, int], token: str, *, horizon: float) -> Served:
    """What an exposure token says was served, or InvalidOutcomeError (forged, expired, a flag that is gone)."""
    if not keys.loaded:
        raise StoreUnavailableError("the exposure-token keys could not be read from the database yet")
    served = keys.verify(token, horizon=horizon)
    if served.flag_id not in ids.values():
        raise InvalidOutcomeError(str(FlagNotFoundError(f"id {served.flag_id}", "the exposure names a flag that is gone")))
    return served
