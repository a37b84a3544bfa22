"""POST /v1/evaluate: which variant each unit gets, answered by the same evaluator as the SDK."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import authorize
from rollout.adapters.api.common import AUTH_ERRORS, assignment_json, error_responses, json_response, read_json, service
from rollout.adapters.api.exposures import namespace_keys, token_for
from rollout.core import Assignment, ErrorCode
from rollout.core.assignment import error_assignment
from rollout.store.tokens import Scope

router = APIRouter(tags=["evaluation"])

_SCALAR = {"type": ["string", "number", "boolean", "null"]}
ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["flag"],
    "properties": {
        "flag": {"type": "string", "maxLength": 200},
        "unit_id": {"type": ["string", "integer", "null"],
                    "description": "The unit (user, session, request); integers hash as their decimal text"},
        "attributes": {"type": ["object", "null"], "additionalProperties": _SCALAR},
        "default": {"type": ["string", "null"], "description": "Answered when the flag is unknown"},
    },
}
RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["flag", "variant", "stratum", "in_shadow", "reason", "error_code", "flag_version"],
    "properties": {
        "flag": {"type": "string"},
        "variant": {"type": ["string", "null"]},
        "value": {},
        "stratum": {"type": ["string", "null"]},
        "in_shadow": {"type": "boolean"},
        "is_candidate": {"type": "boolean"},
        "reason": {"type": "string", "enum": ["SPLIT", "STATIC", "DEFAULT", "DISABLED", "STALE", "ERROR"]},
        "error_code": {"type": ["string", "null"]},
        "flag_version": {"type": "integer"},
        "exposure": {"type": ["string", "null"],
                     "description": "Signed token of what was served: send it with late outcomes (POST /v1/outcomes)"},
    },
}
REQUEST_SCHEMA: dict[str, Any] = {
    "oneOf": [
        ITEM_SCHEMA,
        {"type": "object", "required": ["items"],
         "properties": {"items": {"type": "array", "items": ITEM_SCHEMA, "maxItems": 5000}}},
    ]
}
RESPONSE_SCHEMA: dict[str, Any] = {
    "oneOf": [
        RESULT_SCHEMA,
        {"type": "object", "required": ["results"],
         "properties": {"results": {"type": "array", "items": RESULT_SCHEMA}}},
    ]
}


def parse_item(raw: Any, where: str) -> tuple[str, Any, Any, str | None]:
    """(flag, unit_id, attributes, default) of one request item, or a 422 naming the field.

    The unit id is passed through as sent: the evaluator itself decides that
    an empty, null or non-text id gets the baseline with TARGETING_KEY_MISSING,
    exactly as the SDK does.
    """
    if not isinstance(raw, dict):
        raise HTTPException(422, f"{where} must be an object with 'flag', 'unit_id' and 'attributes'")
    flag = raw.get("flag")
    if not isinstance(flag, str):
        raise HTTPException(422, f"{where}.flag must be a string")
    attributes = raw.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise HTTPException(422, f"{where}.attributes must be an object of attribute values")
    default = raw.get("default")
    if default is not None and not isinstance(default, str):
        raise HTTPException(422, f"{where}.default must be a string")
    return flag, raw.get("unit_id"), attributes, default


def evaluate_one(flags: dict[str, Any], missing: ErrorCode, flag: str, unit_id: Any, attributes: Any,
                 default: str | None) -> Assignment:
    compiled = flags.get(flag)
    if compiled is None:
        return error_assignment(flag, missing, default)
    return compiled.evaluate(unit_id, attributes)


@router.post(
    "/v1/evaluate",
    summary="Evaluate one flag for one unit, or many at once",
    description=(
        "Send one item `{flag, unit_id, attributes, default}` or `{items: [...]}` (up to the batch limit). "
        "Each answer carries variant, stratum, in_shadow, reason and the flag version. Evaluation never "
        "fails: an unknown flag answers `default` with reason ERROR and error_code FLAG_NOT_FOUND."
    ),
    openapi_extra={"requestBody": {"required": True,
                                   "content": {"application/json": {"schema": REQUEST_SCHEMA}}}},
    responses={200: {"description": "The assignments",
                     "content": {"application/json": {"schema": RESPONSE_SCHEMA}}},
               **error_responses(*AUTH_ERRORS, 503)},
)
async def evaluate(request: Request) -> Response:
    principal = await authorize(request, Scope.READ)
    state = service(request)
    body = await read_json(request)
    flags = state.snapshot.view(principal.namespace).flags
    # Like the SDK: before the first load nothing is known, which is not the same as "no such flag".
    missing = ErrorCode.FLAG_NOT_FOUND if state.snapshot.loaded else ErrorCode.PROVIDER_NOT_READY
    metrics = state.metrics
    keys, ids = await namespace_keys(state, principal.namespace), state.snapshot.view(principal.namespace).ids
    if isinstance(body, dict) and "items" in body:
        items = body["items"]
        if not isinstance(items, list):
            raise HTTPException(422, "'items' must be a list of evaluations")
        if len(items) > state.settings.max_batch:
            raise HTTPException(413, f"at most {state.settings.max_batch} evaluations per request, got {len(items)}")
        results = []
        for i, raw in enumerate(items):
            item = parse_item(raw, f"items[{i}]")
            a = evaluate_one(flags, missing, *item)
            metrics.evaluated(a.reason.value)
            results.append({**assignment_json(a), "exposure": token_for(keys, ids, a, item[1])})
        return json_response({"results": results})
    item = parse_item(body, "the body")
    a = evaluate_one(flags, missing, *item)
    metrics.evaluated(a.reason.value)
    return json_response({**assignment_json(a), "exposure": token_for(keys, ids, a, item[1])})
