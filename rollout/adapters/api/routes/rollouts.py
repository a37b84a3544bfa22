"""/v1/rollouts/{flag}/...: admin actions on a flag's rollout, each audited with the token's name.

`GET /v1/rollouts/{flag}` (read scope) answers what `rollout status --json`
prints; `rollback` and `approve` need the admin scope and are audited with
the token's name as the actor, like every admin action.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import Principal, require
from rollout.adapters.api.common import (
    AUTH_ERRORS,
    error_responses,
    json_body,
    json_response,
    read_model,
    schema_of,
    service,
)
from rollout.adapters.api.models import (
    APPROVAL_REQUEST,
    ROLLBACK_REQUEST,
    ApprovalAnswer,
    ApprovalRequest,
    FlagDocument,
    RollbackRequest,
)
from rollout.adapters.api.snapshot import flag_document
from rollout.core.flag import KEY_PATTERN
from rollout.errors import ConflictError, FlagNotFoundError, InvalidInputError, NotFoundError, VersionConflictError
from rollout.store import flags as store
from rollout.store.db import retry_transaction, transaction
from rollout.store.tokens import Scope

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])

FlagKey = Annotated[str, Path(description="The flag's key, in the token's namespace", max_length=200)]
# Dependencies: FastAPI resolves them before it parses the path; bodies are read after them too.
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
Reader = Annotated[Principal, Depends(require(Scope.READ))]


def check_flag_key(flag: str) -> str:
    """A key that cannot name a flag is a 404 here, before it can reach SQL."""
    if not KEY_PATTERN.match(flag):
        raise HTTPException(404, f"no flag {flag[:100]!r} in this namespace")
    return flag


@router.post(
    "/{flag}/rollback",
    summary="Roll a flag back: everyone on the baseline, now",
    description="Admin scope. Ends the flag's active rollout as rolled back. Audited as `token:<name>`.",
    openapi_extra=json_body(RollbackRequest),
    responses={200: {"description": "The flag after the rollback",
                     "content": {"application/json": {"schema": schema_of(FlagDocument)}}},
               **error_responses(*AUTH_ERRORS, 404, 409, 503)},
)
async def rollback(request: Request, principal: Admin, flag: FlagKey) -> Response:
    check_flag_key(flag)
    body = await read_model(request, ROLLBACK_REQUEST)
    reason, expected = body.reason, body.expected_version
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
async def status(request: Request, principal: Reader, flag: FlagKey) -> Response:
    from rollout.app.status import rollout_status

    check_flag_key(flag)
    state = service(request)

    def work() -> dict[str, Any]:
        with transaction(state.engine) as session:
            return rollout_status(session, flag, namespace=principal.namespace).to_json()

    try:
        return json_response(await run_in_threadpool(work))
    except FlagNotFoundError:
        raise HTTPException(404, f"no flag {flag!r} in this namespace") from None


@router.post(
    "/{flag}/approve",
    summary="Answer the approval gate a rollout waits at",
    description=("Admin scope. The same input as the Prefect UI form and `rollout approve`; the approver is "
                 "`token:<name>`. Recorded and audited, then the paused flow run is resumed."),
    openapi_extra=json_body(ApprovalRequest),
    responses={200: {"description": "The answer as recorded",
                     "content": {"application/json": {"schema": schema_of(ApprovalAnswer)}}},
               **error_responses(*AUTH_ERRORS, 404, 409, 503)},
)
async def approve(request: Request, principal: Admin, flag: FlagKey) -> Response:
    from rollout.app.approvals import submit_approval

    check_flag_key(flag)
    body = await read_model(request, APPROVAL_REQUEST)
    state = service(request)
    try:
        result = await run_in_threadpool(
            lambda: submit_approval(state.engine, flag, approver=principal.actor, approved=body.decision == "approve",
                                    comment=body.comment, namespace=principal.namespace))
    except (FlagNotFoundError, NotFoundError) as exc:
        raise HTTPException(404, str(exc)) from None
    except ConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    answer = ApprovalAnswer(rollout_id=result.rollout_id, stage=result.stage, approved=result.approved,
                            approver=principal.actor, resumed_flow_run=result.resumed_flow_run)
    return json_response(answer.model_dump())
