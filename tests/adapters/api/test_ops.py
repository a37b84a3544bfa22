"""/healthz for probes, /metrics for Prometheus."""

from __future__ import annotations

from tests.adapters.api.conftest import Service


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
