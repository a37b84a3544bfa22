"""POST /v1/feedback: a user's thumbs or rating on what they were served, credited through its exposure token."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import authorize
from rollout.adapters.api.common import AUTH_ERRORS, error, error_responses, json_response, read_json, service
from rollout.adapters.api.exposures import exposure_outcome, exposure_served, namespace_keys
from rollout.app.evals import load_callable
from rollout.core.outcome import kept_text
from rollout.errors import InvalidOutcomeError
from rollout.sdk.client import feedback_metrics
from rollout.adapters.api.routes.outcomes import batch_source
from rollout.store.comments import insert_comment
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
        "comment": {"type": ["string", "null"],
                    "description": "Stored only where the namespace opted in (ROLLOUT_API_COMMENT_NAMESPACES), "
                                   "redacted and capped"},
    },
}


@router.post(
    "/v1/feedback",
    summary="Record a user's feedback on what they were served",
    description=("Stores `thumbs_up` (1/0) and/or `rating` as outcomes of the exposure the token names: credited "
                 "to the variant, stratum and stage that were served. A `comment` is kept only where the namespace "
                 "opted in, redacted and capped. Needs a write or admin token."),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": REQUEST_SCHEMA}}}},
    responses={200: {"description": "Stored"}, **error_responses(*AUTH_ERRORS, 503)},
)
async def post_feedback(request: Request) -> Response:
    principal = await authorize(request, Scope.WRITE)
    state = service(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("exposure"), str):
        raise HTTPException(422, "the body must be {\"exposure\": token, \"thumbs_up\": bool, \"rating\": number, "
                                 "\"comment\": text}")
    unknown = set(body) - {"exposure", "thumbs_up", "rating", "comment"}
    if unknown:
        raise HTTPException(422, f"unknown fields: {sorted(unknown)}")
    comment = body.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise HTTPException(422, "comment must be text")
    view = state.snapshot.view(principal.namespace)
    keys = await namespace_keys(state, principal.namespace)
    scored = comment is None or body.get("thumbs_up") is not None or body.get("rating") is not None
    try:
        entry = None
        if scored:
            raw = {"exposure": body["exposure"], "metrics": feedback_metrics(body.get("thumbs_up"), body.get("rating"))}
            entry = exposure_outcome(keys, view.ids, raw, time.time(), horizon=state.settings.exposure_horizon)
        served = exposure_served(keys, view.ids, body["exposure"], horizon=state.settings.exposure_horizon)
    except InvalidOutcomeError as exc:
        raise HTTPException(422, str(exc)) from None
    kept, why = _kept_comment(state.settings, principal.namespace, comment)
    # Exactly once: the feedback's own body (token and answer) is its key, so a resend stores nothing twice.
    source = batch_source(principal.namespace, request.headers.get("idempotency-key"), [body])
    stored = 0
    try:
        if entry is not None:
            stored = await run_in_threadpool(insert_outcomes, state.engine, source, [(0, entry)])
        if kept is not None:
            new = await run_in_threadpool(lambda: insert_comment(
                state.engine, flag_id=served.flag_id, rollout_id=served.rollout_id, stage=served.stage,
                variant=served.variant, stratum=served.stratum, unit_hash=served.unit_hash, comment=kept,
                at=time.time(), source=source, seq=0))
            why = "stored" if new else "duplicate"
    except Exception:  # noqa: BLE001 - stored or not is unknown: sending it again is safe
        return error(503, "the database did not confirm the feedback; send it again (it is stored at most once)",
                     {"Retry-After": "1"})
    state.metrics.outcomes_accepted.inc(stored)
    accepted = 1 if entry is not None else 0
    return json_response({"accepted": accepted, "stored": stored, "duplicates": accepted - stored, "comment": why})


@lru_cache(maxsize=8)
def _redact_hook(path: str) -> Callable[[str], str]:
    return load_callable(path)


def _kept_comment(settings: Any, namespace: str, comment: str | None) -> tuple[str | None, str | None]:
    """The comment as it may be stored (redacted, capped), or None and why not (None: no comment sent)."""
    if comment is None:
        return None, None
    if not settings.keeps_comments(namespace):
        return None, "not kept: this namespace did not opt in to storing comments"
    redact = _redact_hook(settings.comment_redact) if settings.comment_redact else None
    kept = kept_text(comment, redact=redact, max_chars=settings.comment_max_chars)
    return (kept, None) if kept is not None else (None, "not kept: the redact hook failed on it")
