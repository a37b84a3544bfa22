"""POST /v1/traces: OpenTelemetry spans (OTLP over HTTP, protobuf or JSON) become outcomes.

An app already traced with OpenTelemetry needs no second reporting path:
point its OTLP HTTP exporter (or a Collector's `otlphttp` exporter) at
`rollout serve` with a write token, and every span that names a flag
evaluation is one outcome. A span names one when it, or one of its events
(the semantic conventions' `feature_flag.evaluation`, or the older
`feature_flag`), carries these attributes:

    feature_flag.key              the flag (required)
    feature_flag.result.variant   the variant served (older: feature_flag.variant); absent: the unit's assignment
    feature_flag.context.id       the unit (or the setting `otlp_unit_attribute`; then user.id, enduser.id, session.id)
    feature_flag.context.<name>   an attribute of the unit (finds its stratum), e.g. feature_flag.context.tier

and its metrics are read from the span: duration -> `latency_ms`, status
ERROR -> `error` 1 (else 0), `gen_ai.usage.input_tokens` +
`gen_ai.usage.output_tokens` -> `tokens` (and each alone), and the
attributes of the settings `otlp_cost_attribute` / `otlp_quality_attribute`
-> `cost` / `quality`. The span's end time is the outcome's time.

The rules are /v1/outcomes's: a write token, the same validation
(`outcome_entry`), the same store function, and a bad span never spoils the
batch: it is counted in the OTLP `partial_success` (rejected_spans, with the
reasons in error_message) and nothing invalid is stored. Spans that name no
flag are none of our business and are neither stored nor rejected.
"""

from __future__ import annotations

import gzip
import hashlib
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import APIRouter
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from rollout.adapters.api.auth import authorize
from rollout.adapters.api.common import AUTH_ERRORS, error_responses, service
from rollout.adapters.api.routes.outcomes import _timestamp, batch_source
from rollout.adapters.api.settings import ApiSettings
from rollout.errors import InvalidOutcomeError
from rollout.sdk.client import outcome_entry
from rollout.store.outcomes import OutcomeEntry, insert_outcomes
from rollout.store.tokens import Scope

router = APIRouter(tags=["OpenTelemetry"])

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
FLAG_KEY = "feature_flag.key"
VARIANT_KEYS = ("feature_flag.result.variant", "feature_flag.variant")
UNIT_FALLBACKS = ("user.id", "enduser.id", "session.id")
CONTEXT_PREFIX = "feature_flag.context."
INPUT_TOKENS, OUTPUT_TOKENS = "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"
MAX_REASONS = 5  # reasons quoted in error_message; the count covers them all


_SCALARS = frozenset(("string_value", "bool_value", "int_value", "double_value"))
_READ_PREFIXES = ("feature_flag.", "gen_ai.usage.")


def wanted_attributes(settings: ApiSettings) -> frozenset[str]:
    """Attribute keys read besides the feature_flag.* and gen_ai.usage.* ones."""
    names = (settings.otlp_unit_attribute, *UNIT_FALLBACKS, settings.otlp_cost_attribute,
             settings.otlp_quality_attribute)
    return frozenset(n for n in names if n)


def _attributes(pairs: Iterable[KeyValue], wanted: frozenset[str]) -> dict[str, Any]:
    # Spans carry many attributes we never read (http.*, db.*, ...): decoding a protobuf value is the
    # costliest step per span (measured: most of the conversion time), so only the keys we read are decoded.
    out: dict[str, Any] = {}
    for kv in pairs:
        key = kv.key
        if key in wanted or key.startswith(_READ_PREFIXES):
            value = kv.value
            kind = value.WhichOneof("value")
            if kind in _SCALARS:  # arrays, maps and bytes carry nothing a flag or a metric can use
                out[key] = getattr(value, kind)
    return out


