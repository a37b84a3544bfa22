"""Who may do what: tokens, scopes, namespaces, revocation and the rate limit."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from rollout.store import flags as store
from rollout.store.db import transaction
from rollout.store.models import Outcome
from rollout.store.tokens import revoke_token
from tests.adapters.api.conftest import Service, build_service

EVALUATE = ("POST", "/v1/evaluate", {"flag": "summarizer", "unit_id": "u-1"})
OUTCOMES = ("POST", "/v1/outcomes", {"outcomes": [{"flag": "summarizer", "unit_id": "u-1", "metrics": {"error": 0}}]})
ROLLBACK = ("POST", "/v1/rollouts/summarizer/rollback", {"reason": "test"})
FLAGS = ("GET", "/v1/flags", None)
OFREP = ("POST", "/ofrep/v1/evaluate/flags/summarizer", {"context": {"targetingKey": "u-1"}})
METRICS = ("GET", "/metrics", None)


def call(api: Service, endpoint: tuple, headers: dict[str, str] | None = None, path_suffix: str = ""):  # type: ignore[no-untyped-def]
    method, path, body = endpoint
    return api.client.request(method, path + path_suffix, json=body, headers=headers or {})


@pytest.mark.parametrize("endpoint", [EVALUATE, OUTCOMES, ROLLBACK, FLAGS, OFREP, METRICS],
                         ids=["evaluate", "outcomes", "rollback", "flags", "ofrep", "metrics"])
@pytest.mark.parametrize("credentials", [
    pytest.param(lambda t: {}, id="no token"),
    pytest.param(lambda t: {"Authorization": f"Bearer {t['revoked']}"}, id="revoked token"),
    pytest.param(lambda t: {"Authorization": "Bearer rlt_0000000000000000_" + "A" * 43}, id="unknown token"),
    pytest.param(lambda t: {"Authorization": f"Bearer {t['admin'][:-1]}{'B' if t['admin'][-1] != 'B' else 'C'}"},
                 id="right id, wrong secret"),
    pytest.param(lambda t: {"Authorization": f"Basic {t['admin']}"}, id="wrong scheme"),
    pytest.param(lambda t: {"Authorization": "Bearer ' OR 1=1 --"}, id="sql in the token"),
    pytest.param(lambda t: {"Authorization": "Bearer "}, id="empty bearer"),
    pytest.param(lambda t: {"Authorization": "Bearer " + "A" * 20_000}, id="huge token"),
    pytest.param(lambda t: {"X-API-Key": t["admin"][4:]}, id="api key without its prefix"),
])
def test_a_request_without_a_valid_token_is_refused(shared_api: Service, endpoint: tuple, credentials) -> None:  # type: ignore[no-untyped-def]
    # Given a request with no usable token
    before = state_of(shared_api)
    # When it reaches any authenticated route
    response = call(shared_api, endpoint, credentials(shared_api.tokens))
    # Then it is refused with 401 and a Bearer challenge, and nothing was stored or changed
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert state_of(shared_api) == before


def state_of(api: Service) -> tuple[int, int]:
    """(outcomes stored, summarizer's version): what a refused request must not change."""
    with transaction(api.engine) as s:
        return s.scalar(select(func.count()).select_from(Outcome)), store.get_flag(s, "summarizer").version


@pytest.mark.parametrize("parameter", ["token", "access_token", "api_key"])
def test_a_token_in_the_query_string_does_not_authenticate(api: Service, parameter: str) -> None:
    # Given a valid admin token, put in the URL instead of a header
    # When it is used for a read and for an admin action
    read = api.client.get(f"/v1/flags?{parameter}={api.tokens['admin']}")
    rollback = api.client.post(f"/v1/rollouts/summarizer/rollback?{parameter}={api.tokens['admin']}",
                               json={"reason": "x"})
    # Then both are refused as unauthenticated and the flag is untouched
    assert (read.status_code, rollback.status_code) == (401, 401)
    with transaction(api.engine) as s:
        assert store.get_flag(s, "summarizer").phase.value == "ramping"


@pytest.mark.parametrize("token,endpoint,status", [
    ("read", EVALUATE, 200), ("read", FLAGS, 200), ("read", OFREP, 200),
    ("read", OUTCOMES, 403), ("read", ROLLBACK, 403), ("read", METRICS, 403),
    ("write", OUTCOMES, 200), ("write", ROLLBACK, 403), ("write", METRICS, 403),
    ("admin", OUTCOMES, 200), ("admin", METRICS, 200), ("admin", ROLLBACK, 200),
])
def test_scopes_are_ordered_read_write_admin(shared_api: Service, token: str, endpoint: tuple, status: int) -> None:
    # Given a token of one scope, When it calls a route, Then it gets what its scope covers and no more
    assert call(shared_api, endpoint, shared_api.auth(token)).status_code == status


def test_x_api_key_header_authenticates_like_bearer(shared_api: Service) -> None:
    # Given a read token sent as X-API-Key (what some OFREP providers send), When flags are read, Then it works
    assert shared_api.client.get("/v1/flags", headers={"X-API-Key": shared_api.tokens["read"]}).status_code == 200


def test_a_token_sees_only_its_own_namespace(shared_api: Service) -> None:
    # Given a token of namespace `other`, where `summarizer` is a different, promoted flag
    api = shared_api
    headers = api.auth("other-admin")
    # When it reads the flags, evaluates, and asks for a flag of `default` only
    flags = api.client.get("/v1/flags", headers=headers).json()
    evaluated = api.client.post("/v1/evaluate", json={"flag": "summarizer", "unit_id": "u-1"}, headers=headers).json()
    default_only = api.client.post("/v1/evaluate", json={"flag": "typed", "unit_id": "u-1"}, headers=headers).json()
    ofrep_only = api.client.post("/ofrep/v1/evaluate/flags/typed", json={"context": {"targetingKey": "u"}},
                                 headers=headers)
    # Then it sees only `other`'s flags, its own `summarizer`, and nothing of `default`
    assert flags["namespace"] == "other"
    assert sorted(f["key"] for f in flags["flags"]) == ["secret-flag", "summarizer"]
    assert evaluated["variant"] == "other-b" and evaluated["reason"] == "STATIC"
    assert default_only["error_code"] == "FLAG_NOT_FOUND"
    assert ofrep_only.status_code == 404


def test_a_token_cannot_write_or_roll_back_in_another_namespace(api: Service) -> None:
    # Given an admin token of `other`, When it reports outcomes for and rolls back `typed`, a flag of `default`
    headers = api.auth("other-admin")
    outcomes = api.client.post("/v1/outcomes", headers=headers, json={
        "outcomes": [{"flag": "typed", "unit_id": "u-1", "metrics": {"error": 1}}]}).json()
    rollback = api.client.post("/v1/rollouts/typed/rollback", json={"reason": "attack"}, headers=headers)
    # Then the outcome is refused as an unknown flag, the rollback is a 404, and `default` is untouched
    assert outcomes["accepted"] == 0 and "unknown flag" in outcomes["errors"][0]["error"]
    assert rollback.status_code == 404
    with transaction(api.engine) as s:
        assert store.get_flag(s, "typed").phase.value == "ramping"
        assert s.scalar(select(func.count()).select_from(Outcome)) == 0


def test_a_revoked_token_stops_working_within_the_cache_ttl(api: Service) -> None:
    # Given a read token that works
    assert api.client.get("/v1/flags", headers=api.auth("read")).status_code == 200
    # When it is revoked in the database (by the CLI, say)
    with transaction(api.engine) as s:
        revoke_token(s, "read-token", namespace="default", actor="test")
    # Then the service refuses it once its token cache (0.2 s here) has expired
    time.sleep(0.3)
    assert api.client.get("/v1/flags", headers=api.auth("read")).status_code == 401


@pytest.fixture
def limited(db_url: str) -> Iterator[Service]:
    yield from build_service(db_url, rate_limit=1, rate_burst=5)


def test_over_its_rate_a_token_gets_429_with_retry_after(limited: Service) -> None:
    # Given a limit of 1 request a second with bursts of 5, When one token sends 8 at once
    statuses = [limited.client.get("/v1/flags", headers=limited.auth("read")).status_code for _ in range(8)]
    other = limited.client.get("/v1/flags", headers=limited.auth("write"))
    # Then the first 5 pass and the rest get 429 with a Retry-After, while another token is unaffected
    assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
    limited_response = limited.client.get("/v1/flags", headers=limited.auth("read"))
    assert limited_response.status_code == 429
    assert int(limited_response.headers["retry-after"]) >= 1
    assert other.status_code == 200
