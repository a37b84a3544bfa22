"""GET /healthz (for probes, no token) and GET /metrics (Prometheus text, admin token)."""

from __future__ import annotations


from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import authorize
from rollout.adapters.api.common import AUTH_ERRORS, error_responses, json_response, service
from rollout.adapters.api.metrics import CONTENT_TYPE_LATEST
from rollout.store.tokens import Scope

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    summary="Liveness and readiness",
    description=(
        "The one route without a token, so that load balancers and orchestrators can probe it. It tells "
        "nothing about any tenant: 200 when the flag snapshot is loaded (stale: serving the last state while "
        "the database is unreachable), 503 before the first load."
    ),
    responses={200: {"description": "Serving", "content": {"application/json": {"schema": {
        "type": "object", "required": ["status", "loaded", "stale"],
        "properties": {"status": {"type": "string"}, "loaded": {"type": "boolean"}, "stale": {"type": "boolean"}}}}}},
               503: {"description": "Not ready"}},
)
async def healthz(request: Request) -> Response:
    snapshot = service(request).snapshot
    status = "stale" if snapshot.stale else ("ok" if snapshot.loaded else "starting")
    return json_response({"status": status, "loaded": snapshot.loaded, "stale": snapshot.stale},
                         200 if snapshot.loaded else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process",
    description="Evaluations, outcomes accepted and rejected, snapshot version, request latency. Admin scope.",
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
               **error_responses(*AUTH_ERRORS)},
)
async def metrics(request: Request) -> Response:
    await authorize(request, Scope.ADMIN)
    return Response(service(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
