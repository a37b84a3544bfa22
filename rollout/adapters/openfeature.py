"""`RolloutProvider`: rollout behind the vendor-neutral OpenFeature API.

Two ways to reach flag state, one behaviour:

    from openfeature import api
    from rollout.adapters.openfeature import RolloutProvider

    api.set_provider(RolloutProvider.in_process("postgresql://..."))          # evaluates locally (RolloutClient)
    api.set_provider(RolloutProvider.remote("http://flags:8080", token))      # asks the service (OFREP)

    client = api.get_client()
    model = client.get_string_value("summarizer", "current", EvaluationContext("user-42", {"tier": "free"}))
    client.track("summarizer", EvaluationContext("user-42"), TrackingEventDetails(attributes={"latency_ms": 812}))

Values: `get_string_value` answers the variant's payload when it is text, else
the variant's name; `get_boolean_value` answers a boolean payload, else
whether the unit is in the candidate arm; integer, float and object answer
the payload and report TYPE_MISMATCH when it has another type. Details carry
variant, reason (OpenFeature's words) and error code; `flag_metadata` holds
stratum, inShadow, isCandidate and flagVersion.

Tracking: `track(flag_key, context, details)` records one outcome for the
context's targeting key. The numeric entries of `details.attributes` are the
metrics; `details.value`, when given, is stored as the metric `value`.
Tracking never raises (an OpenFeature rule); a refused outcome is logged.

Evaluation never raises either: on any fault the caller's default comes back
with reason ERROR and an error code, as the rest of `rollout` does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode as OFErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason as OFReason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.track import TrackingEventDetails

from rollout.sdk import RolloutClient
from rollout.errors import RolloutError

log = logging.getLogger("rollout.openfeature")

__all__ = ["RolloutProvider"]


@dataclass(frozen=True, slots=True)
class _Answer:
    """An evaluation, whichever way it was obtained."""

    variant: str | None
    payload: Any
    reason: str
    error_code: str | None
    error_message: str | None
    metadata: dict[str, bool | int | float | str]
    is_candidate: bool = False


class RolloutProvider(AbstractProvider):
    """An OpenFeature provider over a `RolloutClient` (in-process) or the HTTP service (remote, OFREP)."""

    def __init__(
        self,
        client: RolloutClient | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        http_client: httpx.Client | None = None,
        timeout: float = 2.0,
        owns_client: bool = False,
    ) -> None:
        super().__init__()
        if (client is None) == (url is None and http_client is None):
            raise RolloutError("give a RolloutClient (in-process) or a service url (remote), not both or neither")
        self._client = client
        self._owns_client = owns_client
        self._owns_http = http_client is None and url is not None
        self._http = http_client if http_client is not None else (
            httpx.Client(base_url=url, timeout=timeout) if url is not None else None)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    @classmethod
    def in_process(cls, database_url: str | None = None, **client_options: Any) -> RolloutProvider:
        """Evaluate locally from the database snapshot; the provider owns (and closes) its client."""
        return cls(RolloutClient(database_url, **client_options), owns_client=True)

    @classmethod
    def remote(cls, url: str, token: str, *, timeout: float = 2.0,
               http_client: httpx.Client | None = None) -> RolloutProvider:
        """Ask a running `rollout serve` over OFREP with a read token (write, to track outcomes)."""
        return cls(url=url, token=token, timeout=timeout, http_client=http_client)

    # --- OpenFeature provider API ---------------------------------------------------

    def get_metadata(self) -> Metadata:
        return Metadata(name="rollout")

    def shutdown(self) -> None:
        if self._client is not None and self._owns_client:
            self._client.close()
        if self._http is not None and self._owns_http:
            self._http.close()

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, bool)

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, str)

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, int)

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, float)

    def resolve_object_details(self, flag_key: str, default_value: Any,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[Any]:
        return self._resolve(flag_key, default_value, evaluation_context, object)

    def track(self, tracking_event_name: str, evaluation_context: EvaluationContext | None = None,
              tracking_event_details: TrackingEventDetails | None = None) -> None:
        ctx = evaluation_context or EvaluationContext()
        metrics: dict[str, Any] = {}
        attributes = dict(ctx.attributes)
        if tracking_event_details is not None:
            metrics.update({k: v for k, v in tracking_event_details.attributes.items()
                            if isinstance(v, (int, float))})  # bool is an int: a 0/1 metric
            if tracking_event_details.value is not None:
                metrics["value"] = tracking_event_details.value
        try:
            if self._client is not None:
                self._client.record(tracking_event_name, ctx.targeting_key, metrics, attributes=attributes)
                return
            assert self._http is not None
            outcome = {"flag": tracking_event_name, "unit_id": ctx.targeting_key, "metrics": metrics,
                       "attributes": attributes}
            response = self._http.post("/v1/outcomes", json={"outcomes": [outcome]}, headers=self._headers)
            if response.status_code != 200:
                log.warning("rollout: outcome for %r not stored: HTTP %s %s", tracking_event_name,
                            response.status_code, response.text[:200])
            elif response.json().get("rejected"):
                log.warning("rollout: outcome for %r refused: %s", tracking_event_name,
                            response.json()["errors"][0]["error"])
        except Exception as exc:  # noqa: BLE001 - tracking must never raise into the app
            log.warning("rollout: outcome for %r not recorded: %s", tracking_event_name, exc)

    # --- evaluation -----------------------------------------------------------------------

    def _resolve(self, flag_key: str, default: Any, ctx: EvaluationContext | None,
                 kind: type) -> FlagResolutionDetails[Any]:
        ctx = ctx or EvaluationContext()
        try:
            answer = self._local(flag_key, ctx) if self._client is not None else self._remote(flag_key, ctx)
        except Exception as exc:  # noqa: BLE001 - evaluation never raises into the app
            return FlagResolutionDetails(value=default, reason=OFReason.ERROR, error_code=OFErrorCode.GENERAL,
                                         error_message=f"{type(exc).__name__}: {exc}"[:300])
        if answer.variant is None:  # nothing served: the caller's default
            return FlagResolutionDetails(value=default, reason=OFReason.ERROR,
                                         error_code=OFErrorCode(answer.error_code or "GENERAL"),
                                         error_message=answer.error_message, flag_metadata=answer.metadata)
        value, mismatch = _typed(kind, answer)
        if mismatch:
            return FlagResolutionDetails(value=default, reason=OFReason.ERROR, error_code=OFErrorCode.TYPE_MISMATCH,
                                         error_message=mismatch, variant=answer.variant,
                                         flag_metadata=answer.metadata)
        return FlagResolutionDetails(
            value=value, variant=answer.variant, reason=answer.reason,
            error_code=OFErrorCode(answer.error_code) if answer.error_code else None,
            error_message=answer.error_message, flag_metadata=answer.metadata,
        )

    def _local(self, flag_key: str, ctx: EvaluationContext) -> _Answer:
        assert self._client is not None
        a = self._client.assign(flag_key, ctx.targeting_key, dict(ctx.attributes))  # type: ignore[arg-type]
        metadata: dict[str, bool | int | float | str] = {
            "flagVersion": a.flag_version, "inShadow": a.in_shadow, "isCandidate": a.is_candidate}
        if a.stratum is not None:
            metadata["stratum"] = a.stratum
        code = a.error_code.value if a.error_code is not None else None
        return _Answer(a.variant, a.value, a.reason.value, code, code and f"{code} for {flag_key!r}", metadata,
                       a.is_candidate)

    def _remote(self, flag_key: str, ctx: EvaluationContext) -> _Answer:
        assert self._http is not None
        context: dict[str, Any] = dict(ctx.attributes)
        if ctx.targeting_key is not None:
            context["targetingKey"] = ctx.targeting_key
        response = self._http.post(f"/ofrep/v1/evaluate/flags/{quote(flag_key, safe='')}",
                                   json={"context": context}, headers=self._headers)
        body: Any = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code != 200 or not isinstance(body, dict):
            code = body.get("errorCode") if isinstance(body, dict) else None
            if code not in OFErrorCode._value2member_map_:
                code = "GENERAL"
            detail = (body.get("errorDetails") or body.get("error")) if isinstance(body, dict) else None
            return _Answer(None, None, "ERROR", code, f"HTTP {response.status_code}: {detail}", {})
        metadata = body.get("metadata") or {}
        variant = body.get("variant")
        value = body.get("value")
        payload = None if value == variant else value
        code = metadata.pop("errorCode", None)
        return _Answer(variant, payload, body.get("reason", "UNKNOWN"), code,
                       code and f"{code} for {flag_key!r}", metadata, bool(metadata.get("isCandidate")))


def _typed(kind: type, answer: _Answer) -> tuple[Any, str | None]:
    """The value of the served variant as the asked-for type, or why it has none."""
    payload = answer.payload
    if kind is str:
        return (payload if isinstance(payload, str) else answer.variant), None
    if kind is bool:
        return (payload if isinstance(payload, bool) else answer.is_candidate), None
    if kind is int and isinstance(payload, int) and not isinstance(payload, bool):
        return payload, None
    if kind is float and isinstance(payload, (int, float)) and not isinstance(payload, bool):
        return float(payload), None
    if kind is object and isinstance(payload, (Mapping, list)):
        return payload, None
    return None, f"variant {answer.variant!r} has no {kind.__name__} payload (it has {payload!r})"
