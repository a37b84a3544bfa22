"""POST /v1/feedback: a user's thumbs or rating on what they were served, credited through its exposure token."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import authorize
from rollout.adapters.api.common import AUTH_ERRORS, error, error_responses, json_response, read_json, service
from rollout.adapters.api.exposures import exposure_outcome, namespace_keys
from rollout.errors import InvalidOutcomeError
from rollout.sdk.client import feedback_metrics
from rollout.adapters.api.routes.outcomes import batch_source
from rollout.store.outcomes import insert_outcomes
from rollout.store.tokens import Scope

router = APIRouter(tags=["outcomes"])

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["exposure"],
    "properties": {
        "exposure": {"type": "string", "description": "The token /v1/evaluate answered with"},
        "thumbs_up": {"type": ["boolean", "null"], "description": "Stored as the metric thumbs_up (1 or 0)"},
        "rating": {"type": ["number", "null"], "description": "Stored as the metric rating"},
    },
}


@router.post(
    "/v1/feedback",
    summary="Record a user's feedback on what they were served",
    description=("Stores `thumbs_up` (1/0) and/or `rating` as outcomes of the exposure the token names: credited "
                 "to the variant, stratum and stage that were served. Needs a write or admin token."),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": REQUEST_SCHEMA}}}},
    responses={200: {"description": "Stored"}, **error_responses(*AUTH_ERRORS, 503)},
)
async def post_feedback(request: Request) -> Response:
    principal = await authorize(request, Scope.WRITE)
    state = service(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("exposure"), str):
        raise HTTPException(422, "the body must be {\"exposure\": token, \"thumbs_up\": bool, \"rating\": number}")
    unknown = set(body) - {"exposure", "thumbs_up", "rating"}
    if unknown:
        raise HTTPException(422, f"unknown fields: {sorted(unknown)}")
    view = state.snapshot.view(principal.namespace)
    keys = await namespace_keys(state, principal.namespace)
    try:
        raw = {"exposure": body["exposure"], "metrics": feedback_metrics(body.get("thumbs_up"), body.get("rating"))}
        entry = exposure_outcome(keys, view.ids, raw, time.time(), horizon=state.settings.exposure_horizon)
    except InvalidOutcomeError as exc:
        raise HTTPException(422, str(exc)) from None
    # Exactly once: the feedback's own body (token and answer) is its key, so a resend stores nothing twice.
    source = batch_source(principal.namespace, request.headers.get("idempotency-key"), [body])
    try:
        stored = await run_in_threadpool(insert_outcomes, state.engine, source, [(0, entry)])
    except Exception:  # noqa: BLE001 - stored or not is unknown: sending it again is safe
        return error(503, "the database did not confirm the feedback; send it again (it is stored at most once)",
                     {"Retry-After": "1"})
    state.metrics.outcomes_accepted.inc(stored)
    return json_response({"accepted": 1, "stored": stored, "duplicates": 1 - stored})
