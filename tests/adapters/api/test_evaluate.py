"""POST /v1/evaluate beyond the golden cases: batches, limits and malformed requests."""

from __future__ import annotations

import pytest

from tests.adapters.api.conftest import Service


def test_a_batch_answers_in_order_with_the_flag_version(shared_api: Service) -> None:
    # Given two items for two flags, When they are evaluated in one request
    items = [{"flag": "promoted", "unit_id": "u-1"}, {"flag": "inactive", "unit_id": "u-1"}]
    results = shared_api.client.post("/v1/evaluate", json={"items": items}, headers=shared_api.auth("read")).json()
    # Then each result names its flag, variant, reason and version
    assert [(r["flag"], r["variant"], r["reason"]) for r in results["results"]] == [
        ("promoted", "new-model", "STATIC"), ("inactive", "current", "DEFAULT")]
    assert all(r["flag_version"] >= 1 for r in results["results"])


def test_a_batch_over_the_limit_is_413(shared_api: Service) -> None:
    items = [{"flag": "promoted", "unit_id": "u"}] * 5001
    response = shared_api.client.post("/v1/evaluate", json={"items": items}, headers=shared_api.auth("read"))
    assert response.status_code == 413


@pytest.mark.parametrize("body,status", [
    (b"", 400),
    (b"{not json", 400),
    (b"\xff\xfe", 400),
    (b'"\\ud800"', 400),
    (b"[]", 422),
    (b"42", 422),
    (b'{"flag": 1}', 422),
    (b'{"flag": "x", "attributes": [1]}', 422),
    (b'{"flag": "x", "default": 5}', 422),
    (b'{"items": "x"}', 422),
    (b'{"items": [1]}', 422),
    (b'{"flag": "\'; DROP TABLE flags; --", "unit_id": "u"}', 200),
    (b'{"flag": "summarizer", "unit_id": "\\u0000\\u001f", "attributes": {"tier": "\\u0000"}}', 200),
    (b'{"flag": "summarizer", "unit_id": 123456789012345678901234567890}', 200),
    (b'{"flag": "summarizer", "unit_id": {"a": 1}, "attributes": {"tier": {"x": [1]}}}', 200),
])
def test_malformed_requests_are_refused_cleanly(shared_api: Service, body: bytes, status: int) -> None:
    # Given a hostile or broken body, When it is posted
    response = shared_api.client.post("/v1/evaluate", content=body,
                                      headers={**shared_api.auth("read"), "Content-Type": "application/json"})
    # Then the answer is the expected client status with a JSON body, never a server error
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")


def test_odd_units_get_the_baseline_with_an_error_code_like_the_sdk(shared_api: Service) -> None:
    response = shared_api.client.post("/v1/evaluate", json={"flag": "summarizer", "unit_id": {"a": 1}},
                                      headers=shared_api.auth("read")).json()
    assert (response["variant"], response["reason"], response["error_code"]) == (
        "current", "ERROR", "TARGETING_KEY_MISSING")


@pytest.mark.parametrize("body,status,code", [
    (b"{not json", 400, "PARSE_ERROR"),
    (b"[1]", 400, "INVALID_CONTEXT"),
    (b'{"context": "user-1"}', 400, "INVALID_CONTEXT"),
])
def test_ofrep_refuses_a_bad_context_in_ofrep_words(shared_api: Service, body: bytes, status: int, code: str) -> None:
    for path in ("/ofrep/v1/evaluate/flags/summarizer", "/ofrep/v1/evaluate/flags"):
        response = shared_api.client.post(path, content=body, headers={**shared_api.auth("read"),
                                                                       "Content-Type": "application/json"})
        assert (response.status_code, response.json()["errorCode"]) == (status, code)


def test_ofrep_bulk_answers_304_for_the_same_flags_and_context(shared_api: Service) -> None:
    body = {"context": {"targetingKey": "user-1", "tier": "free"}}
    first = shared_api.client.post("/ofrep/v1/evaluate/flags", json=body, headers=shared_api.auth("read"))
    again = shared_api.client.post("/ofrep/v1/evaluate/flags", json=body,
                                   headers={**shared_api.auth("read"), "If-None-Match": first.headers["etag"]})
    other_unit = shared_api.client.post("/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": "user-2"}},
                                        headers={**shared_api.auth("read"), "If-None-Match": first.headers["etag"]})
    assert (first.status_code, again.status_code, other_unit.status_code) == (200, 304, 200)
