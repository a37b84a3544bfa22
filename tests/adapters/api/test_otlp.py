"""POST /v1/traces: OpenTelemetry spans with feature-flag attributes become outcomes, then evidence for the judge."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format
from openfeature import api as openfeature
from openfeature.evaluation_context import EvaluationContext
from openfeature.hook import Hook, HookContext
from openfeature.telemetry import create_evaluation_event
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from sqlalchemy import select
from sqlalchemy.orm import Session

from rollout.adapters.openfeature import RolloutProvider
from rollout.core.stats import Decision, MetricSpec, judge
from rollout.store import flags as store
from rollout.store.db import make_engine, transaction
from rollout.store.evidence import load_evidence
from rollout.store.models import Outcome
from rollout.store.outcomes import flag_ids
from tests.adapters.api.conftest import Service, build_service, make_tokens, start_server, stop_server

NS = 1_000_000  # nanoseconds in a millisecond


@pytest.fixture
def api(db_url: str) -> Iterator[Service]:
    yield from build_service(db_url, rate_limit=0)


def _span(name: str, attributes: dict[str, Any], *, ms: float = 100.0, error: bool = False,
          events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One span in OTLP's JSON encoding (lowerCamelCase, 64-bit integers as text)."""
    end = time.time_ns()

    def kv(attrs: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for k, v in attrs.items():
            value = ({"boolValue": v} if isinstance(v, bool) else {"intValue": str(v)} if isinstance(v, int)
                     else {"doubleValue": v} if isinstance(v, float) else {"stringValue": v})
            out.append({"key": k, "value": value})
        return out

    return {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": name, "kind": 1,
            "startTimeUnixNano": str(end - int(ms * NS)), "endTimeUnixNano": str(end),
            "attributes": kv(attributes), "events": [{"name": "feature_flag.evaluation", "timeUnixNano": str(end),
                                                      "attributes": kv(e)} for e in events or []],
            "status": {"code": 2 if error else 1}}


def _request(*spans: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                             "value": {"stringValue": "app"}}]},
                               "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}]}]}


def _stored(api: Service) -> list[tuple[Any, ...]]:
    with transaction(api.engine) as s:
        return sorted(tuple(r) for r in s.execute(select(Outcome.variant, Outcome.stratum, Outcome.metric,
                                                         Outcome.value)))


GOOD = _span("chat summarizer", {"feature_flag.key": "summarizer", "feature_flag.result.variant": "new-model",
                                 "feature_flag.context.id": "user-1", "feature_flag.context.email_domain": "example.com",
                                 "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30,
                                 "gen_ai.usage.cost": 0.002}, ms=250.0, error=True)
BAD = [
    _span("unknown flag", {"feature_flag.key": "no-such-flag", "feature_flag.context.id": "u"}),
    _span("not an arm", {"feature_flag.key": "summarizer", "feature_flag.variant": "other", "user.id": "u"}),
    _span("no unit", {"feature_flag.key": "summarizer"}),
    _span("negative duration", {"feature_flag.key": "summarizer", "feature_flag.context.id": "u"}, ms=-5.0),
]
UNRELATED = _span("GET /healthz", {"http.route": "/healthz"})


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_spans_become_outcomes_and_bad_ones_are_refused_alone(api: Service, encoding: str) -> None:
    # Given one good span, four bad ones and one that names no flag
    message = json_format.ParseDict(_request(GOOD, *BAD, UNRELATED), ExportTraceServiceRequest())
    if encoding == "json":
        body, media = json.dumps(_request(GOOD, *BAD, UNRELATED)).encode(), "application/json"
    else:
        body, media = message.SerializeToString(), "application/x-protobuf"
    # When they are exported with a write token
    r = api.client.post("/v1/traces", content=body, headers={**api.auth("write"), "Content-Type": media})
    # Then the answer is OTLP's, in the request's encoding, with the bad spans counted as a partial success
    assert r.status_code == 200 and r.headers["content-type"].startswith(media)
    reply = ExportTraceServiceResponse()
    if encoding == "json":
        json_format.Parse(r.content, reply)
    else:
        reply.ParseFromString(r.content)
    assert reply.partial_success.rejected_spans == 4
    for reason in ("unknown flag", "not an arm", "unit", "latency_ms"):
        assert reason in reply.partial_success.error_message
    # And only the good span is stored: duration, error status, tokens and cost, in its stratum
    assert _stored(api) == [("new-model", "internal", metric, value) for metric, value in sorted({
        "latency_ms": 250.0, "error": 1.0, "input_tokens": 120.0, "output_tokens": 30.0, "tokens": 150.0,
        "cost": 0.002}.items())]


def test_a_flag_evaluation_event_on_a_span_names_the_flag(api: Service) -> None:
    # Given a span whose flag evaluation is a span event (the semantic conventions' feature_flag.evaluation)
    span = _span("llm call", {"user.id": "user-7"}, ms=40.0, events=[
        {"feature_flag.key": "promoted", "feature_flag.result.variant": "new-model"}])
    # When it is exported
    r = api.client.post("/v1/traces", json=_request(span), headers=api.auth("write"))
    # Then the outcome is the event's flag and variant, with the span's unit and metrics
    assert r.status_code == 200 and r.json() == {}
    assert ("new-model", "default", "latency_ms", 40.0) in _stored(api)