def evaluations(span: Span, wanted: frozenset[str]) -> Iterator[dict[str, Any]]:
    """The flag evaluations a span names: its own attributes, then each event that has a flag key."""
    own = _attributes(span.attributes, wanted)
    if own.get(FLAG_KEY) is not None:
        yield own
    for event in span.events:
        attrs = _attributes(event.attributes, wanted)
        if attrs.get(FLAG_KEY) is not None:
            yield {**own, **attrs}  # the event's attributes win; the span's give the unit and metrics


def _number(attrs: dict[str, Any], name: str | None) -> float | None:
    value = attrs.get(name) if name else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def span_metrics(span: Span, attrs: dict[str, Any], settings: ApiSettings) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "error": 1.0 if span.status.code == Status.STATUS_CODE_ERROR else 0.0,
    }
    if span.end_time_unix_nano and span.start_time_unix_nano:
        # Left negative when the end precedes the start: validation refuses it rather than hiding a broken clock.
        metrics["latency_ms"] = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
    tokens_in, tokens_out = _number(attrs, INPUT_TOKENS), _number(attrs, OUTPUT_TOKENS)
    if tokens_in is not None:
        metrics["input_tokens"] = tokens_in
    if tokens_out is not None:
        metrics["output_tokens"] = tokens_out
    if tokens_in is not None or tokens_out is not None:
        metrics["tokens"] = (tokens_in or 0) + (tokens_out or 0)
    for metric, attribute in (("cost", settings.otlp_cost_attribute), ("quality", settings.otlp_quality_attribute)):
        value = _number(attrs, attribute)
        if value is not None:
            metrics[metric] = value
    return metrics


def _unit(attrs: dict[str, Any], settings: ApiSettings) -> Any:
    for name in (settings.otlp_unit_attribute, *UNIT_FALLBACKS):
        if attrs.get(name) not in (None, ""):
            return attrs[name]
    return None


def spans_to_outcomes(request: ExportTraceServiceRequest, flags: dict[str, Any], ids: dict[str, int],
                      settings: ApiSettings, now: float, unit_key: bytes) -> tuple[list[OutcomeEntry], int, list[str]]:
    """(valid outcomes, rejected spans, reasons); a span is rejected when any of its evaluations is."""
    entries: list[OutcomeEntry] = []
    rejected = 0
    reasons: list[str] = []
    wanted = wanted_attributes(settings)
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes, wanted)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found: list[OutcomeEntry] = []
                try:
                    for attrs in evaluations(span, wanted):
                        if resource:
                            attrs = {**resource, **attrs}
                        flag = attrs[FLAG_KEY]
                        compiled = flags.get(flag) if isinstance(flag, str) else None
                        if compiled is None:
                            raise InvalidOutcomeError(f"unknown flag {flag!r}")
                        variant = next((attrs[k] for k in VARIANT_KEYS if attrs.get(k) is not None), None)
                        unit_attributes = {k[len(CONTEXT_PREFIX):]: v for k, v in attrs.items()
                                           if k.startswith(CONTEXT_PREFIX) and k != settings.otlp_unit_attribute
                                           and v is not None}
                        found.append(outcome_entry(
                            compiled, ids[flag], _unit(attrs, settings), span_metrics(span, attrs, settings),
                            unit_key=unit_key, variant=variant, attributes=unit_attributes,
                            at=_timestamp(span.end_time_unix_nano / 1e9 if span.end_time_unix_nano else None, now)))
                except InvalidOutcomeError as exc:
                    rejected += 1
                    if len(reasons) < MAX_REASONS:
                        reasons.append(f"span {span.span_id.hex() or '?'} ({span.name[:60]!r}): {exc}")
                    continue
                entries.extend(found)
    return entries, rejected, reasons


