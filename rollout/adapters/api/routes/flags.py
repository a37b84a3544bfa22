"""GET /v1/flags: the token's namespace's flags, with an ETag, and a long-poll for the next change."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import Principal, require
from rollout.adapters.api.common import AUTH_ERRORS, error, error_responses, schema_of, service
from rollout.adapters.api.models import FlagsDocument
from rollout.store.tokens import Scope

router = APIRouter(tags=["flags"])


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: `*`, or a list of (possibly weak) tags, one of which is ours."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = etag.strip('"')
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.strip('"') == bare:
            return True
    return False


@router.get(
    "/v1/flags",
    summary="All flags of the token's namespace",
    description=(
        "Returns the namespace's flags (enough to evaluate them locally) with an ETag. With `If-None-Match` "
        "set to the current ETag the answer is 304; adding `?wait=N` holds the request up to N seconds "
        "until the flags change, then answers 200 at once (a long-poll)."
    ),
    responses={200: {"description": "The flags", "headers": {"ETag": {"schema": {"type": "string"}}},
                     "content": {"application/json": {"schema": schema_of(FlagsDocument)}}},
               304: {"description": "Unchanged since the ETag given in If-None-Match"},
               **error_responses(*AUTH_ERRORS)},
)
async def get_flags(
    request: Request,
    # A dependency: resolved before FastAPI parses any parameter (its per-header parsing is quadratic).
    principal: Annotated[Principal, Depends(require(Scope.READ))],
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to hold the request for a change")] = 0,
    if_none_match: Annotated[str | None, Header(max_length=1000)] = None,
) -> Response:
    state = service(request)
    snapshot = state.snapshot
    if not snapshot.loaded:
        return error(503, "the flag snapshot has not loaded from the database yet", {"Retry-After": "1"})
    view = snapshot.view(principal.namespace)
    wait = min(wait, state.settings.max_wait)
    if wait > 0 and etag_matches(if_none_match, view.etag):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            event = state.signal.event  # take the event before re-reading, so no change slips between
            view = snapshot.view(principal.namespace)
            remaining = deadline - loop.time()
            if not etag_matches(if_none_match, view.etag) or remaining <= 0:
                break
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                pass
            if await request.is_disconnected():
                break
    headers = {"ETag": view.etag, "Cache-Control": "no-cache"}
    if etag_matches(if_none_match, view.etag):
        return Response(status_code=304, headers=headers)
    return Response(view.body, media_type="application/json", headers=headers)
