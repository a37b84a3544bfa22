"""/healthz for probes, /metrics for Prometheus."""

from __future__ import annotations

from rollout.testing.flag_source import InMemoryFlagSource
from tests.adapters.api.conftest import Service
from tests.harness.waiting import seconds_until


def test_healthz_needs_no_token_and_tells_nothing_about_tenants(shared_api: Service) -> None:
    response = shared_api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "loaded": True, "stale": False}


def test_metrics_are_prometheus_text_with_the_promised_series(shared_api: Service) -> None:
    # Given some evaluations, When an admin scrapes /metrics
    shared_api.client.post("/v1/evaluate", json={"flag": "promoted", "unit_id": "u"}, headers=shared_api.auth("read"))
    response = shared_api.client.get("/metrics", headers=shared_api.auth("admin"))
    # Then the text format carries evaluations, outcomes, snapshot version and request latency, without tenants
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for series in ("rollout_evaluations_total{reason=\"STATIC\"}", "rollout_outcomes_accepted_total",
                   "rollout_outcomes_rejected_total", "rollout_snapshot_version",
                   "rollout_http_request_duration_seconds_bucket"):
        assert series in text, series
    assert 'route="/v1/evaluate"' in text
    assert "namespace" not in text and "summarizer" not in text


def test_unknown_paths_are_404_json_and_share_one_metrics_label(shared_api: Service) -> None:
    response = shared_api.client.get("/v1/../../etc/passwd%00", headers=shared_api.auth("read"))
    assert response.status_code == 404 and "error" in response.json()
    assert 'route="unmatched"' in shared_api.client.get("/metrics", headers=shared_api.auth("admin")).text


def test_metrics_show_a_token_only_its_own_namespace(api: Service) -> None:
    # Given evaluations in namespace "default" and none in "other"
    for _ in range(3):
        api.client.post("/v1/evaluate", json={"flag": "promoted", "unit_id": "u"}, headers=api.auth("read"))
    ours = api.client.get("/metrics", headers=api.auth("admin")).text
    theirs = api.client.get("/metrics", headers=api.auth("other-admin")).text
    # Then each admin sees its own evaluations and request timings, never the other's
    assert 'rollout_evaluations_total{reason="STATIC"} 3.0' in ours
    assert 'rollout_evaluations_total{reason="STATIC"} 0.0' in theirs
    assert 'route="/v1/evaluate"' in ours and 'route="/v1/evaluate"' not in theirs
    # And the snapshot version is the sum over the token's own namespace's flags only
    snapshot = api.client.app.state.rollout.snapshot  # type: ignore[attr-defined]
    assert f"rollout_snapshot_version {float(snapshot.namespace_version('other'))}" in theirs
    assert f"rollout_snapshot_version {float(snapshot.namespace_version('default'))}" in ours
    assert snapshot.namespace_version("other") != snapshot.version


def test_healthz_says_stale_while_the_snapshot_is_stale(api: Service) -> None:
    # Given a service whose flag source starts refusing (the real faults are in test_outage.py)
    snapshot = api.client.app.state.rollout.snapshot  # type: ignore[attr-defined]
    real, refusing = snapshot.source, InMemoryFlagSource()
    refusing.health = "refuse"
    snapshot.source = refusing
    try:
        seconds_until(lambda: snapshot.stale)
        # Then /healthz says so, and still answers 200: the service is serving
        assert api.client.get("/healthz").json() == {"status": "stale", "loaded": True, "stale": True}
    finally:
        snapshot.source = real
    # And once the source answers again it is ok, with no flag changed
    seconds_until(lambda: api.client.get("/healthz").json()["status"] == "ok")
