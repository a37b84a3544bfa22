"""The HTTP edge under hostile clients: latency of /healthz and evaluations while raw sockets attack.

`rollout serve` runs in its own process on loopback (SQLite). While a probe
times GET /healthz and POST /v1/evaluate over one keep-alive connection,
three attacks run at once from this process, bounded in count and time:

* header bombs: GET /v1/flags with 10,000 headers (~116 KB), no token;
* slowloris: connections that send a request's headers a few bytes a second,
  and connections that send half a body and then nothing;
* a disconnect storm: POST /v1/evaluate announcing a body, sending part of
  it, and closing.

tests/adapters/api/test_edge.py runs the same attacks (shorter) and asserts
what must hold; the figures are measured here.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.common import percentile, scratch_database, table
from bench.server import RunningServer, start_server, stop_server
from rollout.store import flags as store
from rollout.store.db import make_engine, transaction
from rollout.store.tokens import create_token

HOST = "127.0.0.1"
SECONDS = 10.0
BOMB_HEADERS = 10_000
SLOW_CONNECTIONS = 100
DISCONNECTS = 300
SERVER_ENV = {"ROLLOUT_API_HEADER_TIMEOUT": "2", "ROLLOUT_API_BODY_TIMEOUT": "2",
              "ROLLOUT_API_REFRESH_INTERVAL": "0.25"}


def seed(url: str) -> str:
    """A promoted flag and a read token; returns the token."""
    engine = make_engine(url)
    with transaction(engine) as s:
        store.create_flag(s, "summarizer", variants=["old", "new"], actor="bench")
        store.promote(s, "summarizer", actor="bench")
        token = create_token(s, "edge-reader", namespace="default", scope="read", actor="bench").token
    engine.dispose()
    return token


def _read_status(sock: socket.socket, timeout: float) -> int | None:
    """The status code of the first response on `sock`, or None if the server closed without one."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, OSError):
        return None
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def header_bomb(port: int, headers: int = BOMB_HEADERS) -> tuple[int | None, float]:
    """(status, seconds) for one unauthenticated GET /v1/flags carrying `headers` headers."""
    lines = b"".join(b"X-Bomb-%d: %s\r\n" % (i, b"v" * 2) for i in range(headers))
    request = b"GET /v1/flags HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n"
    started = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=10) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # the server may answer and close before reading it all
        status = _read_status(sock, 10)
    return status, time.perf_counter() - started


def slow_headers(port: int) -> tuple[int | None, float]:
    """A request whose headers trickle in: (status, seconds until the server closed it)."""
    started = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.5)
        while time.perf_counter() - started < 30:
            try:
                sock.sendall(b"X-a: b\r\n")
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return None, time.perf_counter() - started
            if not data:
                return None, time.perf_counter() - started
            parts = data.split(b" ", 2)
            return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None), time.perf_counter() - started
    return None, time.perf_counter() - started


