"""The FastAPI application: `create_app(settings)` builds one; `rollout serve` runs it under uvicorn.

Layout: one router per resource in `rollout.adapters.api.routes`; this module wires
them, the middleware (body size limit outermost, then request timing) and
the error handlers that turn every failure into a JSON `{"error": ...}` with
the right status, never a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import RateLimiter, TokenCache, retry_after_header
from rollout.adapters.api.common import ServiceState, error
from rollout.adapters.api.fastlane import FastLane
from rollout.adapters.api.limits import BodyLimitMiddleware
from rollout.adapters.api.metrics import Metrics, TimingMiddleware
from rollout.adapters.api.routes import evaluate, flags, ofrep, ops, outcomes, rollouts
from rollout.adapters.api.settings import ApiSettings
from rollout.adapters.api.snapshot import ChangeSignal, ServiceSnapshot
from rollout.sdk.snapshot import Refresher
from rollout.errors import AuthenticationError, PermissionDeniedError, RateLimitedError, StoreUnavailableError
from rollout.store.db import database_url, make_engine
from rollout.store.secrets import UnitKeys

log = logging.getLogger("rollout.api")

ROUTERS = (flags.router, evaluate.router, outcomes.router, rollouts.router, ofrep.router, ops.router)

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
    snapshot = ServiceSnapshot(engine)
    signal = ChangeSignal()
    snapshot.on_change(signal.fire_threadsafe)
    metrics = Metrics(snapshot)
    state = ServiceState(
        settings=settings, engine=engine, snapshot=snapshot, signal=signal,
        tokens=TokenCache(engine, ttl=settings.token_ttl),
        limiter=RateLimiter(settings.rate_limit, settings.rate_burst), metrics=metrics,
        unit_keys=UnitKeys(engine),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        signal.bind(asyncio.get_running_loop())
        snapshot.refresh(force=True)
        refresher = Refresher(snapshot, engine, interval=settings.refresh_interval,  # type: ignore[arg-type]
                              listen=settings.listen)
        try:
            yield
        finally:
            refresher.stop()
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
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)  # added last: runs first
    return app


def _document_security(app: FastAPI) -> None:
    """Declare the bearer token in the OpenAPI document: on every operation except /healthz."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = {"token": {
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

    @app.exception_handler(AuthenticationError)
    async def unauthenticated(request: Request, exc: AuthenticationError) -> Response:
        return error(401, str(exc), {"WWW-Authenticate": 'Bearer realm="rollout"'})

    @app.exception_handler(PermissionDeniedError)
    async def forbidden(request: Request, exc: PermissionDeniedError) -> Response:
        return error(403, str(exc))

    @app.exception_handler(RateLimitedError)
    async def rate_limited(request: Request, exc: RateLimitedError) -> Response:
        return error(429, str(exc), {"Retry-After": retry_after_header(exc)})

    @app.exception_handler(StoreUnavailableError)
    @app.exception_handler(OperationalError)
    async def unavailable(request: Request, exc: Any) -> Response:
        log.warning("rollout: database unavailable: %s", exc)
        return error(503, "the database is unavailable; retry", {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("rollout: unexpected error on %s %s", request.method, request.url.path)
        return error(500, "internal error")


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes: settings come from ROLLOUT_* environment variables."""
    return create_app(ApiSettings.from_env())
