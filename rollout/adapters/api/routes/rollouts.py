"""/v1/rollouts/{flag}/...: admin actions on a flag's rollout, each audited with the token's name.

`GET /v1/rollouts/{flag}` (read scope) answers what `rollout status --json`
prints; `rollback` and `approve` need the admin scope and are audited with
the token's name as the actor, like every admin action.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import authorize
from rollout.adapters.api.common import (
    AUTH_ERRORS,
    error_responses,
    has_control_characters,
    json_response,
    read_json,
    service,
)
from rollout.adapters.api.snapshot import flag_document
from rollout.core.flag import KEY_PATTERN
from rollout.errors import ConflictError, FlagNotFoundError, InvalidInputError, NotFoundError, VersionConflictError
from rollout.store import flags as store
from rollout.store.db import retry_transaction, transaction
from rollout.store.tokens import Scope

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])

FlagKey = Annotated[str, Path(description="The flag's key, in the token's namespace", max_length=200)]

ROLLBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["reason"],
    "properties": {
        "reason": {"type": "string", "minLength": 1, "maxLength": 2000},
        "expected_version": {"type": ["integer", "null"],
                             "description": "Refuse (409) unless the flag is still at this version"},
    },
}


def check_flag_key(flag: str) -> str:
    """A key that cannot name a flag is a 404 here, before it can reach SQL."""
    if not KEY_PATTERN.match(flag):
        raise HTTPException(404, f"no flag {flag[:100]!r} in this namespace")
    return flag


@router.post(
    "/{flag}/rollback",
    summary="Roll a flag back: everyone on the baseline, now",
    description="Admin scope. Ends the flag's active rollout as rolled back. Audited as `token:<name>`.",
    openapi_extra={"requestBody": {"required": True,
                                   "content": {"application/json": {"schema": ROLLBACK_SCHEMA}}}},
    responses={200: {"description": "The flag after the rollback",
                     "content": {"application/json": {"schema": {"type": "object"}}}},
               **error_responses(*AUTH_ERRORS, 404, 409, 503)},
)
async def rollback(request: Request, flag: FlagKey) -> Response:
    principal = await authorize(request, Scope.ADMIN)
    check_flag_key(flag)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise HTTPException(422, "the body must be {\"reason\": \"...\"}")
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 2000 or has_control_characters(reason):
        raise HTTPException(422, "'reason' must be 1-2000 characters of text (no control characters)")
    expected = body.get("expected_version")
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)
                                 or not 0 < expected < 2**31):
        raise HTTPException(422, "'expected_version' must be a positive integer")
    state = service(request)

    def work() -> dict[str, Any]:
        def roll_back(session: Any) -> Any:
            return store.rollback(session, flag, actor=principal.actor, reason=reason,
                                  namespace=principal.namespace, expected_version=expected)

        # Without an expected version the caller means "whatever the flag is now": a
        # controller's check racing this one must not turn the rollback into a 409.
        if expected is None:
            return flag_document(retry_transaction(state.engine, roll_back))
        with transaction(state.engine) as session:
            return flag_document(roll_back(session))

    try:
        doc = await run_in_threadpool(work)
    except FlagNotFoundError:
        raise HTTPException(404, f"no flag {flag!r} in this namespace") from None
    except VersionConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    except InvalidInputError as exc:
        raise HTTPException(422, str(exc)) from None
    # Serve the new state (and wake long-polls) now rather than at the next poll tick.
    await run_in_threadpool(state.snapshot.refresh)
    return json_response(doc)


@router.get(
    "/{flag}",
    summary="A flag's rollout: phase, stage, allocations, the last verdict per metric, pending approval",
    description="Read scope. The same document `rollout status FLAG --json` prints.",
    responses={200: {"description": "The flag and its latest rollout",
                     "content": {"application/json": {"schema": {"type": "object"}}}},
               **error_responses(*AUTH_ERRORS, 404, 503)},
)
async def status(request: Request, flag: FlagKey) -> Response:
    from rollout.app.status import rollout_status

    principal = await authorize(request, Scope.READ)
    check_flag_key(flag)
    state = service(request)

    def work() -> dict[str, Any]:
        with transaction(state.engine) as session:
            return rollout_status(session, flag, namespace=principal.namespace).to_json()

    try:
        return json_response(await run_in_threadpool(work))
    except FlagNotFoundError:
        raise HTTPException(404, f"no flag {flag!r} in this namespace") from None


APPROVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["decision"],
    "properties": {
        "decision": {"type": "string", "enum": ["approve", "reject"]},
        "comment": {"type": "string", "maxLength": 2000},
    },
}


@router.post(
    "/{flag}/approve",
    summary="Answer the approval gate a rollout waits at",
    description=("Admin scope. The same input as the Prefect UI form and `rollout approve`; the approver is "
                 "`token:<name>`. Recorded and audited, then the paused flow run is resumed."),
    openapi_extra={"requestBody": {"required": True,
                                   "content": {"application/json": {"schema": APPROVE_SCHEMA}}}},
    responses={200: {"description": "The answer as recorded",
                     "content": {"application/json": {"schema": {"type": "object"}}}},
               **error_responses(*AUTH_ERRORS, 404, 409, 503)},
)
async def approve(request: Request, flag: FlagKey) -> Response:
    from rollout.app.approvals import submit_approval

    principal = await authorize(request, Scope.ADMIN)
    check_flag_key(flag)
    body = await read_json(request)
    if not isinstance(body, dict) or body.get("decision") not in ("approve", "reject"):
        raise HTTPException(422, "the body must be {\"decision\": \"approve\" or \"reject\", \"comment\": \"...\"}")
    comment = body.get("comment", "")
    if not isinstance(comment, str) or len(comment) > 2000 or has_control_characters(comment):
        raise HTTPException(422, "'comment' must be at most 2000 characters of text (no control characters)")
    state = service(request)
    try:
        result = await run_in_threadpool(
            lambda: submit_approval(state.engine, flag, approver=principal.actor, approved=body["decision"] == "approve",
                                    comment=comment, namespace=principal.namespace))
    except (FlagNotFoundError, NotFoundError) as exc:
        raise HTTPException(404, str(exc)) from None
    except ConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    return json_response({"rollout_id": result.rollout_id, "stage": result.stage, "approved": result.approved,
                          "approver": principal.actor, "resumed_flow_run": result.resumed_flow_run})
