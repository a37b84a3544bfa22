"""Request and response bodies of the service's own routes, as pydantic models.

One definition validates what a caller sent (strict: no "7" taken for 7, no
true taken for 1) and becomes the OpenAPI document's schema. Responses are
built by one function each (e.g. `assignment_json`) and declared here for
the document; the routes answer with pre-serialised JSON, so nothing is
validated twice on the hot path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    TypeAdapter,
    WithJsonSchema,
)

from rollout.adapters.api.common import has_control_characters
from rollout.core import ErrorCode, Reason


def _no_control_characters(text: str) -> str:
    if has_control_characters(text):
        raise ValueError("must be text without control characters")
    return text


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


Text = Annotated[str, AfterValidator(_no_control_characters)]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


# --- POST /v1/evaluate ---------------------------------------------------------------------------

# Decoded JSON handed to the evaluator as it came: it answers odd values itself (never raises), and
# validating them here cost a third of the model's time on the hot path (JsonValue is a recursive union).
UnitId = Annotated[Any, WithJsonSchema({"type": ["string", "integer", "null"]})]
AttributeValue = Annotated[Any, WithJsonSchema({"type": ["string", "number", "boolean", "null"]})]


class EvaluationItem(_Request):
    """One evaluation: which variant does this unit get of this flag?"""

    flag: str = Field(max_length=200)
    unit_id: UnitId = Field(None, description=(
        "The unit (user, session, request); integers hash as their decimal text. Passed to the evaluator "
        "as sent: an empty, null or non-text id gets the baseline with TARGETING_KEY_MISSING, as in the SDK."))
    attributes: dict[str, AttributeValue] | None = Field(None, description="Attributes the strata match on")
    default: str | None = Field(None, description="Answered when the flag is unknown")


class EvaluationBatch(_Request):
    """Many evaluations in one request (up to the service's batch limit, else 413)."""

    items: list[EvaluationItem]


def _evaluation_kind(raw: Any) -> str | None:
    if isinstance(raw, dict):
        return "batch" if "items" in raw else "item"
    return None  # not an object: a 422 saying so


EvaluationRequest = Annotated[
    Annotated[EvaluationItem, Tag("item")] | Annotated[EvaluationBatch, Tag("batch")],
    Discriminator(_evaluation_kind, custom_error_type="object_expected",
                  custom_error_message="the body must be an object: {flag, unit_id, attributes} or {items: [...]}"),
]
EVALUATION_REQUEST: TypeAdapter[EvaluationItem | EvaluationBatch] = TypeAdapter(EvaluationRequest)


class EvaluationAnswer(BaseModel):
    """The assignment: variant, stratum, whether in shadow, why (OpenFeature's reason) and the flag version."""

    flag: str
    variant: str | None
    value: JsonValue = None
    stratum: str | None
    in_shadow: bool
    is_candidate: bool
    reason: Reason
    error_code: ErrorCode | None
    flag_version: int
    exposure: str | None = Field(None, description=(
        "Signed token of what was served: send it with late outcomes (POST /v1/outcomes) and feedback"))


class EvaluationAnswers(BaseModel):
    results: list[EvaluationAnswer]


# --- GET /v1/flags -------------------------------------------------------------------------------

class FlagDocument(BaseModel):
    """A flag, with everything an SDK in another language needs to evaluate it locally."""

    model_config = ConfigDict(extra="allow")

    key: str
    version: int
    phase: str
    salt: str


class FlagsDocument(BaseModel):
    namespace: str
    etag: str
    flags: list[FlagDocument]


# --- /healthz ------------------------------------------------------------------------------------

class Health(BaseModel):
    """ok: fresh; stale: serving the last snapshot while the database is unreachable; down: nothing to serve."""

    status: Literal["ok", "stale", "down"]
    loaded: bool
    stale: bool


# --- /v1/rollouts --------------------------------------------------------------------------------

class RollbackRequest(_Request):
    reason: Annotated[Text, AfterValidator(_not_blank), Field(min_length=1, max_length=2000)]
    expected_version: int | None = Field(None, gt=0, lt=2**31,
                                         description="Refuse (409) unless the flag is still at this version")


ROLLBACK_REQUEST = TypeAdapter(RollbackRequest)


class ApprovalRequest(_Request):
    decision: Literal["approve", "reject"]
    comment: Annotated[Text, Field(max_length=2000)] = ""


APPROVAL_REQUEST = TypeAdapter(ApprovalRequest)


class ApprovalAnswer(BaseModel):
    rollout_id: int
    stage: str
    approved: bool
    approver: str
    resumed_flow_run: bool = Field(description="Whether a paused flow run was waiting and was resumed")


__all__ = [
    "APPROVAL_REQUEST", "EVALUATION_REQUEST", "ROLLBACK_REQUEST", "ApprovalAnswer", "ApprovalRequest",
    "EvaluationAnswer", "EvaluationAnswers", "EvaluationBatch", "EvaluationItem", "EvaluationRequest",
    "FlagDocument", "FlagsDocument", "Health", "RollbackRequest",
]
