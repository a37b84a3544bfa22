"""GET /v1/flags: the snapshot, its ETag, 304s and the long-poll that wakes on a change."""

from __future__ import annotations

import threading
import time

import pytest

from rollout.adapters.api.routes.flags import etag_matches
from rollout.store import flags as store
from rollout.store.db import transaction
from tests.adapters.api.conftest import Service


@pytest.mark.parametrize("header,etag,matches", [
    (None, '"abc"', False),
    ('"abc"', '"abc"', True),
    ('W/"abc"', '"abc"', True),
    ('"x", "abc"', '"abc"', True),
    ("*", '"abc"', True),
    ('"abd"', '"abc"', False),
    ("", '"abc"', False),
])
def test_if_none_match_follows_rfc_9110(header: str | None, etag: str, matches: bool) -> None:
    assert etag_matches(header, etag) is matches


def test_flags_carry_what_a_local_evaluator_needs_and_an_etag(shared_api: Service) -> None:
    # Given the spec's flags, When a read token asks for them
    response = shared_api.client.get("/v1/flags", headers=shared_api.auth("read"))
    # Then every flag of the namespace comes with salt, strata and allocations, under the response's ETag
    body = response.json()
    assert response.status_code == 200 and response.headers["etag"] == body["etag"]
    summarizer = next(f for f in body["flags"] if f["key"] == "summarizer")
    assert {"salt", "strata", "allocations", "phase", "version", "baseline", "candidate"} <= set(summarizer)
    assert summarizer["salt"] == "s-7f3a"


def test_an_unchanged_snapshot_answers_304(shared_api: Service) -> None:
    # Given the current ETag, When it is sent back in If-None-Match (with no wait)
    etag = shared_api.client.get("/v1/flags", headers=shared_api.auth("read")).headers["etag"]
    started = time.monotonic()
    response = shared_api.client.get("/v1/flags", headers={**shared_api.auth("read"), "If-None-Match": etag})
    # Then the answer is an immediate 304 with no body and the same ETag
    assert response.status_code == 304 and response.content == b""
    assert response.headers["etag"] == etag
    assert time.monotonic() - started < 0.5


def test_a_long_poll_without_a_change_ends_in_304_after_the_wait(shared_api: Service) -> None:
    # Given the current ETag, When a client long-polls for 0.3 s and nothing changes
    etag = shared_api.client.get("/v1/flags", headers=shared_api.auth("read")).headers["etag"]
    started = time.monotonic()
    response = shared_api.client.get("/v1/flags?wait=0.3", headers={**shared_api.auth("read"), "If-None-Match": etag})
    elapsed = time.monotonic() - started
    # Then it is held for the wait and answered 304
    assert response.status_code == 304
    assert 0.25 <= elapsed < 2


def test_a_long_poll_wakes_within_a_second_of_a_rollback(api: Service) -> None:
    # Given a client long-polling with the current ETag for up to 10 s
    etag = api.client.get("/v1/flags", headers=api.auth("read")).headers["etag"]
    result: dict[str, object] = {}

    def poll() -> None:
        response = api.client.get("/v1/flags?wait=10", headers={**api.auth("read"), "If-None-Match": etag})
        result["at"] = time.monotonic()
        result["response"] = response

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.3)
    # When the flag is rolled back in the database by someone else (the CLI, the flow)
    with transaction(api.engine) as s:
        store.rollback(s, "summarizer", actor="test", reason="regression")
    committed = time.monotonic()
    poller.join(timeout=15)
    # Then the waiting request returns the new state with a new ETag well within a second
    response = result["response"]
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert response.headers["etag"] != etag  # type: ignore[attr-defined]
    summarizer = next(f for f in response.json()["flags"] if f["key"] == "summarizer")  # type: ignore[attr-defined]
    assert summarizer["phase"] == "rolled_back"
    assert result["at"] - committed < 1.0  # type: ignore[operator]


def test_a_change_in_another_namespace_does_not_wake_or_change_this_one(api: Service) -> None:
    # Given the ETag of `default`
    etag = api.client.get("/v1/flags", headers=api.auth("read")).headers["etag"]
    # When a flag of `other` changes
    with transaction(api.engine) as s:
        store.rollback(s, "secret-flag", actor="test", reason="x", namespace="other")
    time.sleep(0.2)
    # Then `default` is still unchanged: a long-poll on it runs to its end and answers 304
    response = api.client.get("/v1/flags?wait=0.3", headers={**api.auth("read"), "If-None-Match": etag})
    assert response.status_code == 304


@pytest.mark.parametrize("wait", ["-1", "61", "abc", "nan", "1e309"])
def test_an_impossible_wait_is_refused(shared_api: Service, wait: str) -> None:
    response = shared_api.client.get(f"/v1/flags?wait={wait}", headers=shared_api.auth("read"))
    assert response.status_code == 422 and "error" in response.json()
