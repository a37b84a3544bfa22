"""Prometheus metrics of one service process, and the ASGI middleware that times requests.

Labels never carry a namespace, flag key or token name: the metrics are
operational, and one tenant's admin reading them learns nothing about
another tenant's flags.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from rollout.adapters.api.snapshot import ServiceSnapshot

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "TimingMiddleware"]


class Metrics:
    """One registry per app, so two apps in one process (tests) never share counters."""

    def __init__(self, snapshot: ServiceSnapshot) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.evaluations = Counter("rollout_evaluations", "Flag evaluations answered, by reason.",
                                   ["reason"], registry=r)
        self.outcomes_accepted = Counter("rollout_outcomes_accepted", "Outcomes validated and stored.", registry=r)
        self.outcomes_rejected = Counter("rollout_outcomes_rejected", "Outcomes refused by validation.", registry=r)
        self.requests = Histogram(
            "rollout_http_request_duration_seconds", "HTTP request latency, by route and status code.",
            ["method", "route", "status"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
        )
        version = Gauge("rollout_snapshot_version",
                        "Sum of flag versions in the served snapshot (rises with every change).", registry=r)
        version.set_function(lambda: snapshot.version)
        refreshes = Gauge("rollout_snapshot_refreshes", "Snapshot reloads since start.", registry=r)
        refreshes.set_function(lambda: snapshot.refreshes)
        stale = Gauge("rollout_snapshot_stale", "1 while the database is unreachable and the last state is served.",
                      registry=r)
        stale.set_function(lambda: 1.0 if snapshot.stale else 0.0)
        age = Gauge("rollout_snapshot_age_seconds", "Seconds since the snapshot last loaded a change.", registry=r)
        age.set_function(lambda: time.time() - snapshot.loaded_at if snapshot.loaded_at else float("nan"))
        self._reason_counters = {reason: self.evaluations.labels(reason) for reason in
                                 ("SPLIT", "STATIC", "DEFAULT", "DISABLED", "STALE", "ERROR")}

    def evaluated(self, reason: str, n: int = 1) -> None:
        counter = self._reason_counters.get(reason)
        (counter if counter is not None else self.evaluations.labels(reason)).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class TimingMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware overhead): time each HTTP request, label it by route template."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label: a scanner must not create a series per URL it tries.
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).observe(time.perf_counter() - start)
