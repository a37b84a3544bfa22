"""What every route shares: the service state, JSON in and out, and error bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import HTTPException
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import RateLimiter, TokenCache
from rollout.adapters.api.metrics import Metrics
from rollout.adapters.api.settings import ApiSettings
from rollout.adapters.api.snapshot import ChangeSignal, ServiceSnapshot
from rollout.core import Assignment
from rollout.store.secrets import UnitKeys

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses, all with the same `{"error": ...}` body."""
    words = {400: "Malformed request", 401: "Missing, unknown or revoked token", 403: "Scope too small",
             404: "Not found (in the token's namespace)", 409: "Conflict", 413: "Body or batch too large",
             422: "Invalid input", 429: "Rate limited (see Retry-After)", 503: "Database unavailable"}
    return {code: {"description": words[code], "content": {"application/json": {"schema": ERROR_SCHEMA}}}
            for code in codes}


AUTH_ERRORS = (400, 401, 403, 413, 422, 429)


@dataclass
class ServiceState:
    settings: ApiSettings
    engine: Engine
    snapshot: ServiceSnapshot
    signal: ChangeSignal
    tokens: TokenCache
    limiter: RateLimiter
    metrics: Metrics
    unit_keys: UnitKeys  # each namespace's UNIT secret, read once: stored unit hashes are keyed with it


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
