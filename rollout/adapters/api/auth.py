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
Each token has its own token bucket (`rollout.core.ratelimit`): per worker
process, so with N workers a token may reach N times the rate.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from rollout.adapters.api.metrics import tenant
from rollout.core.ratelimit import KeyedBuckets
from rollout.errors import AuthenticationError, PermissionDeniedError, RateLimitedError, StoreUnavailableError
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
    """public id -> token row (or None for unknown ids), each trusted `ttl` seconds; bounded in size.

    While the database is unreachable (`in_outage()`, or a read that fails or
    takes over `timeout` s), a token that was read within the last `grace`
    seconds stays valid, so the service keeps answering from its snapshot.
    The first read that succeeds again replaces it, so a revocation made
    meanwhile applies as soon as it can be read. A token never seen before
    cannot be checked in an outage: 503, not 401.
    """

    def __init__(self, engine: Engine, *, ttl: float = 2.0, grace: float = 300.0, timeout: float = 1.0,
                 in_outage: Callable[[], bool] = lambda: False, max_entries: int = 10_000) -> None:
        self._engine = engine
        self._ttl = ttl
        self._grace = grace
        self._timeout = timeout
        self._in_outage = in_outage
        self._max = max_entries
        # public id -> (trusted until, record, monotonic time it was read)
        self._entries: OrderedDict[str, tuple[float, TokenRecord | None, float]] = OrderedDict()
        self._reads: dict[str, asyncio.Future[TokenRecord | None]] = {}  # one database read per id at a time
        self.grace_answers = 0

    def _load(self, public_id: str) -> TokenRecord | None:
        with Session(self._engine) as session:
            return find_token(session, public_id)

    def _read(self, public_id: str) -> asyncio.Future[TokenRecord | None]:
        task = self._reads.get(public_id)
        if task is None:
            task = asyncio.ensure_future(run_in_threadpool(self._load, public_id))
            self._reads[public_id] = task
            task.add_done_callback(lambda done: self._read_done(public_id, done))
        return task

    def _read_done(self, public_id: str, done: asyncio.Future[TokenRecord | None]) -> None:
        self._reads.pop(public_id, None)
        if not done.cancelled():
            done.exception()  # retrieved: a read every waiter gave up on must not log "never retrieved"

    async def get(self, public_id: str) -> TokenRecord | None:
        now = time.monotonic()
        hit = self._entries.get(public_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        graced = hit[1] if hit is not None and now - hit[2] <= self._grace else None
        if graced is not None and self._in_outage():
            self.grace_answers += 1
            return graced
        try:
            # shield: a request that gives up must not cancel the read others wait for.
            record = await asyncio.wait_for(asyncio.shield(self._read(public_id)), self._timeout)
        except Exception as exc:  # noqa: BLE001 - the database failed or did not answer in time
            if graced is not None:
                self.grace_answers += 1
                return graced
            raise StoreUnavailableError(f"cannot check the token now ({type(exc).__name__})") from None
        now = time.monotonic()
        self._entries[public_id] = (now + self._ttl, record, now)
        self._entries.move_to_end(public_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return record

    def forget(self, public_id: str) -> None:
        self._entries.pop(public_id, None)


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


async def authenticate(request: Request, cache: TokenCache, limiter: KeyedBuckets) -> Principal:
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
    tenant.set(principal.namespace)
    request.scope["rollout.namespace"] = principal.namespace  # for request timing, outside the handler
    return principal


def require(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """`authorize` as a FastAPI dependency, for routes with declared parameters.

    FastAPI resolves dependencies before it parses any query, header, path or
    body parameter, so a caller without a valid token costs one header lookup,
    never the parsing of what it sent.
    """

    async def caller(request: Request) -> Principal:
        return await authorize(request, scope)

    return caller
