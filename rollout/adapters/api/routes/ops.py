"""GET /healthz (for probes, no token) and GET /metrics (Prometheus text, admin token)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import authorize
from rollout.adapters.api.common import AUTH_ERRORS, error_responses, json_response, schema_of, service
from rollout.adapters.api.metrics import CONTENT_TYPE_LATEST
from rollout.adapters.api.models import Health
from rollout.store.tokens import Scope

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    summary="Liveness and readiness",
    description=(
        "The one route without a token, so that load balancers and orchestrators can probe it. It tells "
        "nothing about any tenant and never waits on the database: `ok` (200) when the flag snapshot is "
        "fresh; `stale` (200) while the database is unreachable (refused or silent past the refresh "
        "timeout) and the last snapshot is served; `down` (503) when there is no snapshot to serve."
    ),
    responses={200: {"description": "Serving (ok or stale)",
                     "content": {"application/json": {"schema": schema_of(Health)}}},
               503: {"description": "Down: no snapshot loaded",
                     "content": {"application/json": {"schema": schema_of(Health)}}}},
)
async def healthz(request: Request) -> Response:
    snapshot = service(request).snapshot
    status = "down" if not snapshot.loaded else ("stale" if snapshot.stale else "ok")
    return json_response({"status": status, "loaded": snapshot.loaded, "stale": snapshot.stale},
                         200 if snapshot.loaded else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process, for the token's namespace",
    description=("Admin scope. The token's own namespace's evaluations, outcomes, request latency and snapshot "
                 "version, and the service's snapshot health; nothing of other namespaces."),
    responses={200: {"description": "Prometheus text format",
                     "content": {"text/plain": {"schema": {"type": "string"}}}},
               **error_responses(*AUTH_ERRORS)},
)
async def metrics(request: Request) -> Response:
    principal = await authorize(request, Scope.ADMIN)
    return Response(service(request).metrics.render(principal.namespace), media_type=CONTENT_TYPE_LATEST)
