"""Who is calling: bearer tokens, scopes, and a per-token rate limit.

A token travels in `Authorization: Bearer <token>` (or `X-API-Key: <token>`,
which several OpenFeature OFREP providers send). Never in the query string:
URLs end up in access logs, browser history and proxies, so a `?token=` is
ignored, exactly as if it were absent.

Every token belongs to one namespace; handlers act on `principal.namespace`
and nothing else, so there is no parameter a caller could change to reach
another tenant's flags.

Verified tokens are cached for `ttl` seconds, so revoking a token takes
effect on every worker within that time without a database query per request.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from rollout.errors import AuthenticationError, PermissionDeniedError, RateLimitedError
from rollout.store.tokens import Scope, TokenRecord, find_token, split_token


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    namespace: str
    scope: Scope
    public_id: str

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"token:{self.name}"


class TokenCache:
    """public id -> token row (or None for unknown ids), each kept `ttl` seconds; bounded in size."""

    def __init__(self, engine: Engine, *, ttl: float = 2.0, max_entries: int = 10_000) -> None:
        self._engine = engine
        self._ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, TokenRecord | None]] = OrderedDict()

    def _load(self, public_id: str) -> TokenRecord | None:
        with Session(self._engine) as session:
            return find_token(session, public_id)

    async def get(self, public_id: str) -> TokenRecord | None:
        now = time.monotonic()
        hit = self._entries.get(public_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = await run_in_threadpool(self._load, public_id)
        self._entries[public_id] = (now + self._ttl, record)
        self._entries.move_to_end(public_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return record

    def forget(self, public_id: str) -> None:
        self._entries.pop(public_id, None)


class RateLimiter:
    """A token bucket per token: `rate` requests a second on average, bursts up to `burst`.

    Runs on the event loop thread only, so it needs no lock. Per process:
    with N workers a token may reach N times the rate.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 when the request may go ahead, else the seconds until it could."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > 100_000:  # forget idle buckets rather than grow without bound
            self._buckets.clear()
        return (1.0 - tokens) / self.rate


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


async def authenticate(request: Request, cache: TokenCache, limiter: RateLimiter) -> Principal:
    """The caller, or AuthenticationError / RateLimitedError. Unknown, malformed and revoked look alike."""
    token = presented_token(request)
    parts = split_token(token) if token else None
    if parts is None:
        raise AuthenticationError("a valid API token is required (Authorization: Bearer <token>)")
    record = await cache.get(parts[0])
    if record is None or not record.verify(parts[1]) or not record.info.active:
        raise AuthenticationError("a valid API token is required (Authorization: Bearer <token>)")
    info = record.info
    wait = limiter.take(info.public_id)
    if wait > 0:
        raise RateLimitedError(wait)
    return Principal(name=info.name, namespace=info.namespace, scope=info.scope, public_id=info.public_id)


def retry_after_header(error: RateLimitedError) -> str:
    return str(max(1, math.ceil(error.retry_after)))


async def authorize(request: Request, scope: Scope) -> Principal:
    """The caller, who must hold at least `scope`; else AuthenticationError, PermissionDeniedError or RateLimitedError.

    Routes call this first thing instead of declaring a FastAPI dependency:
    on the evaluation path dependency resolution cost more than everything
    else the request does. The OpenAPI document still declares the scheme
    (see `rollout.adapters.api.app`).
    """
    state = request.app.state.rollout
    principal = await authenticate(request, state.tokens, state.limiter)
    if not principal.scope.covers(scope):
        raise PermissionDeniedError(
            f"token {principal.name!r} has scope {principal.scope.value!r}; this needs {scope.value!r}"
        )
    return principal
