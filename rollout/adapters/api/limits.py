"""The edge: what one request may cost before anything reads, routes or authenticates it.

`EdgeLimitMiddleware` (outermost ASGI middleware, so it runs first):

* more than `max_headers` header lines, or more than `max_header_bytes` of
  them, is answered 431 at once, in one pass over the list, before routing
  and authentication (FastAPI's header-parameter parsing is quadratic in the
  header count: 10,000 headers cost 9.3 s there);
* a declared Content-Length over `max_body_bytes` is answered 413 without
  reading a byte; a chunked body is counted as it arrives and cut off with
  413 the moment it passes the limit, so a huge upload never sits in memory;
* a body not complete within `body_timeout` seconds of the request's start is
  answered 408 (a slow client holds a connection, never a handler, for long).

`GuardedHttpToolsProtocol` is the uvicorn HTTP protocol `rollout serve`
runs: uvicorn's httptools protocol plus a header timeout. uvicorn itself has
no deadline for a request's headers (its `timeout_keep_alive` only starts
after a response, `h11_max_incomplete_event_size` applies to the h11
protocol only, and `limit_concurrency` would turn held connections into 503s
for everyone), so a connection that opens, or starts a request, and then
sends its headers a byte at a time (slowloris) is closed after
`header_timeout` seconds here. What we rely on from uvicorn: httptools'
parser callbacks (`on_message_begin`, `on_headers_complete`) and its
`timeout_keep_alive` (default 5 s) for idle keep-alive connections.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("rollout.api")


class EdgeLimitMiddleware:
    def __init__(self, app: Any, *, max_body_bytes: int, max_headers: int, max_header_bytes: int,
                 body_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_body_bytes
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.body_timeout = body_timeout
        # Requests reading their body: task -> (deadline, what to do when it passes). One sweep
        # a fraction of the timeout apart checks them all (measured: an asyncio timer per request,
        # or an asyncio.timeout around each receive(), cost 5-10 % of a whole evaluation).
        self._reading: dict[asyncio.Task[Any], tuple[float, Any]] = {}
        self._sweeping = False

    def _watch(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], deadline: float, late: Any) -> None:
        self._reading[task] = (deadline, late)
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(min(1.0, self.body_timeout / 4), self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, (deadline, late) in list(self._reading.items()):
            if deadline <= now:
                del self._reading[task]
                late()
        if self._reading:
            loop.call_later(min(1.0, self.body_timeout / 4), self._sweep, loop)
        else:
            self._sweeping = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", ())
        if len(headers) > self.max_headers:
            await _reply(send, 431, f"more than {self.max_headers} request headers")
            return
        size = 0
        declared = None
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"content-length" and declared is None:
                try:
                    declared = int(value)
                except ValueError:
                    await _reply(send, 400, "Content-Length is not a number")
                    return
        if size > self.max_header_bytes:
            await _reply(send, 431, f"request headers over the {self.max_header_bytes} byte limit")
            return
        if declared is not None and declared > self.max_bytes:
            await _reply(send, 413, f"request body over the {self.max_bytes} byte limit")
            return

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        task = asyncio.current_task()
        watched = False
        received = 0
        body_done = False
        refused: int | None = None
        started = False

        def too_slow() -> None:
            nonlocal refused
            if not body_done and task is not None:
                refused = 408
                task.cancel()

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, body_done, refused, watched
            if body_done:
                return await receive()  # after the body only a disconnect can come: no deadline
            if not watched and task is not None:
                watched = True
                self._watch(loop, task, deadline, too_slow)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    refused = 413
                    raise BodyRefused
            if body_done or message["type"] != "http.request":
                body_done = True
                self._reading.pop(task, None)  # type: ignore[arg-type]
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (Exception, asyncio.CancelledError):
            # Starlette may wrap our signal in its own error handling; `refused` tells the truth.
            # A cancellation is ours only when our timer fired (else the server is shutting down).
            if refused is None:
                raise
            if refused == 408:
                task.uncancel()  # type: ignore[union-attr]
            if not started:
                await self._refuse(send, refused)
        finally:
            if watched:
                self._reading.pop(task, None)  # type: ignore[arg-type]

    async def _refuse(self, send: Any, status: int) -> None:
        if status == 413:
            await _reply(send, 413, f"request body over the {self.max_bytes} byte limit")
        else:
            await _reply(send, 408, f"the request body did not arrive within {self.body_timeout:g} s")


class BodyRefused(Exception):
    """Raised from `receive` when a body is too large or too slow; the edge middleware answers it."""


async def _reply(send: Any, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus a deadline for each request's headers (see the module docstring).

    `header_timeout` is read from the service settings (ROLLOUT_API_HEADER_TIMEOUT)
    in each worker process, since uvicorn builds the protocol from its class.
    """

    header_timeout: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if GuardedHttpToolsProtocol.header_timeout is None:
            from rollout.adapters.api.settings import ApiSettings

            GuardedHttpToolsProtocol.header_timeout = ApiSettings.from_env().header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout or 10.0, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a request is closed too

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()  # from here the body deadline (EdgeLimitMiddleware) applies
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered (pipelined bytes began the next one): not idle
        log.info("rollout: closed a connection whose request headers took over %g s", self.header_timeout)
        body = b'{"error": "the request headers did not arrive in time"}'
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        self.transport.close()