def _reply(message: Any, content_type: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = (message.SerializeToString() if content_type == PROTOBUF
            else json_format.MessageToJson(message, indent=None).encode())
    return Response(body, status_code=status, media_type=content_type, headers=headers)


def _status(code: int, message: str, content_type: str, status: int,
            headers: dict[str, str] | None = None) -> Response:
    """An OTLP failure: a google.rpc.Status (code, message) in the request's encoding."""
    from google.rpc.status_pb2 import Status as RpcStatus  # googleapis-common-protos, with opentelemetry-proto

    return _reply(RpcStatus(code=code, message=message), content_type, status, headers)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit:
            raise ValueError(f"the decompressed body is over {limit} bytes")
        return out
    raise ValueError(f"unsupported Content-Encoding {encoding!r} (use gzip or none)")


@router.post(
    "/v1/traces",
    summary="OTLP/HTTP trace export: spans with feature_flag.* attributes become outcomes",
    description=(
        "An OTLP ExportTraceServiceRequest, as `application/x-protobuf` or `application/json` (gzip allowed). "
        "Spans naming a flag (`feature_flag.key`) become outcomes (latency_ms, error, tokens, cost, quality); "
        "spans that cannot be stored are counted in `partialSuccess`. Needs a write or admin token."
    ),
    openapi_extra={"requestBody": {"required": True, "content": {
        PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
        JSON: {"schema": {"type": "object"}}}}},
    responses={200: {"description": "ExportTraceServiceResponse (partialSuccess when spans were refused)",
                     "content": {PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                                 JSON: {"schema": {"type": "object"}}}},
               400: {"description": "Not an OTLP trace request (google.rpc.Status)"},
               415: {"description": "Neither protobuf nor JSON"},
               **error_responses(*AUTH_ERRORS, 503)},
)
async def export_traces(request: Request) -> Response:
    principal = await authorize(request, Scope.WRITE)
    state = service(request)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in (PROTOBUF, JSON):
        return _status(3, f"Content-Type must be {PROTOBUF} or {JSON}", JSON, 415)
    try:
        # Span batches compress about tenfold; the bound keeps a small gzip body from becoming a huge one.
        body = _decompress(await request.body(), request.headers.get("content-encoding", "").strip().lower(),
                           16 * state.settings.max_body_bytes)
        message = ExportTraceServiceRequest()
        if media == PROTOBUF:
            message.ParseFromString(body)
        else:
            json_format.Parse(body, message, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, ValueError, UnicodeDecodeError, gzip.BadGzipFile,
            zlib.error) as exc:
        return _status(3, f"not an OTLP ExportTraceServiceRequest: {str(exc)[:300]}", media, 400)
    if not state.snapshot.loaded:
        return _status(14, "the flag snapshot has not loaded from the database yet", media, 503, {"Retry-After": "1"})
    view = state.snapshot.view(principal.namespace)
    try:
        unit_key = await run_in_threadpool(state.unit_keys.get, principal.namespace)
    except Exception:  # noqa: BLE001 - read once per namespace; only a never-reached database gets here
        return _status(14, "the database is unreachable; nothing was stored, retry", media, 503, {"Retry-After": "1"})
    entries, rejected, reasons = spans_to_outcomes(message, view.flags, view.ids, state.settings, time.time(),
                                                   unit_key)
    if entries:
        # Exactly once, like /v1/outcomes: the export's own bytes are its batch key, so an exporter's
        # retry of a request whose reply was lost stores nothing twice.
        source = batch_source(principal.namespace, hashlib.sha256(body).hexdigest(), [])
        try:
            await run_in_threadpool(insert_outcomes, state.engine, source, list(enumerate(entries)))
        except Exception:  # noqa: BLE001 - stored or not is unknown; a retry of the same export is safe
            return _status(14, "the database did not confirm the spans; retry (they are stored at most once)",
                           media, 503, {"Retry-After": "1"})
    state.metrics.outcomes_accepted.inc(len(entries))
    state.metrics.outcomes_rejected.inc(rejected)
    reply = ExportTraceServiceResponse()
    if rejected:
        reply.partial_success.rejected_spans = rejected
        reply.partial_success.error_message = "; ".join(reasons) + (" ..." if rejected > len(reasons) else "")
    return _reply(reply, media)
