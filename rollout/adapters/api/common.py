"""What every route shares: the service state, JSON in and out, request models, and error bodies.

Request and response bodies are pydantic models (`rollout.adapters.api.models`):
one definition validates the input and feeds the OpenAPI document. Bodies are
read only after `authorize` (see `read_model`), so a caller without a valid
token never gets its body parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import TokenCache
from rollout.adapters.api.metrics import Metrics
from rollout.adapters.api.settings import ApiSettings
from rollout.adapters.api.snapshot import ChangeSignal, Snapshot
from rollout.core import Assignment
from rollout.core.ratelimit import KeyedBuckets
from rollout.store.secrets import UnitKeys

T = TypeVar("T")

SCHEMAS: dict[str, Any] = {}
"""Component schemas of the request models, merged into the OpenAPI document by the app."""
REF_TEMPLATE = "#/components/schemas/{model}"


class ErrorBody(BaseModel):
    """Every error answer: one sentence saying what was wrong."""

    error: str


def schema_of(model: Any) -> dict[str, Any]:
    """The OpenAPI schema of a model or type, its nested models registered as components."""
    schema = TypeAdapter(model).json_schema(ref_template=REF_TEMPLATE)
    SCHEMAS.update(schema.pop("$defs", {}))
    name = getattr(model, "__name__", None)
    if isinstance(model, type) and issubclass(model, BaseModel) and name:
        SCHEMAS[name] = schema
        return {"$ref": REF_TEMPLATE.format(model=name)}
    return schema


def json_body(model: Any) -> dict[str, Any]:
    """`openapi_extra` declaring a required JSON request body of this model."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema_of(model)}}}}


ERROR_SCHEMA: dict[str, Any] = schema_of(ErrorBody)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses, all with the same `{"error": ...}` body."""
    words = {400: "Malformed request", 401: "Missing, unknown or revoked token", 403: "Scope too small",
             404: "Not found (in the token's namespace)", 409: "Conflict", 413: "Body or batch too large",
             408: "The body did not arrive in time", 422: "Invalid input", 429: "Rate limited (see Retry-After)",
             431: "Too many or too large request headers", 503: "Database unavailable"}
    return {code: {"description": words[code], "content": {"application/json": {"schema": ERROR_SCHEMA}}}
            for code in codes}


AUTH_ERRORS = (400, 401, 403, 413, 422, 429)


@dataclass
class ServiceState:
    settings: ApiSettings
    engine: Engine
    snapshot: Snapshot
    signal: ChangeSignal
    tokens: TokenCache
    limiter: KeyedBuckets
    metrics: Metrics
    unit_keys: UnitKeys  # each namespace's UNIT secret, read once: stored unit hashes are keyed with it
    # namespace -> (its exposure-token keys, when loading them was last tried); see api/exposures.py
    exposure_keys: dict[str, tuple[Any, float]] = field(default_factory=dict)
    # namespace -> the exposure counts of evaluations served to it, written by ExposureWriter; see api/exposures.py
    exposure_counts: dict[str, Any] = field(default_factory=dict)


def service(request: Request) -> ServiceState:
    return request.app.state.rollout  # type: ignore[no-any-return]


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, headers=headers, media_type="application/json")


def error(status_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status_code, headers)


async def read_json(request: Request) -> Any:
    """The parsed body, or a 400 naming the problem. The size limit was enforced before this."""
    body = await request.body()
    if not body:
        raise HTTPException(400, "the request needs a JSON body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from None


async def read_model(request: Request, adapter: TypeAdapter[T], where: str = "body") -> T:
    """The body validated as `adapter`'s type: 400 when it is not JSON, 422 naming each invalid field.

    orjson decodes (measured faster here than validating the bytes directly,
    and strict about UTF-8 and lone surrogates); pydantic checks the shape.
    """
    return validated(adapter, await read_json(request), where)


def validated(adapter: TypeAdapter[T], raw: Any, where: str = "body") -> T:
    """`raw` (decoded JSON) as `adapter`'s type, or RequestValidationError naming each invalid field (422)."""
    try:
        return adapter.validate_python(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": (where, *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
        ) from None


def assignment_json(a: Assignment) -> dict[str, Any]:
    return {
        "flag": a.flag,
        "variant": a.variant,
        "value": a.value,
        "stratum": a.stratum,
        "in_shadow": a.in_shadow,
        "is_candidate": a.is_candidate,
        "reason": a.reason.value,
        "error_code": a.error_code.value if a.error_code is not None else None,
        "flag_version": a.flag_version,
    }


def has_control_characters(text: str) -> bool:
    """NUL and other C0 controls (tab and newline aside) have no place in a stored label or reason."""
    return any(ord(ch) < 32 and ch not in "\t\n\r" for ch in text)
