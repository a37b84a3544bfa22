"""Refuse oversized request bodies before anything reads or parses them.

A declared Content-Length over the limit is answered 413 at once, without
reading a byte. A chunked body is counted as it arrives and cut off with 413
the moment it passes the limit, so a huge upload never sits in memory.
"""

from __future__ import annotations

from typing import Any

import orjson


class BodyLimitMiddleware:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reply(send, 400, "Content-Length is not a number")
                    return
                break
        if declared is not None and declared > self.max_bytes:
            await _reply(send, 413, f"request body over the {self.max_bytes} byte limit")
            return

        received = 0
        too_large = False
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise BodyTooLarge
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _reply(send, 413, f"request body over the {self.max_bytes} byte limit")
        except Exception:
            # Starlette may wrap our signal in its own error handling; the flag tells the truth.
            if too_large and not started:
                await _reply(send, 413, f"request body over the {self.max_bytes} byte limit")
                return
            raise


class BodyTooLarge(Exception):
    """Raised from `receive` when a streamed body passes the limit; this middleware turns it into a 413."""


async def _reply(send: Any, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
