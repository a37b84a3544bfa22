"""POST /v1/evaluate: which variant each unit gets, answered by the same evaluator as the SDK."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import authorize
from rollout.adapters.api.common import (
    AUTH_ERRORS,
    assignment_json,
    error_responses,
    json_body,
    json_response,
    read_json,
    schema_of,
    service,
    validated,
)
from rollout.adapters.api.exposures import count_exposure, namespace_keys, token_for, unit_key_of
from rollout.adapters.api.models import (
    EVALUATION_REQUEST,
    EvaluationAnswer,
    EvaluationAnswers,
    EvaluationBatch,
    EvaluationItem,
    EvaluationRequest,
)
from rollout.core import Assignment, ErrorCode
from rollout.core.assignment import error_assignment
from rollout.store.tokens import Scope

router = APIRouter(tags=["evaluation"])


def evaluate_one(flags: dict[str, Any], missing: ErrorCode, item: EvaluationItem) -> Assignment:
    compiled = flags.get(item.flag)
    if compiled is None:
        return error_assignment(item.flag, missing, item.default)
    return compiled.evaluate(item.unit_id, item.attributes)  # type: ignore[arg-type]


@router.post(
    "/v1/evaluate",
    summary="Evaluate one flag for one unit, or many at once",
    description=(
        "Send one item `{flag, unit_id, attributes, default}` or `{items: [...]}` (up to the batch limit). "
        "Each answer carries variant, stratum, in_shadow, reason and the flag version. Evaluation never "
        "fails: an unknown flag answers `default` with reason ERROR and error_code FLAG_NOT_FOUND."
    ),
    openapi_extra=json_body(EvaluationRequest),
    responses={200: {"description": "The assignments", "content": {"application/json": {"schema": {
        "oneOf": [schema_of(EvaluationAnswer), schema_of(EvaluationAnswers)]}}}},
               **error_responses(*AUTH_ERRORS, 503)},
)
async def evaluate(request: Request) -> Response:
    # No FastAPI parameters: this is the fast lane's handler too, and the body is read only after auth.
    principal = await authorize(request, Scope.READ)
    state = service(request)
    raw = await read_json(request)
    if isinstance(raw, dict) and isinstance(raw.get("items"), list) and len(raw["items"]) > state.settings.max_batch:
        # Counted before validation: an oversized batch costs no per-item work.
        raise HTTPException(413, f"at most {state.settings.max_batch} evaluations per request, "
                                 f"got {len(raw['items'])}")
    body = validated(EVALUATION_REQUEST, raw)
    flags = state.snapshot.view(principal.namespace).flags
    # Like the SDK: before the first load nothing is known, which is not the same as "no such flag".
    missing = ErrorCode.FLAG_NOT_FOUND if state.snapshot.loaded else ErrorCode.PROVIDER_NOT_READY
    metrics = state.metrics
    view = state.snapshot.view(principal.namespace)
    keys = await namespace_keys(state, principal.namespace)
    unit_key = await unit_key_of(state, principal.namespace)
    if isinstance(body, EvaluationBatch):
        results = []
        for item in body.items:
            a = evaluate_one(flags, missing, item)
            metrics.evaluated(a.reason.value)
            count_exposure(state, principal.namespace, a, item.unit_id)
            results.append({**assignment_json(a), "exposure": token_for(keys, view.ids, a, item.unit_id, unit_key)})
        return json_response({"results": results})
    a = evaluate_one(flags, missing, body)
    metrics.evaluated(a.reason.value)
    count_exposure(state, principal.namespace, a, body.unit_id)
    return json_response({**assignment_json(a), "exposure": token_for(keys, view.ids, a, body.unit_id, unit_key)})