@pytest.mark.parametrize(("token", "body", "media", "status"), [
    ("read", b"{}", "application/json", 403),
    ("write", b"not protobuf at all \xff", "application/x-protobuf", 400),
    ("write", b"{not json", "application/json", 400),
    ("write", b"{}", "text/plain", 415),
])
def test_requests_that_are_not_otlp_or_not_allowed_are_refused(api: Service, token: str, body: bytes, media: str,
                                                               status: int) -> None:
    r = api.client.post("/v1/traces", content=body, headers={**api.auth(token), "Content-Type": media})
    assert r.status_code == status
    assert _stored(api) == []


@pytest.mark.slow
def test_spans_from_the_opentelemetry_sdk_reach_the_judge(db_url: str) -> None:
    # Given a ramping flag at 50 % in a real `rollout serve`, and a write token
    engine = make_engine(db_url)
    with transaction(engine) as s:
        store.create_flag(s, "reply-model", variants=["small", "large"], actor="test")
        store.set_allocations(s, "reply-model", {"default": 5_000}, actor="test")
    token = make_tokens(engine)["write"]
    server = start_server(db_url, "--rate-limit", "0")
    try:
        # And an app traced with the real OpenTelemetry SDK, exporting over OTLP/HTTP (protobuf) to the service
        exporter = OTLPSpanExporter(endpoint=f"{server.base_url}/v1/traces",
                                    headers={"Authorization": f"Bearer {token}"})
        tracing = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
        tracing.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=4_096, max_export_batch_size=512))
        tracer = tracing.get_tracer("support-bot")
        rng = np.random.default_rng(13)
        # When 1,500 requests per arm are traced; the large model fails 8 % of them, the small one 1 %
        for i in range(3_000):
            variant, rate = ("small", 0.01) if i % 2 == 0 else ("large", 0.08)
            start = time.time_ns() - 10 * 1_000_000_000
            span = tracer.start_span("chat", start_time=start, attributes={
                "feature_flag.key": "reply-model", "feature_flag.result.variant": variant,
                "feature_flag.context.id": f"user-{i}", "gen_ai.usage.input_tokens": int(rng.integers(50, 500)),
                "gen_ai.usage.output_tokens": int(rng.integers(10, 200))})
            if rng.random() < rate:
                span.set_status(Status(StatusCode.ERROR, "model error"))
            span.end(end_time=start + int(rng.lognormal(5.5, 0.3) * 1_000_000))
        assert tracing.force_flush(30_000)
        tracing.shutdown()
    finally:
        stop_server(server)
    # Then every span is stored, and the judge, on the evidence the store loads, rolls the candidate back
    with Session(engine) as s:
        flag_id = flag_ids(s)["reply-model"]
        assert s.query(Outcome).filter(Outcome.flag_id == flag_id, Outcome.metric == "error").count() == 3_000
        evidence = load_evidence(s, flag_id=flag_id)
    engine.dispose()
    verdict = judge(evidence, [MetricSpec("error", kind="binary", margin=0.005)])
    assert verdict.decision is Decision.ROLLBACK, verdict.reason
    assert verdict.metric("error").n_candidate == 1_500


class _SpanEventHook(Hook):
    """An app's OpenFeature hook: each evaluation becomes a span event, as the SDK's own telemetry builds it."""

    def after(self, hook_context: HookContext, details: Any, hints: Any) -> None:
        event = create_evaluation_event(hook_context, details)
        trace.get_current_span().add_event(event.name, {str(k): v for k, v in event.attributes.items()})


def test_the_openfeature_sdks_own_evaluation_events_are_read(api: Service) -> None:
    # Given an app using OpenFeature (our provider) and OpenTelemetry, recording each evaluation as a span event
    # with the OpenFeature SDK's own `create_evaluation_event` (it writes the older feature_flag.variant)
    spans = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    openfeature.set_provider_and_wait(RolloutProvider.remote("http://testserver", api.tokens["read"],
                                                             http_client=api.client))
    client = openfeature.get_client()
    client.add_hooks([_SpanEventHook()])
    try:
        with tracing.get_tracer("app").start_as_current_span("answer", attributes={
                "gen_ai.usage.input_tokens": 300, "gen_ai.usage.output_tokens": 40}):
            assert client.get_string_value("promoted", "x", EvaluationContext("user-9")) == "new-model"
    finally:
        openfeature.shutdown()
    # When the SDK's spans are encoded as its OTLP exporter encodes them and sent
    body = encode_spans(spans.get_finished_spans()).SerializeToString()
    r = api.client.post("/v1/traces", content=body, headers={**api.auth("write"),
                                                             "Content-Type": "application/x-protobuf"})
    # Then one outcome of the promoted flag's served variant, for that unit, holds the span's metrics
    assert r.status_code == 200
    rows = _stored(api)
    assert {(variant, metric) for variant, _, metric, _ in rows} == {
        ("new-model", m) for m in ("latency_ms", "error", "input_tokens", "output_tokens", "tokens")}
    assert ("new-model", "default", "tokens", 340.0) in rows


def test_a_gzip_body_is_read_as_otlp_allows(api: Service) -> None:
    # Given a protobuf export compressed as OTLP exporters do with compression=gzip
    body = gzip.compress(json_format.ParseDict(_request(GOOD), ExportTraceServiceRequest()).SerializeToString())
    # When it is sent with Content-Encoding: gzip, Then it is stored like any other
    r = api.client.post("/v1/traces", content=body, headers={
        **api.auth("write"), "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert r.status_code == 200
    assert len(_stored(api)) == 6
