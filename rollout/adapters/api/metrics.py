"""Prometheus metrics of one service process, per tenant, and the ASGI middleware that times requests.

A token's `/metrics` shows its own namespace's series and the service's
own health, nothing of any other tenant: each namespace has its own
registry (evaluations, outcomes, request latency, its snapshot version),
and the namespace is never a label, so there is no series of another tenant
to filter out by mistake. The namespace of the request being handled is
the `tenant` context variable, set by `rollout.adapters.api.auth.authorize`,
so call sites only say what happened (`metrics.evaluated(reason)`).

Requests no token vouched for (401s, unknown paths) are timed in one
service-wide histogram by route template and status: volumes, no tenant.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from rollout.sdk.snapshot import Snapshot

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "TimingMiddleware", "tenant"]

tenant: ContextVar[str | None] = ContextVar("rollout_tenant", default=None)
"""The namespace of the token behind the request being handled (None before authorisation)."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)
REASONS = ("SPLIT", "STATIC", "DEFAULT", "DISABLED", "STALE", "ERROR")


class TenantMetrics:
    """One namespace's series, in a registry of its own."""

    def __init__(self, namespace: str, snapshot: Snapshot) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.evaluations = Counter("rollout_evaluations", "Flag evaluations answered, by reason.",
                                   ["reason"], registry=r)
        self.outcomes_accepted = Counter("rollout_outcomes_accepted", "Outcomes validated and stored.", registry=r)
        self.outcomes_rejected = Counter("rollout_outcomes_rejected", "Outcomes refused by validation.", registry=r)
        self.requests = Histogram("rollout_http_request_duration_seconds",
                                  "HTTP request latency, by route and status code.",
                                  ["method", "route", "status"], registry=r, buckets=LATENCY_BUCKETS)
        version = Gauge("rollout_snapshot_version",
                        "Sum of the versions of the flags this token sees in the snapshot (rises with each change).",
                        registry=r)
        version.set_function(lambda: snapshot.namespace_version(namespace))
        flags = Gauge("rollout_snapshot_flags", "Flags this token sees in the served snapshot.", registry=r)
        flags.set_function(lambda: len(snapshot.view(namespace).flags))
        self._reasons = {reason: self.evaluations.labels(reason) for reason in REASONS}

    def evaluated(self, reason: str, n: int) -> None:
        counter = self._reasons.get(reason)
        (counter if counter is not None else self.evaluations.labels(reason)).inc(n)


class _TenantCounter:
    """`.inc(n)` on the current tenant's counter named `attribute` (nothing outside a tenant's request)."""

    def __init__(self, metrics: Metrics, attribute: str) -> None:
        self._metrics = metrics
        self._attribute = attribute

    def inc(self, amount: float = 1) -> None:
        namespace = tenant.get()
        if namespace is not None:
            getattr(self._metrics.tenant(namespace), self._attribute).inc(amount)


class Metrics:
    """The service-wide series plus one `TenantMetrics` per namespace; one instance per app."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._tenants: dict[str, TenantMetrics] = {}
        self._lock = threading.Lock()
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.unattributed = Histogram(
            "rollout_http_unattributed_request_duration_seconds",
            "Latency of requests no valid token vouched for (401, 404 ...), by route and status code.",
            ["method", "route", "status"], registry=r, buckets=LATENCY_BUCKETS)
        refreshes = Gauge("rollout_snapshot_refreshes", "Snapshot reloads since start.", registry=r)
        refreshes.set_function(lambda: snapshot.refreshes)
        errors = Gauge("rollout_snapshot_refresh_errors", "Snapshot refreshes that failed or timed out.", registry=r)
        errors.set_function(lambda: snapshot.refresh_errors)
        stale = Gauge("rollout_snapshot_stale", "1 while the database is unreachable and the last state is served.",
                      registry=r)
        stale.set_function(lambda: 1.0 if snapshot.stale else 0.0)
        age = Gauge("rollout_snapshot_age_seconds", "Seconds since the database last answered a refresh.",
                    registry=r)
        age.set_function(lambda: time.monotonic() - snapshot.last_contact if snapshot.last_contact else float("nan"))
        self.outcomes_accepted = _TenantCounter(self, "outcomes_accepted")
        self.outcomes_rejected = _TenantCounter(self, "outcomes_rejected")

    def tenant(self, namespace: str) -> TenantMetrics:
        found = self._tenants.get(namespace)
        if found is None:
            with self._lock:  # namespaces come only from valid tokens, so this map stays small
                found = self._tenants.get(namespace)
                if found is None:
                    found = self._tenants[namespace] = TenantMetrics(namespace, self._snapshot)
        return found

    def evaluated(self, reason: str, n: int = 1) -> None:
        namespace = tenant.get()
        if namespace is not None:
            self.tenant(namespace).evaluated(reason, n)

    def observe(self, namespace: str | None, method: str, route: str, status: int, seconds: float) -> None:
        histogram = self.tenant(namespace).requests if namespace is not None else self.unattributed
        histogram.labels(method, route, str(status)).observe(seconds)

    def render(self, namespace: str) -> bytes:
        """What `namespace`'s token may see: its own series, then the service's health."""
        return generate_latest(self.tenant(namespace).registry) + generate_latest(self.registry)


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
            # Only a request that passed authorisation counts as its tenant's (authorize puts the namespace here).
            namespace = scope.get("rollout.namespace")
            self.metrics.observe(namespace, scope["method"], template, status, time.perf_counter() - start)
