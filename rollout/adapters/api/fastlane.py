"""A direct path for the hottest requests, past FastAPI's router and dependency machinery.

Measured here on one uvicorn worker, FastAPI's per-request machinery cost
about 160 µs, more than parsing, authenticating and evaluating together, and
capped the service near 4,400 requests/s per core even for /healthz. The
evaluation routes are what every app calls on every request, so they are
dispatched here by exact path to the very same handler functions the FastAPI
routes use; errors go through the app's own exception handlers, and the body
limit and request timing middleware still wrap them. The FastAPI routes stay
registered: they define the OpenAPI document and serve any path this lane
does not recognise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.limits import BodyRefused

Handler = Callable[..., Awaitable[Response]]


class _Label:
    """Stands in for the matched route, so request timing labels the series by the route template."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


class FastLane:
    def __init__(self, app: Any, *, exact: dict[tuple[str, str], Handler],
                 prefixed: dict[tuple[str, str], tuple[Handler, str]]) -> None:
        self.app = app
        self.exact = exact
        self.prefixed = prefixed  # (method, prefix) -> (handler taking one path segment, route template)
        self._labels = {key: _Label(key[1]) for key in exact}
        self._prefix_labels = {key: _Label(template) for key, (_, template) in prefixed.items()}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            handler = self.exact.get((method, path))
            if handler is not None:
                scope["route"] = self._labels[(method, path)]
                await self._serve(scope, receive, send, handler)
                return
            for (m, prefix), (segment_handler, _) in self.prefixed.items():
                if method == m and path.startswith(prefix):
                    segment = path[len(prefix):]
                    if segment and "/" not in segment:
                        scope["route"] = self._prefix_labels[(m, prefix)]
                        await self._serve(scope, receive, send, segment_handler, segment)
                        return
        await self.app(scope, receive, send)

    async def _serve(self, scope: dict[str, Any], receive: Any, send: Any, handler: Handler, *args: str) -> None:
        request = Request(scope, receive)
        try:
            response = await handler(request, *args)
        except BodyRefused:
            raise  # the edge middleware outside answers 413 or 408
        except Exception as exc:  # noqa: BLE001 - answered by the app's own handler for this exception type
            response = await self._error(request, exc)
        await response(scope, receive, send)

    async def _error(self, request: Request, exc: Exception) -> Response:
        handlers = request.app.exception_handlers
        for cls in type(exc).__mro__:
            handler = handlers.get(cls)
            if handler is not None:
                return await handler(request, exc)  # type: ignore[no-any-return]
        raise exc
