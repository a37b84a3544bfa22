"""Standards in: OTLP span ingestion into PostgreSQL, and OFREP bulk evaluation with ETags at a fixed rate.

1. OTLP: POST /v1/traces, protobuf ExportTraceServiceRequest batches of
   1,000 spans, each with feature_flag.key / result.variant / context.id and
   GenAI token counts (5 metrics per span: latency_ms, error, input_tokens,
   output_tokens, tokens), closed loop over a few connections, 2 workers.
   Afterwards the spans stored (one `error` row each) must equal the spans
   acknowledged (batch size minus partial_success.rejected_spans).
2. OFREP bulk: POST /ofrep/v1/evaluate/flags over 20 flags at an offered
   1,000 requests/s (open loop: each connection sends on a fixed schedule,
   so a slow answer does not lower the offered rate), once without
   If-None-Match (every answer a 200 with 20 evaluations) and once with the
   ETag of the previous answer (every answer a 304). Latency is from the
   scheduled send to the last byte of the answer.

    python -m bench.otlp [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from sqlalchemy import func, select

from bench.common import percentile, postgres_available, scratch_database, table
from bench.loadgen import _check_loopback, _read_response, request_bytes
from bench.loadgen import run as run_load
from bench.server import start_server, stop_server
from rollout.store import flags as store
from rollout.store.db import make_engine, transaction
from rollout.store.models import Outcome
from rollout.store.tokens import create_token

HOST = "127.0.0.1"
SPAN_BATCH = 1_000
SPAN_BATCHES = 200
SPAN_CONNECTIONS = 4
SPAN_WORKERS = 2
OFREP_FLAGS = 20
OFREP_RATE = 1_000.0
OFREP_SECONDS = 10.0
OFREP_CONNECTIONS = 20


def _seed(url: str) -> dict[str, str]:
    engine = make_engine(url)
    with transaction(engine) as s:
        for i in range(OFREP_FLAGS):
            store.create_flag(s, f"flag-{i:02d}", variants=["current", "new-model"], actor="bench")
            store.set_allocations(s, f"flag-{i:02d}", {"default": 1_000 * (i % 10)}, actor="bench")
        tokens = {scope: create_token(s, f"bench-{scope}", namespace="default", scope=scope, actor="bench").token
                  for scope in ("read", "write")}
    engine.dispose()
    return tokens


def _kv(key: str, value: str | int) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value) if isinstance(value, str) else AnyValue(int_value=value))


def span_batch(seed: int) -> bytes:
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    now = time.time_ns()
    for i in range(SPAN_BATCH):
        start = now - 5_000_000_000 - int(rng.lognormvariate(5.5, 0.4) * 1e6)
        spans.append(Span(
            trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name="chat", start_time_unix_nano=start,
            end_time_unix_nano=now - 5_000_000_000,
            status=Status(code=Status.STATUS_CODE_ERROR if rng.random() < 0.02 else Status.STATUS_CODE_OK),
            attributes=[_kv("feature_flag.key", "flag-05"),
                        _kv("feature_flag.result.variant", "new-model" if i % 2 else "current"),
                        _kv("feature_flag.context.id", f"user-{seed}-{i}"),
                        _kv("gen_ai.usage.input_tokens", rng.randint(50, 900)),
                        _kv("gen_ai.usage.output_tokens", rng.randint(10, 300))]))
    return request.SerializeToString()


def measure_otlp(url: str, tokens: dict[str, str]) -> dict[str, float]:
    server = start_server(url, "--rate-limit", "0", workers=SPAN_WORKERS)
    try:
        port = server.port
        headers = {"Authorization": f"Bearer {tokens['write']}", "Content-Type": "application/x-protobuf"}
        requests = [request_bytes("POST", "/v1/traces", HOST, port, headers, span_batch(b)) for b in range(20)]
        result = run_load(HOST, port, requests, connections=SPAN_CONNECTIONS, duration=600,
                          max_requests=SPAN_BATCHES, keep_bodies=True)
    finally:
        stop_server(server)
    # The batches go round (20 distinct bodies): a span sent again is the same span (same trace and span id)
    # and is stored once, so what was acknowledged is the spans of the distinct batches answered 200.
    processed = SPAN_BATCH * sum(1 for status, _ in result.bodies if status == 200)  # every span handled, resends too
    acknowledged = 0
    for index in {index for (status, _), index in zip(result.bodies, result.sent, strict=True) if status == 200}:
        body = next(b for (status, b), i in zip(result.bodies, result.sent, strict=True) if i == index and status == 200)
        reply = ExportTraceServiceResponse()
        reply.ParseFromString(body)
        acknowledged += SPAN_BATCH - reply.partial_success.rejected_spans
    engine = make_engine(url)
    with transaction(engine) as s:
        stored = s.scalar(select(func.count()).select_from(Outcome).where(Outcome.metric == "error")) or 0
    engine.dispose()
    return {"batches": result.count, "acknowledged": acknowledged, "stored": stored,
            "rate": processed / result.elapsed, "p99_ms": percentile(result.latencies, 0.99) * 1000,
            "non_200": result.count - result.statuses.get(200, 0)}


async def _paced(port: int, payloads: list[bytes], rate: float, seconds: float, connections: int,
                 ) -> tuple[list[float], dict[int, int], int, float]:
    """Open loop: each connection sends at rate/connections on a fixed schedule; latency from the scheduled time."""
    _check_loopback(HOST)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    late = [0]
    interval = connections / rate

    async def one(k: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        loop = asyncio.get_running_loop()
        begin = loop.time() + k * interval / connections
        n = int(seconds / interval)
        try:
            for i in range(n):
                due = begin + i * interval
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    late[0] += 1
                writer.write(payloads[(k + i) % len(payloads)])
                status, _ = await _read_response(reader)
                latencies.append(loop.time() - due)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(connections)))
    return latencies, statuses, late[0], time.perf_counter() - started


def measure_ofrep(url: str, tokens: dict[str, str]) -> dict[str, dict[str, float]]:
    import httpx

    server = start_server(url, "--rate-limit", "0", workers=1)
    out: dict[str, dict[str, float]] = {}
    try:
        port = server.port
        auth = {"Authorization": f"Bearer {tokens['read']}", "Content-Type": "application/json"}
        bodies = [orjson.dumps({"context": {"targetingKey": f"user-{i}", "tier": "free"}}) for i in range(50)]
        etags = [httpx.post(f"{server.base_url}/ofrep/v1/evaluate/flags", content=b, headers=auth).headers["etag"]
                 for b in bodies]
        for name, extra in (("200", [{}] * len(bodies)), ("304", [{"If-None-Match": e} for e in etags])):
            payloads = [request_bytes("POST", "/ofrep/v1/evaluate/flags", HOST, port, {**auth, **x}, b)
                        for b, x in zip(bodies, extra, strict=True)]
            asyncio.run(_paced(port, payloads, OFREP_RATE, 2.0, OFREP_CONNECTIONS))  # warm-up
            lat, statuses, late, elapsed = asyncio.run(_paced(port, payloads, OFREP_RATE, OFREP_SECONDS,
                                                              OFREP_CONNECTIONS))
            out[name] = {"requests": len(lat), "p50_ms": percentile(lat, 0.5) * 1000,
                         "p99_ms": percentile(lat, 0.99) * 1000, "rate": len(lat) / elapsed,
                         "wrong_status": len(lat) - statuses.get(int(name), 0), "late": late}
    finally:
        stop_server(server)
    return out


def run() -> tuple[str, dict[str, float]]:
    figures: dict[str, float] = {}
    rows: list[list[str]] = []
    load_before = os.getloadavg()[0]
    have_pg = postgres_available()
    kind = "postgres" if have_pg else "sqlite"
    with tempfile.TemporaryDirectory() as tmp:
        with scratch_database(kind, Path(tmp)) as url:
            tokens = _seed(url)
            ot = measure_otlp(url, tokens)
        figures.update(otlp_spans_per_s=ot["rate"], otlp_acknowledged=ot["acknowledged"], otlp_stored=ot["stored"])
        rows.append([f"OTLP spans (POST /v1/traces, protobuf) into {kind}",
                     f"{ot['batches']:.0f} batches x {SPAN_BATCH:,} spans (5 metrics each), "
                     f"{SPAN_CONNECTIONS} connections, {SPAN_WORKERS} worker(s)",
                     f"{ot['rate']:,.0f} spans/s; batch p99 {ot['p99_ms']:.0f} ms; {ot['non_200']:.0f} not 200",
                     f"≥ 20,000 spans/s: {'met' if ot['rate'] >= 20_000 and kind == 'postgres' else 'MISSED'}"])
        same = ot["acknowledged"] == ot["stored"]
        rows.append(["nothing lost (OTLP)", "after the span run",
                     f"acknowledged {ot['acknowledged']:,.0f}, stored {ot['stored']:,.0f}",
                     f"stored == acknowledged: {'met' if same else 'MISSED'}"])
        with scratch_database(kind, Path(tmp)) as url:
            tokens = _seed(url)
            of = measure_ofrep(url, tokens)
        for name in ("200", "304"):
            figures[f"ofrep_bulk_{name}_p99_ms"] = of[name]["p99_ms"]
            rows.append([f"OFREP bulk, {OFREP_FLAGS} flags, answered {name}",
                         f"offered {OFREP_RATE:,.0f} req/s open loop for {OFREP_SECONDS:.0f} s, "
                         f"{OFREP_CONNECTIONS} connections, 1 worker, {kind}",
                         f"{of[name]['rate']:,.0f} req/s; p50 {of[name]['p50_ms']:.2f} ms, "
                         f"p99 {of[name]['p99_ms']:.2f} ms; {of[name]['wrong_status']:.0f} other status; "
                         f"{of[name]['late']:.0f} sends behind schedule",
                         f"p99 < 10 ms: {'met' if of[name]['p99_ms'] < 10 else 'MISSED'}"])
        cheaper = of["304"]["p50_ms"] < of["200"]["p50_ms"]
        rows.append(["OFREP: a 304 costs less than a 200", "p50 of the two runs above",
                     f"304 p50 {of['304']['p50_ms']:.2f} ms vs 200 p50 {of['200']['p50_ms']:.2f} ms",
                     f"304 < 200: {'met' if cheaper else 'MISSED'}"])
    md = table(["what", "how", "measured", "target"], rows)
    md += (f"\n\nServer: `rollout serve` in separate processes on loopback; load from one asyncio process on the "
           f"same {os.cpu_count()} cores. Load average (1 min) when the run began: {load_before:.1f}.")
    return md, figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke check")
    if parser.parse_args().quick:
        SPAN_BATCHES, OFREP_SECONDS = 20, 3.0
    print(run()[0])
