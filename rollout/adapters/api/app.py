"""The FastAPI application: `create_app(settings)` builds one; `rollout serve` runs it under uvicorn.

Layout: one router per resource in `rollout.adapters.api.routes`; this module wires
them, the middleware (edge limits outermost: headers, body size and time; then
request timing) and the error handlers that turn every failure into a JSON
`{"error": ...}` with the right status, never a stack trace. The flag snapshot
is the SDK's (`rollout.sdk.snapshot`), over every namespace.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from rollout.adapters.api.auth import TokenCache
from rollout.adapters.api.common import SCHEMAS, ServiceState, error
from rollout.adapters.api.errors import error_response
from rollout.adapters.api.exposures import ExposureWriter
from rollout.adapters.api.fastlane import FastLane
from rollout.adapters.api.limits import EdgeLimitMiddleware
from rollout.adapters.api.metrics import Metrics, TimingMiddleware
from rollout.adapters.api.routes import evaluate, feedback, flags, ofrep, ops, otlp, outcomes, rollouts
from rollout.adapters.api.settings import ApiSettings
from rollout.adapters.api.snapshot import ChangeSignal
from rollout.core.ratelimit import KeyedBuckets
from rollout.errors import RolloutError, StoreUnavailableError
from rollout.sdk.snapshot import Refresher, Snapshot
from rollout.store.db import database_url, make_engine
from rollout.store.secrets import UnitKeys

log = logging.getLogger("rollout.api")

# ofrep.fallback last: it answers, in OFREP's shape, the /ofrep paths no other route serves.
ROUTERS = (flags.router, evaluate.router, outcomes.router, feedback.router, rollouts.router, ofrep.router, ops.router,
           otlp.router, ofrep.fallback)

DESCRIPTION = """\
Flag state for apps in any language. Every route except `/healthz` needs an API token
(`Authorization: Bearer rlt_...`, or `X-API-Key`), made with `rollout token create`; a token sees and
changes only its own namespace. Scopes: read (flags, evaluation, OFREP) < write (+ outcomes) < admin
(+ rollback, metrics). Over its rate a token gets 429 with Retry-After.
"""


def create_app(settings: ApiSettings | None = None, *, engine: Engine | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_env()
    owns_engine = engine is None
    if engine is None:
        url = database_url(settings.database_url)
        # Writes run in the threadpool: give them enough connections that a burst of batches does not queue.
        engine = make_engine(url) if url.startswith("sqlite") else make_engine(url, pool_size=10, max_overflow=10)
    snapshot = Snapshot(engine, namespace=None)
    signal = ChangeSignal()
    snapshot.on_change(signal.fire_threadsafe)
    metrics = Metrics(snapshot)
    state = ServiceState(
        settings=settings, engine=engine, snapshot=snapshot, signal=signal,
        tokens=TokenCache(engine, ttl=settings.token_ttl, grace=settings.token_grace,
                          timeout=settings.token_timeout, in_outage=lambda: snapshot.stale),
        limiter=KeyedBuckets(settings.rate_limit, settings.rate_burst), metrics=metrics,
        unit_keys=UnitKeys(engine),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        signal.bind(asyncio.get_running_loop())
        snapshot.refresh(force=True)
        refresher = Refresher(snapshot, interval=settings.refresh_interval, listen=settings.listen,
                              timeout=settings.refresh_timeout)
        exposures = ExposureWriter(state)
        exposures.start()
        try:
            yield
        finally:
            refresher.stop()
            exposures.stop()
            if owns_engine:
                engine.dispose()

    app = FastAPI(title="rollout", version="1", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.rollout = state
    for router in ROUTERS:
        app.include_router(router)
    _install_error_handlers(app)
    _document_security(app)
    app.add_middleware(FastLane, exact={("POST", "/v1/evaluate"): evaluate.evaluate},
                       prefixed={("POST", "/ofrep/v1/evaluate/flags/"): (ofrep.evaluate_flag,
                                                                        "/ofrep/v1/evaluate/flags/{key}")})
    app.add_middleware(TimingMiddleware, metrics=metrics)
    if settings.cors_origins:  # off by default; a preflight is answered before the routes
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "If-None-Match"],
                           expose_headers=["ETag", "Retry-After"], max_age=600)
    app.add_middleware(EdgeLimitMiddleware, max_body_bytes=settings.max_body_bytes,  # added last: runs first
                       max_headers=settings.max_headers, max_header_bytes=settings.max_header_bytes,
                       body_timeout=settings.body_timeout)
    return app


def _document_security(app: FastAPI) -> None:
    """Declare the bearer token (on every operation except /healthz) and the model schemas in the document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(SCHEMAS)  # the request models' component schemas
        components["securitySchemes"] = {"token": {
            "type": "http", "scheme": "bearer",
            "description": "rollout token create --scope read|write|admin (also accepted as X-API-Key)"}}
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                if path != "/healthz":
                    operation["security"] = [{"token": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 304:
            return Response(status_code=304, headers=exc.headers)
        return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for e in exc.errors()[:10]:
            where = ".".join(str(p) for p in e.get("loc", ()))
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        return error(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(RolloutError)
    async def domain_error(request: Request, exc: RolloutError) -> Response:
        if isinstance(exc, StoreUnavailableError):
            log.warning("rollout: database unavailable: %s", exc)
        return error_response(exc)

    @app.exception_handler(OperationalError)
    async def unavailable(request: Request, exc: OperationalError) -> Response:
        # A route that used the engine outside `transaction()`: the same answer as StoreUnavailableError.
        log.warning("rollout: database unavailable: %s", exc)
        return error_response(StoreUnavailableError(str(exc)))

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, exc: ClientDisconnect) -> Response:
        # The client went away mid-request: nobody reads this answer, and it is no server error.
        log.info("rollout: client disconnected during %s %s", request.method, request.url.path)
        return error(499, "client closed the request")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("rollout: unexpected error on %s %s", request.method, request.url.path)
        return error(500, "internal error")


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes: settings come from ROLLOUT_* environment variables."""
    return create_app(ApiSettings.from_env())
