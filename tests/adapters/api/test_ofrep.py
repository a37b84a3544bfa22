"""OFREP's request rules and error shapes, one table row per case the protocol (OFREP 0.3.0) names."""

from __future__ import annotations

import pytest

from rollout.errors import InvalidFlagError
from rollout.store import flags as store
from rollout.store.db import transaction
from tests.adapters.api.conftest import Service

ONE = "/ofrep/v1/evaluate/flags/summarizer"
BULK = "/ofrep/v1/evaluate/flags"

BAD_REQUESTS = [
    # (name, body bytes, error code)
    ("no body", b"", "PARSE_ERROR"),
    ("not JSON", b"{context", "PARSE_ERROR"),
    ("not an object", b"[1, 2]", "INVALID_CONTEXT"),
    ("an empty object", b"{}", "INVALID_CONTEXT"),
    ("a context that is not an object", b'{"context": "user-1"}', "INVALID_CONTEXT"),
    ("a numeric targetingKey", b'{"context": {"targetingKey": 42}}', "INVALID_CONTEXT"),
    ("a boolean targetingKey", b'{"context": {"targetingKey": true}}', "INVALID_CONTEXT"),
    ("no targetingKey", b'{"context": {"tier": "free"}}', "TARGETING_KEY_MISSING"),
    ("an empty targetingKey", b'{"context": {"targetingKey": ""}}', "TARGETING_KEY_MISSING"),
    ("a null targetingKey", b'{"context": {"targetingKey": null}}', "TARGETING_KEY_MISSING"),
]


@pytest.mark.parametrize(("name", "body", "code"), BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_a_bad_single_flag_request_is_a_400_with_ofreps_error_code(shared_api: Service, name: str, body: bytes,
                                                                   code: str) -> None:
    # Given a read token, When one flag is asked with a request OFREP does not allow
    r = shared_api.client.post(ONE, content=body, headers={**shared_api.auth("read"),
                                                            "Content-Type": "application/json"})
    # Then the answer is 400 with the error code OFREP names for it, and the flag's key
    assert r.status_code == 400, r.text
    assert (r.json()["key"], r.json()["errorCode"]) == ("summarizer", code)
    assert r.json()["errorDetails"]


@pytest.mark.parametrize(("name", "body", "code"), BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_a_bad_bulk_request_is_a_400_or_a_failure_for_every_flag(shared_api: Service, name: str, body: bytes,
                                                                 code: str) -> None:
    # Given the same requests to the bulk endpoint
    r = shared_api.client.post(BULK, content=body, headers={**shared_api.auth("read"),
                                                             "Content-Type": "application/json"})
    if code == "TARGETING_KEY_MISSING":
        # Then an anonymous context still lists every flag, each as a failure with the code
        assert r.status_code == 200
        flags = r.json()["flags"]
        assert flags and {f["errorCode"] for f in flags} == {code}
        assert all("value" not in f and f["metadata"]["variant"] for f in flags)
    else:
        # Then a request that is not OFREP's is a bulk failure
        assert r.status_code == 400
        assert r.json()["errorCode"] == code


NOT_FOUND_PATHS = [
    # (name, path, key in the answer)
    ("an empty key, no redirect to the bulk endpoint", "/ofrep/v1/evaluate/flags/", ""),
    ("an encoded slash in the key", "/ofrep/v1/evaluate/flags/summarizer%2Fx", "summarizer%2Fx"),
    ("a base URL with a trailing slash", "//ofrep/v1/evaluate/flags/summarizer", "summarizer"),
    ("an unknown flag", "/ofrep/v1/evaluate/flags/no-such-flag", "no-such-flag"),
]


@pytest.mark.parametrize(("name", "path", "key"), NOT_FOUND_PATHS, ids=[r[0] for r in NOT_FOUND_PATHS])
def test_flag_paths_that_name_no_flag_are_ofrep_404s(shared_api: Service, name: str, path: str, key: str) -> None:
    # When a flag path that names no flag is asked
    # (a full URL: httpx would read a bare "//ofrep/..." as a host name)
    r = shared_api.client.post("http://testserver" + path, json={"context": {"targetingKey": "u"}},
                               headers=shared_api.auth("read"), follow_redirects=False)
    # Then it is OFREP's FLAG_NOT_FOUND, never a redirect or `{"error": ...}`
    assert r.status_code == 404, r.text
    assert (r.json()["key"], r.json()["errorCode"]) == (key, "FLAG_NOT_FOUND")
    assert "error" not in r.json()


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/ofrep/v2/evaluate/flags", 404),
    ("POST", "/ofrep/v1/nothing-here", 404),
    ("GET", "/ofrep/v1/evaluate/flags/summarizer", 405),
    ("GET", "/ofrep/v1/evaluate/flags", 405),
])
def test_other_paths_under_ofrep_answer_in_ofreps_shape(shared_api: Service, method: str, path: str,
                                                        status: int) -> None:
    r = shared_api.client.request(method, path, json={"context": {"targetingKey": "u"}},
                                  headers=shared_api.auth("read"))
    assert r.status_code == status
    assert r.json()["errorCode"] == "GENERAL" and r.json()["errorDetails"]


def test_success_answers_carry_only_ofreps_reasons_and_scalar_metadata(shared_api: Service) -> None:
    # Given the inactive flag (everyone on the baseline), When it is evaluated
    r = shared_api.client.post("/ofrep/v1/evaluate/flags/inactive", json={"context": {"targetingKey": "u"}},
                               headers=shared_api.auth("read"))
    # Then its reason is OFREP's STATIC, and our finer reason rides in the metadata for our own provider
    body = r.json()
    assert (r.status_code, body["reason"], body["value"], body["variant"]) == (200, "STATIC", "current", "current")
    assert body["metadata"]["rolloutReason"] == "DEFAULT"
    assert all(isinstance(v, (bool, int, float, str)) for v in body["metadata"].values())


def test_a_flag_with_an_array_payload_is_refused_when_created(api: Service) -> None:
    # Given a flag definition whose variant payload is a JSON array, When it is created
    with pytest.raises(InvalidFlagError, match="JSON array"), transaction(api.engine) as s:
        store.create_flag(s, "lists", variants={"a": [1, 2], "b": {"items": [1, 2]}}, actor="test")
    # Then nothing is stored, and an object payload (a list wrapped in an object) is fine
    with transaction(api.engine) as s:
        store.create_flag(s, "lists", variants={"a": {"items": [1]}, "b": {"items": [1, 2]}}, actor="test")
        store.promote(s, "lists", actor="test")
    api.client.app.state.rollout.snapshot.refresh()  # type: ignore[attr-defined]
    r = api.client.post("/ofrep/v1/evaluate/flags/lists", json={"context": {"targetingKey": "u"}},
                        headers=api.auth("read"))
    assert r.json()["value"] == {"items": [1, 2]}


def test_cors_is_off_unless_an_origin_is_configured(shared_api: Service) -> None:
    # Given the service with default settings, When a browser preflights the bulk endpoint from some origin
    r = shared_api.client.options(BULK, headers={"Origin": "http://app.example.test",
                                                 "Access-Control-Request-Method": "POST"})
    # Then no origin is allowed (the allowed case runs against a real server in test_ofrep_clients.py)
    assert "access-control-allow-origin" not in r.headers
