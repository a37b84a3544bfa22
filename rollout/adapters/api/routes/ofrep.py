"""OFREP: the OpenFeature Remote Evaluation Protocol, so any OpenFeature SDK with an OFREP provider works unchanged.

    POST /ofrep/v1/evaluate/flags/{key}   one flag   {"context": {"targetingKey": "user-1", "tier": "free"}}
    POST /ofrep/v1/evaluate/flags         every flag of the token's namespace (ETag / If-None-Match)

Written against OFREP 0.3.0 (open-feature/protocol service/openapi.yaml at
commit d1a63a4e84e6297599ce566126e7764c1419f80a; a copy is vendored under
tests/adapters/api/ofrep/ for the conformance checks).

The context's `targetingKey` is the unit id; every other context entry is an
attribute. A flag's value is its variant's payload when it has one, else the
variant's name. What the protocol asks, and what we answer:

- reasons on success are only OFREP's: SPLIT (ramp or shadow sample),
  STATIC (promoted, and an inactive flag: everyone gets the same variant),
  DISABLED (rolled back), UNKNOWN (answered from a stale snapshot; then
  `metadata.stale` is true). Our own DEFAULT and STALE never go out.
- a request body must be `{"context": {"targetingKey": "<text>", ...}}`:
  no body or bad JSON is 400 PARSE_ERROR; a body or context that is not an
  object, or a targetingKey that is not text, is 400 INVALID_CONTEXT; a
  missing or empty targetingKey is 400 TARGETING_KEY_MISSING (for one
  flag; in the bulk form each flag carries that failure, so a browser with
  an anonymous context still sees every key). The failure's `metadata`
  says what the baseline would have been (variant, stratum, flagVersion).
- an unknown flag is 404 FLAG_NOT_FOUND, also for an empty key
  (`.../flags/`, no redirect), a key with an encoded slash, and a path with
  `//` (a base URL given with a trailing slash); every other path under
  /ofrep answers an OFREP-shaped 404 or 405 too.
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
from rollout.adapters.api.exposures import count_exposure
from rollout.adapters.api.routes.flags import etag_matches
from rollout.core import Assignment, ErrorCode, Reason
from rollout.store.tokens import Scope

router = APIRouter(prefix="/ofrep/v1", tags=["OFREP"])
fallback = APIRouter(tags=["OFREP"], include_in_schema=False)
"""OFREP-shaped answers for paths under /ofrep that no endpoint serves; include it after every other router."""

CONTEXT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["context"],
    "properties": {"context": {"type": "object", "required": ["targetingKey"],
                               "properties": {"targetingKey": {"type": "string", "minLength": 1}},
                               "additionalProperties": True}},
}
_METADATA: dict[str, Any] = {"type": "object", "additionalProperties": {"type": ["boolean", "string", "number"]}}
SUCCESS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["key", "value", "reason", "variant", "metadata"],
    "properties": {"key": {"type": "string"},
                   "value": {"type": ["boolean", "string", "number", "object"]},
                   "reason": {"type": "string", "enum": ["STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN"]},
                   "variant": {"type": "string"}, "metadata": _METADATA},
}
FAILURE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["key", "errorCode"],
    "properties": {"key": {"type": "string"},
                   "errorCode": {"type": "string",
                                 "enum": ["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"]},
                   "errorDetails": {"type": "string"}, "metadata": _METADATA},
}
NOT_FOUND_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["key", "errorCode"],
    "properties": {"key": {"type": "string"}, "errorCode": {"type": "string", "enum": ["FLAG_NOT_FOUND"]},
                   "errorDetails": {"type": "string"}},
}
BULK_FAILURE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["errorCode"],
    "properties": {"errorCode": {"type": "string"}, "errorDetails": {"type": "string"}},
}
_AUTH = error_responses(401, 403, 413, 429)

# Our reasons in OFREP's words. ERROR never reaches this table: an erroneous answer is a failure.
_REASONS = {Reason.SPLIT: "SPLIT", Reason.STATIC: "STATIC", Reason.DEFAULT: "STATIC",
            Reason.DISABLED: "DISABLED", Reason.STALE: "UNKNOWN"}


class BadContext(Exception):
    """The request body is not an OFREP request; `code` is PARSE_ERROR or INVALID_CONTEXT."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code


