"""OFREP: the OpenFeature Remote Evaluation Protocol, so any OpenFeature SDK with an OFREP provider works unchanged.

    POST /ofrep/v1/evaluate/flags/{key}   one flag   {"context": {"targetingKey": "user-1", "tier": "free"}}
    POST /ofrep/v1/evaluate/flags         every flag of the token's namespace (ETag / If-None-Match)

The context's `targetingKey` is the unit id; every other context entry is an
attribute. A flag's value is its variant's payload when it has one, else the
variant's name. Evaluation follows the golden cases: a missing targeting key
still answers the baseline (200, reason ERROR, `metadata.errorCode`
TARGETING_KEY_MISSING), as the SDK does, so an app never loses its baseline;
only an unknown flag is an error response (404 FLAG_NOT_FOUND), from which
the OpenFeature SDK returns the caller's default.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import authorize
from rollout.adapters.api.common import error_responses, json_response, service
from rollout.adapters.api.routes.flags import etag_matches
from rollout.core import Assignment, ErrorCode, Reason
from rollout.store.tokens import Scope

router = APIRouter(prefix="/ofrep/v1", tags=["OFREP"])

CONTEXT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"context": {"type": "object", "properties": {"targetingKey": {"type": "string"}},
                               "additionalProperties": True}},
}
SUCCESS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["key", "value", "reason", "variant", "metadata"],
    "properties": {"key": {"type": "string"}, "value": {}, "reason": {"type": "string"},
                   "variant": {"type": "string"}, "metadata": {"type": "object"}},
}
FAILURE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["key", "errorCode"],
    "properties": {"key": {"type": "string"}, "errorCode": {"type": "string"}, "errorDetails": {"type": "string"}},
}
BULK_FAILURE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["errorCode"],
    "properties": {"errorCode": {"type": "string"}, "errorDetails": {"type": "string"}},
}
_AUTH = error_responses(401, 403, 413, 429)


class BadContext(Exception):
    """The request body is not an OFREP context; `code` is PARSE_ERROR or INVALID_CONTEXT."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code


def read_context(body: bytes) -> tuple[Any, dict[str, Any]]:
    """(targeting key, attributes) from an OFREP request body, or BadContext."""
    if not body.strip():
        return None, {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadContext("PARSE_ERROR", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadContext("INVALID_CONTEXT", "the body must be an object: {\"context\": {...}}")
    context = data.get("context", {})
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise BadContext("INVALID_CONTEXT", "'context' must be an object")
    attributes = {k: v for k, v in context.items() if k != "targetingKey"}
    return context.get("targetingKey"), attributes


def success(a: Assignment) -> dict[str, Any]:
    metadata: dict[str, Any] = {"flagVersion": a.flag_version, "inShadow": a.in_shadow,
                                "isCandidate": a.is_candidate}
    if a.stratum is not None:
        metadata["stratum"] = a.stratum
    if a.error_code is not None:
        metadata["errorCode"] = a.error_code.value
    return {"key": a.flag, "value": a.value if a.value is not None else a.variant, "reason": a.reason.value,
            "variant": a.variant, "metadata": metadata}


def failure(key: str, code: ErrorCode | str, details: str) -> dict[str, Any]:
    return {"key": key, "errorCode": str(getattr(code, "value", code)), "errorDetails": details}


@router.post(
    "/evaluate/flags/{key}",
    summary="OFREP: evaluate one flag",
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": CONTEXT_SCHEMA}}}},
    responses={200: {"description": "Evaluated", "content": {"application/json": {"schema": SUCCESS_SCHEMA}}},
               400: {"description": "Bad context", "content": {"application/json": {"schema": FAILURE_SCHEMA}}},
               404: {"description": "No such flag in the token's namespace",
                     "content": {"application/json": {"schema": FAILURE_SCHEMA}}},
               **_AUTH},
)
async def evaluate_flag(request: Request, key: Annotated[str, Path(max_length=200)]) -> Response:
    principal = await authorize(request, Scope.READ)
    if len(key) > 200:  # what Path(max_length=200) says, checked here too for the fast lane
        return json_response(failure(key[:200], ErrorCode.FLAG_NOT_FOUND, "no flag with so long a key"), 404)
    state = service(request)
    try:
        unit_id, attributes = read_context(await request.body())
    except BadContext as exc:
        return json_response(failure(key, exc.code, str(exc)), 400)
    compiled = state.snapshot.view(principal.namespace).flags.get(key)
    if compiled is None:
        state.metrics.evaluated(Reason.ERROR.value)
        if not state.snapshot.loaded:
            return json_response(failure(key, ErrorCode.PROVIDER_NOT_READY, "flags have not loaded yet"), 503)
        return json_response(failure(key, ErrorCode.FLAG_NOT_FOUND, f"no flag {key[:100]!r}"), 404)
    a = compiled.evaluate(unit_id, attributes)
    state.metrics.evaluated(a.reason.value)
    return json_response(success(a))


@router.post(
    "/evaluate/flags",
    summary="OFREP: evaluate every flag of the namespace (bulk)",
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": CONTEXT_SCHEMA}}}},
    responses={200: {"description": "Every flag, evaluated", "headers": {"ETag": {"schema": {"type": "string"}}},
                     "content": {"application/json": {"schema": {
                         "type": "object", "required": ["flags"],
                         "properties": {"flags": {"type": "array",
                                                  "items": {"oneOf": [SUCCESS_SCHEMA, FAILURE_SCHEMA]}}}}}}},
               304: {"description": "Unchanged for this context since the ETag in If-None-Match"},
               400: {"description": "Bad context",
                     "content": {"application/json": {"schema": BULK_FAILURE_SCHEMA}}},
               **_AUTH},
)
async def evaluate_all(request: Request,
                       if_none_match: Annotated[str | None, Header(max_length=1000)] = None) -> Response:
    principal = await authorize(request, Scope.READ)
    state = service(request)
    body = await request.body()
    try:
        unit_id, attributes = read_context(body)
    except BadContext as exc:
        return json_response({"errorCode": exc.code, "errorDetails": str(exc)}, 400)
    view = state.snapshot.view(principal.namespace)
    # The answer depends on the flags and on the context, so the ETag covers both.
    etag = '"' + hashlib.sha256(view.etag.encode() + b"\0" + body).hexdigest()[:20] + '"'
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    results = []
    for compiled in view.flags.values():
        a = compiled.evaluate(unit_id, attributes)
        state.metrics.evaluated(a.reason.value)
        results.append(success(a))
    return json_response({"flags": results}, headers={"ETag": etag})
