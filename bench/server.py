"""`rollout serve` in its own process on a free loopback port: for the HTTP bench and the end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    base_url: str
    process: subprocess.Popen[bytes]

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])


def start_server(db_url: str, *extra: str, env: dict[str, str] | None = None, workers: int = 1) -> RunningServer:
    """Start the service; returns once /healthz answers 200 (or raises with the server's stderr)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rollout", "--db", db_url, "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), *extra],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    server = RunningServer(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rollout serve exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    stop_server(server)
    raise RuntimeError("rollout serve did not become healthy in 30 s")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=5)
    if server.process.stderr is not None:
        server.process.stderr.close()
