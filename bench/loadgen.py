"""A small closed-loop HTTP/1.1 load generator: keep-alive connections on loopback, bounded in time.

Why not locust or wrk: wrk is a system package (CI runs on a fresh clone),
and locust spends more CPU per request than the service under test, which on
a 2-core machine would measure locust. This one writes pre-encoded requests
on raw asyncio streams and parses only the status line and Content-Length,
so it costs a few tens of microseconds per request.

Only loopback addresses are accepted: this tool must never load anything else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    bodies: list[tuple[int, bytes]] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)   # with keep_bodies: which request each body answered
    elapsed: float = 0.0
    errors: int = 0

    @property
    def count(self) -> int:
        return len(self.latencies)


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"refusing to send load to {host}: only loopback addresses")


def request_bytes(method: str, path: str, host: str, port: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _worker(host: str, port: int, requests: Sequence[bytes], start: int, deadline: float,
                  budget: list[int], result: Result, keep_bodies: bool) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = start
    n = len(requests)
    perf = time.perf_counter
    try:
        while perf() < deadline and budget[0] > 0:
            budget[0] -= 1
            index = i % n
            payload = requests[index]
            i += 1
            t0 = perf()
            writer.write(payload)
            try:
                status, body = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                result.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            result.latencies.append(perf() - t0)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if keep_bodies:
                result.bodies.append((status, body))
                result.sent.append(index)
    finally:
        writer.close()


async def run_load(host: str, port: int, requests: Sequence[bytes], *, connections: int, duration: float,
                   max_requests: int = 10**9, keep_bodies: bool = False, warmup: float = 0.0) -> Result:
    """Send `requests` round-robin over `connections` until `duration` s or `max_requests` have passed."""
    _check_loopback(host)
    if warmup > 0:
        await run_load(host, port, requests, connections=connections, duration=warmup)
    result = Result()
    budget = [max_requests]
    start = time.perf_counter()
    deadline = start + duration
    await asyncio.gather(*(
        _worker(host, port, requests, k * 7919, deadline, budget, result, keep_bodies) for k in range(connections)
    ))
    result.elapsed = time.perf_counter() - start
    return result


def run(host: str, port: int, requests: Sequence[bytes], **kwargs: object) -> Result:
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop ships with the project on Linux
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(run_load(host, port, requests, **kwargs))  # type: ignore[arg-type]