def read_context(body: bytes) -> tuple[str | None, dict[str, Any]]:
    """(targeting key or None when missing/empty, attributes) from an OFREP request body, or BadContext."""
    if not body.strip():
        raise BadContext("PARSE_ERROR", 'the request needs a JSON body: {"context": {"targetingKey": "..."}}')
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadContext("PARSE_ERROR", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadContext("INVALID_CONTEXT", 'the body must be an object: {"context": {...}}')
    if "context" not in data:
        raise BadContext("INVALID_CONTEXT", "the body has no 'context'")
    context = data["context"]
    if not isinstance(context, dict):
        raise BadContext("INVALID_CONTEXT", "'context' must be an object")
    key = context.get("targetingKey")
    if key is not None and not isinstance(key, str):
        raise BadContext("INVALID_CONTEXT", f"'targetingKey' must be a string, got {type(key).__name__}")
    attributes = {k: v for k, v in context.items() if k != "targetingKey"}
    return key or None, attributes


def _metadata(a: Assignment) -> dict[str, Any]:
    metadata: dict[str, Any] = {"flagVersion": a.flag_version, "inShadow": a.in_shadow,
                                "isCandidate": a.is_candidate}
    if a.stratum is not None:
        metadata["stratum"] = a.stratum
    if a.reason is Reason.STALE:
        metadata["stale"] = True
    if a.reason in (Reason.DEFAULT, Reason.STALE):
        # OFREP has no word for these; our own provider reads this to answer as it does in-process.
        metadata["rolloutReason"] = a.reason.value
    return metadata


def answer(a: Assignment) -> tuple[int, dict[str, Any]]:
    """(status, body) of one evaluation: a success, or a failure that still says what the baseline was."""
    if a.error_code is not None or a.reason is Reason.ERROR:
        code = a.error_code.value if a.error_code is not None else ErrorCode.GENERAL.value
        metadata = {**_metadata(a), "variant": a.variant}
        details = ("the context has no targetingKey: every unit needs one so it keeps its variant"
                   if code == ErrorCode.TARGETING_KEY_MISSING.value else f"{code} while evaluating {a.flag!r}")
        return 400, {"key": a.flag, "errorCode": code, "errorDetails": details, "metadata": metadata}
    if isinstance(a.value, (list, tuple)):
        # Refused since flags are validated on creation; an older flag may still hold one. Not an object value.
        return 400, {"key": a.flag, "errorCode": ErrorCode.GENERAL.value, "metadata": {**_metadata(a), "variant": a.variant},
                     "errorDetails": f"variant {a.variant!r} has a JSON array payload; OFREP values are objects"}
    return 200, {"key": a.flag, "value": a.value if a.value is not None else a.variant,
                 "reason": _REASONS.get(a.reason, "UNKNOWN"), "variant": a.variant, "metadata": _metadata(a)}


def failure(key: str, code: ErrorCode | str, details: str) -> dict[str, Any]:
    return {"key": key, "errorCode": str(getattr(code, "value", code)), "errorDetails": details}


def _not_found(key: str, details: str) -> Response:
    return json_response(failure(key, ErrorCode.FLAG_NOT_FOUND, details), 404)


@router.post(
    "/evaluate/flags/{key}",
    summary="OFREP: evaluate one flag",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": CONTEXT_SCHEMA}}}},
    responses={200: {"description": "Evaluated", "content": {"application/json": {"schema": SUCCESS_SCHEMA}}},
               400: {"description": "Bad request, bad context or no targetingKey",
                     "content": {"application/json": {"schema": FAILURE_SCHEMA}}},
               404: {"description": "No such flag in the token's namespace",
                     "content": {"application/json": {"schema": NOT_FOUND_SCHEMA}}},
               **_AUTH},
)
async def evaluate_flag(request: Request, key: Annotated[str, Path(max_length=200)]) -> Response:
    principal = await authorize(request, Scope.READ)
    if len(key) > 200:  # what Path(max_length=200) says, checked here too for the fast lane
        return _not_found(key[:200], "no flag with so long a key")
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
        return _not_found(key, f"no flag {key[:100]!r}")
    a = compiled.evaluate(unit_id, attributes)  # type: ignore[arg-type]
    state.metrics.evaluated(a.reason.value)
    count_exposure(state, principal.namespace, a, unit_id)
    status, body = answer(a)
    return json_response(body, status)


@router.post(
    "/evaluate/flags",
    summary="OFREP: evaluate every flag of the namespace (bulk)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": CONTEXT_SCHEMA}}}},
    responses={200: {"description": "Every flag, evaluated", "headers": {"ETag": {"schema": {"type": "string"}}},
                     "content": {"application/json": {"schema": {
                         "type": "object", "required": ["flags"],
                         "properties": {"flags": {"type": "array",
                                                  "items": {"anyOf": [SUCCESS_SCHEMA, FAILURE_SCHEMA]}}}}}}},
               304: {"description": "Unchanged for this context since the ETag in If-None-Match"},
               400: {"description": "Bad request or bad context",
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
    # The answer depends on the flags, on the context and on whether the snapshot is stale (the reasons
    # say so), so the ETag covers all three.
    stale = b"\0stale" if state.snapshot.stale else b""
    etag = '"' + hashlib.sha256(view.etag.encode() + stale + b"\0" + body).hexdigest()[:20] + '"'
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    results = []
    for compiled in view.flags.values():
        a = compiled.evaluate(unit_id, attributes)  # type: ignore[arg-type]
        state.metrics.evaluated(a.reason.value)
        # A bulk answer is every flag served to this unit (a browser reads them all), so each counts.
        count_exposure(state, principal.namespace, a, unit_id)
        results.append(answer(a)[1])
    return json_response({"flags": results}, headers={"ETag": etag})


@router.post("/evaluate/flags/", include_in_schema=False)
async def evaluate_empty_key(request: Request) -> Response:
    """`.../flags/` names the flag with an empty key: there is none (not a redirect to the bulk endpoint)."""
    await authorize(request, Scope.READ)
    return _not_found("", "the flag key is empty (the bulk endpoint is POST /ofrep/v1/evaluate/flags)")


_SINGLE = "/ofrep/v1/evaluate/flags/"
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


@fallback.api_route("/ofrep/{rest:path}", methods=_METHODS)
@fallback.api_route("//{rest:path}", methods=_METHODS)
async def ofrep_unmatched(request: Request, rest: str) -> Response:
    """Paths under /ofrep that no endpoint serves, in OFREP's error shape rather than `{"error": ...}`."""
    path = request.url.path
    raw = request.scope.get("raw_path", b"").decode("latin-1")
    if path.startswith("//") and not path.lstrip("/").startswith("ofrep/"):
        return json_response({"error": "Not Found"}, 404)
    if path.startswith("//"):
        key = path.lstrip("/").removeprefix("ofrep/v1/evaluate/flags").lstrip("/")
        return _not_found(key, "the path has '//': give the OFREP base URL without a trailing slash")
    if request.method == "POST" and path.startswith(_SINGLE):
        # A key with an encoded slash (a%2Fb) arrives decoded and so misses the one-segment route.
        key = raw.split("?", 1)[0][len(_SINGLE):] if raw.startswith(_SINGLE) else path[len(_SINGLE):]
        return _not_found(key, "no flag key holds a '/'")
    if path == "/ofrep/v1/evaluate/flags" or path.startswith(_SINGLE):
        return json_response({"errorCode": "GENERAL", "errorDetails": "OFREP evaluation is POST only"}, 405,
                             headers={"Allow": "POST"})
    return json_response({"errorCode": "GENERAL",
                          "errorDetails": f"no OFREP endpoint at {path[:100]!r}; see POST /ofrep/v1/evaluate/flags"},
                         404)