def slow_body(port: int, token: str) -> tuple[int | None, float]:
    """A POST that sends half its body and then nothing: (status, seconds)."""
    body = orjson.dumps({"flag": "summarizer", "unit_id": "u-1"})
    head = (f"POST /v1/evaluate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    started = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(head + body[: len(body) // 2])
        status = _read_status(sock, 30)
    return status, time.perf_counter() - started


def disconnect(port: int, token: str) -> None:
    """Announce a body, send part of it, close."""
    head = (f"POST /v1/evaluate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode()
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(head + b'{"flag": "summ')


@dataclass
class Probe:
    """Times /healthz and one-item evaluations over one keep-alive connection."""

    port: int
    token: str
    healthz: list[float] = field(default_factory=list)
    evaluations: list[float] = field(default_factory=list)
    failures: int = 0

    def run(self, stop: threading.Event) -> None:
        body = orjson.dumps({"flag": "summarizer", "unit_id": "u-1"})
        requests = [
            (self.healthz, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            (self.evaluations, (f"POST /v1/evaluate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.token}\r\n"
                                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
             + body),
        ]
        sock = socket.create_connection((HOST, self.port), timeout=5)
        try:
            i = 0
            while not stop.is_set():
                into, raw = requests[i % 2]
                i += 1
                started = time.perf_counter()
                sock.sendall(raw)
                if not _read_response(sock):
                    self.failures += 1
                    sock.close()
                    sock = socket.create_connection((HOST, self.port), timeout=5)
                    continue
                into.append(time.perf_counter() - started)
                time.sleep(0.005)  # a steady probe, not a load test
        finally:
            sock.close()


def _read_response(sock: socket.socket) -> bool:
    """Read one whole 200 response (Content-Length framed); False on anything else."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        rest += chunk
    return head.startswith(b"HTTP/1.1 200")


@dataclass
class Attacks:
    bombs: list[tuple[int | None, float]] = field(default_factory=list)
    slow_headers: list[tuple[int | None, float]] = field(default_factory=list)
    slow_bodies: list[tuple[int | None, float]] = field(default_factory=list)
    disconnects: int = 0


def attack(server: RunningServer, token: str, seconds: float, *, bombs: int, slow: int,
           disconnects: int) -> tuple[Probe, Attacks]:
    """Run the probe while the attacks run; everything bounded by count and by `seconds`."""
    port = server.port
    probe, done = Probe(port, token), Attacks()
    stop = threading.Event()
    prober = threading.Thread(target=probe.run, args=(stop,), daemon=True)
    prober.start()
    time.sleep(0.3)  # a baseline before the attack

    def bomber() -> None:
        for _ in range(bombs):
            done.bombs.append(header_bomb(port))
            time.sleep(seconds / max(bombs, 1) / 2)

    def storm() -> None:
        for _ in range(disconnects):
            disconnect(port, token)
            done.disconnects += 1
            time.sleep(seconds / max(disconnects, 1) / 2)

    def slowpoke(kind: str) -> None:
        (done.slow_headers if kind == "headers" else done.slow_bodies).append(
            slow_headers(port) if kind == "headers" else slow_body(port, token))

    threads = [threading.Thread(target=bomber), threading.Thread(target=storm)]
    threads += [threading.Thread(target=slowpoke, args=("headers" if i % 2 else "body",)) for i in range(slow)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds + 30
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    stop.set()
    prober.join(5)
    return probe, done


def stop_and_read_log(server: RunningServer) -> str:
    """Stop the server and return what it wrote to stderr (WARNING and above)."""
    server.process.terminate()
    try:
        _, err = server.process.communicate(timeout=15)
    except Exception:  # noqa: BLE001 - a server that will not stop is killed; its log is lost
        stop_server(server)
        return ""
    return (err or b"").decode(errors="replace")


def run() -> tuple[str, dict[str, float]]:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, scratch_database("sqlite", Path(tmp)) as url:
        token = seed(url)
        server = start_server(url, env=SERVER_ENV)
        try:
            probe, done = attack(server, token, SECONDS, bombs=20, slow=SLOW_CONNECTIONS, disconnects=DISCONNECTS)
        finally:
            log = stop_and_read_log(server)
    errors_logged = log.count("unexpected error") + log.count("Traceback")
    hz99, ev99 = percentile(probe.healthz, 0.99) * 1000, percentile(probe.evaluations, 0.99) * 1000
    bomb_s = max(s for _, s in done.bombs)
    figures = {"edge_healthz_p99_ms": hz99, "edge_eval_p99_ms": ev99, "edge_bomb_max_s": bomb_s}
    rows = [
        ["GET /healthz under attack", f"{len(probe.healthz):,} probes",
         f"p50 {percentile(probe.healthz, 0.5) * 1000:.1f} ms, p99 {hz99:.1f} ms",
         f"p99 < 100 ms: {'met' if hz99 < 100 else 'MISSED'}"],
        ["POST /v1/evaluate under attack", f"{len(probe.evaluations):,} probes",
         f"p50 {percentile(probe.evaluations, 0.5) * 1000:.1f} ms, p99 {ev99:.1f} ms; {probe.failures} failed",
         f"p99 < 100 ms: {'met' if ev99 < 100 else 'MISSED'}"],
        ["header bombs (10,000 headers, no token)", f"{len(done.bombs)} requests",
         f"answered {sorted({s for s, _ in done.bombs}, key=str)}, slowest {bomb_s * 1000:.0f} ms", "4xx at once"],
        ["slow headers (slowloris)", f"{len(done.slow_headers)} connections",
         f"closed after {max((s for _, s in done.slow_headers), default=0):.1f} s at most "
         f"(header timeout {SERVER_ENV['ROLLOUT_API_HEADER_TIMEOUT']} s)", "closed by the server"],
        ["half-sent bodies", f"{len(done.slow_bodies)} connections",
         f"answered {sorted({s for s, _ in done.slow_bodies}, key=str)} after "
         f"{max((s for _, s in done.slow_bodies), default=0):.1f} s at most "
         f"(body timeout {SERVER_ENV['ROLLOUT_API_BODY_TIMEOUT']} s)", "408"],
        ["client disconnects mid-body", f"{done.disconnects} requests",
         f"{errors_logged} errors or tracebacks in the server's log",
         f"none: {'met' if not errors_logged else 'MISSED'}"],
    ]
    md = table(["what", "how", "measured", "target"], rows)
    md += (f"\n\nOne `rollout serve` worker (uvicorn, httptools, uvloop) on SQLite; attacks and probe from one "
           f"process on loopback, {SECONDS:g} s. Load average (1 min) when the run began: {load_before:.1f}.")
    return md, figures


if __name__ == "__main__":
    print(run()[0])
