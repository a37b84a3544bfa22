"""POST /v1/outcomes: valid items stored, bad ones named, oversize batches refused whole."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from rollout.store.db import transaction
from rollout.store.models import Outcome
from tests.adapters.api.conftest import Service


def stored(api: Service) -> list[tuple[str, str, str, float]]:
    with transaction(api.engine) as s:
        return [tuple(r) for r in s.execute(  # type: ignore[misc]
            select(Outcome.variant, Outcome.stratum, Outcome.metric, Outcome.value).order_by(Outcome.id))]


GOOD = {"flag": "summarizer", "unit_id": "user-1", "metrics": {"latency_ms": 812, "error": False},
        "attributes": {"email_domain": "example.com"}}

BAD_ITEMS = [
    ("not an object", "oops", "must be an object"),
    ("unknown flag", {**GOOD, "flag": "nope"}, "unknown flag"),
    ("flag of another type", {**GOOD, "flag": 7}, "unknown flag"),
    ("no unit", {**GOOD, "unit_id": ""}, "unit_id"),
    ("metrics not a mapping", {**GOOD, "metrics": [1, 2]}, "mapping"),
    ("no metrics", {**GOOD, "metrics": {}}, "at least one metric"),
    ("metric name with SQL", {**GOOD, "metrics": {"x'); DROP TABLE outcomes; --": 1}}, "identifier"),
    ("metric name with NUL", {**GOOD, "metrics": {"a\u0000b": 1}}, "identifier"),
    ("text value", {**GOOD, "metrics": {"latency_ms": "fast"}}, "number"),
    ("negative latency", {**GOOD, "metrics": {"latency_ms": -5}}, "cannot be negative"),
    ("variant of no arm", {**GOOD, "variant": "gpt-9"}, "not an arm"),
    ("attributes not a mapping", {**GOOD, "attributes": "x"}, "attributes"),
    ("timestamp in milliseconds", {**GOOD, "recorded_at": time.time() * 1000}, "recorded_at"),
    ("timestamp as text", {**GOOD, "recorded_at": "yesterday"}, "recorded_at"),
]


@pytest.mark.parametrize("bad", [b[1] for b in BAD_ITEMS], ids=[b[0] for b in BAD_ITEMS])
def test_a_bad_item_is_named_and_the_good_ones_around_it_are_stored(shared_api: Service, bad: object) -> None:
    # Given a batch with a valid outcome on each side of a bad one
    api = shared_api
    rows_before = len(stored(api))
    batch = {"outcomes": [GOOD, bad, {**GOOD, "unit_id": "user-2", "variant": "current"}]}
    # When it is posted with a write token
    response = api.client.post("/v1/outcomes", json=batch, headers=api.auth("write"))
    # Then the bad one comes back by index with its reason, and both good ones are stored (2 metrics each)
    body = response.json()
    assert response.status_code == 200
    assert (body["accepted"], body["rejected"], [e["index"] for e in body["errors"]]) == (2, 1, [1])
    expected_reason = next(reason for name, item, reason in BAD_ITEMS if item is bad)
    assert expected_reason in body["errors"][0]["error"]
    assert len(stored(api)) == rows_before + 4


def test_outcomes_land_in_the_units_arm_and_stratum(api: Service) -> None:
    # Given a unit of the internal stratum (100 % candidate), When its outcome is reported without a variant
    api.client.post("/v1/outcomes", json={"outcomes": [GOOD]}, headers=api.auth("write"))
    # Then it is stored under the candidate and the internal stratum, one row per metric, booleans as 0/1
    assert sorted(stored(api)) == [("new-model", "internal", "error", 0.0),
                                   ("new-model", "internal", "latency_ms", 812.0)]


def test_a_batch_over_the_item_limit_is_413_and_stores_nothing(api: Service) -> None:
    response = api.client.post("/v1/outcomes", json={"outcomes": [GOOD] * 5001}, headers=api.auth("write"))
    assert response.status_code == 413
    assert stored(api) == []


def test_a_body_over_the_byte_limit_is_413_before_parsing(api: Service) -> None:
    # Given a 3 MiB body (the limit is 2 MiB), which is not even JSON
    response = api.client.post("/v1/outcomes", content=b"x" * (3 * 1024 * 1024),
                               headers={**api.auth("write"), "Content-Type": "application/json"})
    # Then it is refused as too large, not as malformed: nothing read it
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


@pytest.mark.parametrize("path", ["/v1/outcomes", "/v1/evaluate", "/ofrep/v1/evaluate/flags/summarizer"])
def test_a_chunked_body_over_the_limit_is_cut_off_with_413(api: Service, path: str) -> None:
    # Given a body streamed in chunks with no Content-Length, 4 MB in all
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"y" * 100_000

    # When it is posted, Then it is cut off with 413 and nothing is stored
    response = api.client.post(path, content=chunks(), headers=api.auth("admin"))
    assert response.status_code == 413
    assert stored(api) == []


@pytest.mark.parametrize("body", [b'{"outcomes": 1}', b"[]", b'{"x": []}', b"null"])
def test_a_body_that_is_not_a_batch_is_422(api: Service, body: bytes) -> None:
    response = api.client.post("/v1/outcomes", content=body,
                               headers={**api.auth("write"), "Content-Type": "application/json"})
    assert response.status_code == 422


def test_counts_reach_metrics(api: Service) -> None:
    api.client.post("/v1/outcomes", json={"outcomes": [GOOD, GOOD, "bad"]}, headers=api.auth("write"))
    text = api.client.get("/metrics", headers=api.auth("admin")).text
    assert "rollout_outcomes_accepted_total 2.0" in text
    assert "rollout_outcomes_rejected_total 1.0" in text
    with transaction(api.engine) as s:
        assert s.scalar(select(func.count()).select_from(Outcome)) == 4


def _keys(api: Service) -> tuple[int, int]:
    """(rows, distinct (source, seq, metric)): equal when nothing is stored twice."""
    with transaction(api.engine) as s:
        rows = s.scalar(select(func.count()).select_from(Outcome))
        distinct = s.scalar(select(func.count()).select_from(
            select(Outcome.source, Outcome.seq, Outcome.metric).distinct().subquery()))
    return int(rows or 0), int(distinct or 0)


BATCH = {"outcomes": [{**GOOD, "unit_id": f"user-{i}", "recorded_at": 1.7e9 + i} for i in range(20)]}


@pytest.mark.parametrize(("name", "extra_body", "headers"), [
    ("derived from the body", {}, {}),
    ("batch_key in the body", {"batch_key": "app-7:batch-1"}, {}),
    ("Idempotency-Key header", {}, {"Idempotency-Key": "app-7:batch-1"}),
])
def test_a_batch_sent_again_stores_nothing_twice_and_says_so(api: Service, name: str, extra_body: dict,
                                                             headers: dict) -> None:
    # Given a batch of 20 outcomes that was stored once
    body = {**BATCH, **extra_body}
    first = api.client.post("/v1/outcomes", json=body, headers={**api.auth("write"), **headers}).json()
    # When the very same batch is sent again (the caller never saw the first answer, say)
    again = api.client.post("/v1/outcomes", json=body, headers={**api.auth("write"), **headers}).json()
    # Then the first answer stored all 20, the second none, and the table holds each once
    assert (first["stored"], first["duplicates"]) == (20, 0), name
    assert (again["accepted"], again["stored"], again["duplicates"]) == (20, 0, 20), name
    assert _keys(api) == (40, 40)


def test_distinct_batch_keys_store_identical_outcomes_separately(api: Service) -> None:
    # Given the same outcomes sent under two batch keys (two real, identical events)
    for key in ("k1", "k2"):
        answer = api.client.post("/v1/outcomes", json={**BATCH, "batch_key": key}, headers=api.auth("write")).json()
        # Then each batch is stored in full
        assert (answer["stored"], answer["duplicates"]) == (20, 0)
    assert _keys(api) == (80, 80)


def test_a_replay_with_an_item_added_stores_just_that_item(api: Service) -> None:
    # Given a keyed batch stored once
    api.client.post("/v1/outcomes", json={**BATCH, "batch_key": "grow"}, headers=api.auth("write"))
    # When it is sent again under the same key with one more item at the end
    grown = {"batch_key": "grow", "outcomes": [*BATCH["outcomes"], {**GOOD, "unit_id": "user-new"}]}
    answer = api.client.post("/v1/outcomes", json=grown, headers=api.auth("write")).json()
    # Then only the new item is stored, and the answer counts exactly that
    assert (answer["accepted"], answer["stored"], answer["duplicates"]) == (21, 1, 20)
    assert _keys(api) == (42, 42)


@pytest.mark.parametrize("key", ["", "x" * 201, 7])
def test_a_bad_batch_key_is_422_and_stores_nothing(api: Service, key: object) -> None:
    response = api.client.post("/v1/outcomes", json={**BATCH, "batch_key": key}, headers=api.auth("write"))
    assert response.status_code == 422
    assert stored(api) == []


def test_the_same_batch_in_two_namespaces_is_stored_in_each(api: Service) -> None:
    # Given the same body from two tenants (their flags differ, but the key must not collide anyway)
    item = {"flag": "summarizer", "unit_id": "user-1", "metrics": {"error": 0}, "recorded_at": 1.7e9}
    a = api.client.post("/v1/outcomes", json={"outcomes": [item]}, headers=api.auth("write")).json()
    b = api.client.post("/v1/outcomes", json={"outcomes": [item]}, headers=api.auth("other-admin")).json()
    assert (a["stored"], b["stored"]) == (1, 1)
