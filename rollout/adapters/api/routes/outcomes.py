"""POST /v1/outcomes: batches of outcomes, each validated like `record()`, stored in one transaction, exactly once.

Valid items are stored even when others in the batch are not; each refused
item comes back with its index and the reason. The batch is written in one
transaction before the answer is sent, so what the answer acknowledges is stored.

Every batch has a key: the caller's (`batch_key` in the body or an
`Idempotency-Key` header), else one derived from the body. An item's
idempotency key is (hash of namespace and batch key, its index), so sending a
batch again (after a 503, a timeout, a lost reply) stores nothing twice; the
answer says how many items were `stored` now and how many were `duplicates`
(stored before). A 503 therefore means "not known to be stored: send the same
batch again", which is always safe.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import orjson

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import authorize
from rollout.adapters.api.common import AUTH_ERRORS, error, error_responses, json_response, read_json, service
from rollout.adapters.api.exposures import exposure_outcome, namespace_keys
from rollout.sdk.client import outcome_entry
from rollout.core.outcome import MAX_METRICS
from rollout.errors import InvalidOutcomeError
from rollout.store.outcomes import OutcomeEntry, insert_outcomes
from rollout.store.tokens import Scope

router = APIRouter(tags=["outcomes"])

MAX_BATCH_KEY = 200
EARLIEST = 946_684_800.0  # 2000-01-01: anything before is a unit mistake (milliseconds, say), not a backfill
FUTURE_SLACK = 300.0      # clocks drift; five minutes ahead is tolerated, more is refused

OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "anyOf": [{"required": ["flag", "unit_id", "metrics"]}, {"required": ["exposure", "metrics"]}],
    "properties": {
        "exposure": {"type": "string", "description": "The token /v1/evaluate answered: credits what was served "
                                                      "(then no flag, unit_id, variant or attributes)"},
        "flag": {"type": "string"},
        "unit_id": {"type": ["string", "integer"]},
        "metrics": {"type": "object", "maxProperties": MAX_METRICS,
                    "additionalProperties": {"type": ["number", "boolean"]},
                    "description": "metric name -> value; names are identifiers, time and cost are >= 0"},
        "variant": {"type": ["string", "null"], "description": "Default: the unit's current assignment"},
        "attributes": {"type": ["object", "null"], "description": "Used to find the unit's stratum"},
        "recorded_at": {"type": ["number", "null"], "description": "Unix seconds; default: when received"},
    },
}
REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["outcomes"],
    "properties": {
        "outcomes": {"type": "array", "items": OUTCOME_SCHEMA, "maxItems": 5000},
        "batch_key": {"type": "string", "minLength": 1, "maxLength": MAX_BATCH_KEY,
                      "description": "Idempotency key of this batch (or send an Idempotency-Key header). Default: "
                                     "derived from the outcomes, so two identical batches without recorded_at "
                                     "count once: give distinct batches distinct keys or timestamps."},
    },
}
RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["accepted", "rejected", "stored", "duplicates", "errors"],
    "properties": {
        "accepted": {"type": "integer", "description": "valid items: stored now or before (stored + duplicates)"},
        "rejected": {"type": "integer"},
        "stored": {"type": "integer", "description": "items stored by this request"},
        "duplicates": {"type": "integer", "description": "items of this batch key stored by an earlier request"},
        "errors": {"type": "array", "items": {"type": "object", "required": ["index", "error"],
                                              "properties": {"index": {"type": "integer"},
                                                             "error": {"type": "string"}}}},
    },
}


def _timestamp(raw: Any, now: float) -> float:
    if raw is None:
        return now
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise InvalidOutcomeError(f"recorded_at must be Unix seconds, got {raw!r}")
    if not EARLIEST <= raw <= now + FUTURE_SLACK:
        raise InvalidOutcomeError(f"recorded_at {raw!r} is not between 2000-01-01 and now (Unix seconds)")
    return float(raw)


def batch_source(namespace: str, batch_key: str | None, items: list[Any]) -> int:
    """The first half of each item's idempotency key: a 63-bit hash of the namespace and the batch key.

    Without a caller's key, the key is the outcomes themselves (canonical JSON,
    so a client that re-serialises in another key order still matches).
    """
    if batch_key is None:
        basis = b"body\0" + orjson.dumps(items, option=orjson.OPT_SORT_KEYS)
    else:
        basis = b"key\0" + batch_key.encode()
    digest = hashlib.blake2b(basis, digest_size=8, person=b"rollout-batch", salt=namespace.encode()[:16]).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1


def _batch_key(request: Request, body: dict[str, Any]) -> str | None:
    key = body.get("batch_key", request.headers.get("idempotency-key"))
    if key is None:
        return None
    if not isinstance(key, str) or not 0 < len(key) <= MAX_BATCH_KEY:
        raise HTTPException(422, f"batch_key must be a string of 1 to {MAX_BATCH_KEY} characters")
    return key


def validate_batch(items: list[Any], flags: dict[str, Any], ids: dict[str, int],
                   now: float, unit_key: bytes, served: Any = None,
                   ) -> tuple[list[tuple[int, OutcomeEntry]], list[dict[str, Any]]]:
    """(valid items as (index, outcome), refused items as {index, error}).

    `served(raw, at)` turns an item with an `exposure` token into its entry (see api/exposures.py).
    """
    entries: list[tuple[int, OutcomeEntry]] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(items):
        try:
            if not isinstance(raw, dict):
                raise InvalidOutcomeError("an outcome must be an object with 'flag', 'unit_id' and 'metrics'")
            if served is not None and raw.get("exposure") is not None:
                entries.append((index, served(raw, _timestamp(raw.get("recorded_at"), now))))
                continue
            flag = raw.get("flag")
            compiled = flags.get(flag) if isinstance(flag, str) else None
            if compiled is None:
                raise InvalidOutcomeError(f"unknown flag {flag!r}")
            entries.append((index, outcome_entry(
                compiled, ids[flag], raw.get("unit_id"), raw.get("metrics"), unit_key=unit_key,
                variant=raw.get("variant"), attributes=raw.get("attributes"),
                at=_timestamp(raw.get("recorded_at"), now))))
        except InvalidOutcomeError as exc:
            errors.append({"index": index, "error": str(exc)})
    return entries, errors


@router.post(
    "/v1/outcomes",
    summary="Report a batch of outcomes",
    description=(
        "Each outcome is validated exactly as the Python SDK's `record()` does. Valid outcomes are stored "
        "(in one transaction, before the answer); refused ones are listed in `errors` with their index. "
        "Exactly once: a batch sent again (same `batch_key`, or the same body) stores nothing twice, and the "
        "answer counts `stored` and `duplicates`; after a 503 or a lost reply, send the same batch again. "
        "A batch over the size limit is answered 413 and nothing is stored. Needs a write or admin token."
    ),
    openapi_extra={"requestBody": {"required": True,
                                   "content": {"application/json": {"schema": REQUEST_SCHEMA}}}},
    responses={200: {"description": "What was stored and what was refused",
                     "content": {"application/json": {"schema": RESPONSE_SCHEMA}}},
               **error_responses(*AUTH_ERRORS, 503)},
)
async def post_outcomes(request: Request) -> Response:
    principal = await authorize(request, Scope.WRITE)
    state = service(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("outcomes"), list):
        raise HTTPException(422, "the body must be {\"outcomes\": [...]}")
    items = body["outcomes"]
    if len(items) > state.settings.max_batch:
        raise HTTPException(413, f"at most {state.settings.max_batch} outcomes per request, got {len(items)}")
    if not state.snapshot.loaded:
        return error(503, "the flag snapshot has not loaded from the database yet", {"Retry-After": "1"})
    source = batch_source(principal.namespace, _batch_key(request, body), items)
    view = state.snapshot.view(principal.namespace)
    try:
        unit_key = await run_in_threadpool(state.unit_keys.get, principal.namespace)
    except Exception:  # noqa: BLE001 - read once per namespace; only a never-reached database gets here
        return error(503, "the database is unreachable; nothing of the batch was stored, send it again",
                     {"Retry-After": "1"})
    keys = await namespace_keys(state, principal.namespace)
    entries, errors = validate_batch(
        items, view.flags, view.ids, time.time(), unit_key,
        lambda raw, at: exposure_outcome(keys, view.ids, raw, at, horizon=state.settings.exposure_horizon))
    stored = 0
    if entries:
        try:
            stored = await run_in_threadpool(insert_outcomes, state.engine, source, entries)
        except Exception:  # noqa: BLE001 - stored or not is unknown (a lost commit reply): a resend is safe
            return error(503, "the database did not confirm the batch; send the same batch again "
                              "(it is stored at most once)", {"Retry-After": "1"})
    state.metrics.outcomes_accepted.inc(stored)
    state.metrics.outcomes_rejected.inc(len(errors))
    return json_response({"accepted": len(entries), "rejected": len(errors), "stored": stored,
                          "duplicates": len(entries) - stored, "errors": errors})
