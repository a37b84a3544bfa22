"""The HTTP service through a real fault: `rollout serve` (uvicorn) on PostgreSQL behind a TCP proxy.

During an outage (refused, or black-holed like a partition) the service keeps
answering evaluations from its snapshot with reason STALE, known tokens stay
valid for their grace period, `/healthz` says "stale" at once and truthfully;
when the database is back it is fresh again although no flag changed, and a
revocation made meanwhile applies. Figures are printed (run with -s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from bench.server import RunningServer, start_server, stop_server
from rollout.adapters.api import ApiSettings, create_app
from rollout.store import flags as store
from rollout.store.db import make_engine, transaction
from rollout.store.tokens import create_token, revoke_token
from tests.harness.tcp_proxy import TcpProxy
from tests.harness.waiting import seconds_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# The rate limit is off: the outage loop asks as fast as it can, and on a fast machine that is over
# the default 1,000/s per token (CI saw 429s); limiting is tested in test_access.py.
SERVER_ENV = {"ROLLOUT_API_REFRESH_INTERVAL": "0.2", "ROLLOUT_API_REFRESH_TIMEOUT": "1.0",
              "ROLLOUT_API_TOKEN_TTL": "0.5", "ROLLOUT_API_TOKEN_TIMEOUT": "0.5", "ROLLOUT_API_RATE_LIMIT": "0"}
BOUND_TO_STALE = 0.2 + 1.0 + 1.0  # interval + timeout + slack for a shared machine


@pytest.fixture
def through_proxy(pg_proxy: tuple[TcpProxy, str]) -> Iterator[tuple[TcpProxy, str, Engine, dict[str, str]]]:
    proxy, url = pg_proxy
    direct = make_engine(url.replace(f":{proxy.port}/", f":{proxy.upstream[1]}/"))
    with transaction(direct) as s:
        store.create_flag(s, "summarizer", variants=["old", "new"], actor="test")
        store.promote(s, "summarizer", actor="test")
        tokens = {name: create_token(s, name, namespace="default", scope=scope, actor="test").token
                  for name, scope in (("reader", "read"), ("second", "read"), ("unseen", "read"))}
    yield proxy, url, direct, tokens
    proxy.set_mode("pass")
    direct.dispose()


@pytest.fixture
def server(through_proxy: tuple[TcpProxy, str, Engine, dict[str, str]]) -> Iterator[RunningServer]:
    running = start_server(through_proxy[1], env=SERVER_ENV)
    yield running
    through_proxy[0].set_mode("pass")
    stop_server(running)


def health(http: httpx.Client) -> str:
    started = time.monotonic()
    answer = http.get("/healthz").json()["status"]
    assert time.monotonic() - started < 1.0, "/healthz must never wait on the database"
    return answer  # type: ignore[no-any-return]


def evaluate(http: httpx.Client, token: str) -> httpx.Response:
    return http.post("/v1/evaluate", json={"flag": "summarizer", "unit_id": "u-1"},
                     headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
def test_the_service_serves_stale_through_an_outage_and_is_fresh_again_after_it(
        through_proxy: tuple[TcpProxy, str, Engine, dict[str, str]], server: RunningServer, fault: str) -> None:
    proxy, _, direct, tokens = through_proxy
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        # Given a fresh service that has seen two tokens
        assert health(http) == "ok"
        for name in ("reader", "second"):
            assert evaluate(http, tokens[name]).json()["reason"] == "STATIC"

        # When the database goes away
        proxy.set_mode(fault)  # type: ignore[arg-type]
        to_stale = seconds_until(lambda: health(http) == "stale", within=10)

        # Then /healthz says so within interval + timeout, and for longer than the token cache lasts
        # every evaluation is answered from the snapshot with reason STALE (no 503, no hang)
        assert to_stale <= BOUND_TO_STALE, to_stale
        answers, slowest, until = [], 0.0, time.monotonic() + 2.5
        while time.monotonic() < until:
            started = time.monotonic()
            answers.append(evaluate(http, tokens["reader"]))
            slowest = max(slowest, time.monotonic() - started)
        assert {r.status_code for r in answers} == {200}
        assert {r.json()["reason"] for r in answers} == {"STALE"}
        assert {r.json()["variant"] for r in answers} == {"new"}
        # And a token never seen before cannot be checked: 503 with a reason, not 401, not a hang
        unseen = evaluate(http, tokens["unseen"])
        assert unseen.status_code == 503 and "error" in unseen.json()

        # Given a revocation made while the service cannot read it
        with transaction(direct) as s:
            revoke_token(s, "second", namespace="default", actor="test")
        assert evaluate(http, tokens["second"]).status_code == 200  # still in its grace period

        # When the database is back, with no flag changed
        proxy.set_mode("pass")
        to_fresh = seconds_until(lambda: health(http) == "ok", within=15)

        # Then answers are fresh again, and the revocation applies as soon as it can be read
        assert evaluate(http, tokens["reader"]).json()["reason"] == "STATIC"
        to_revoked = seconds_until(lambda: evaluate(http, tokens["second"]).status_code == 401, within=10)
        print(f"\nservice {fault}: /healthz stale after {to_stale:.2f} s; {len(answers)} evaluations during the "
              f"outage, all 200 STALE, slowest {slowest * 1000:.0f} ms; ok {to_fresh:.2f} s after the database "
              f"was back; revocation applied {to_revoked:.2f} s after that")


def test_healthz_says_down_when_there_is_no_snapshot_to_serve(pg_proxy: tuple[TcpProxy, str]) -> None:
    # Given a service whose database refuses from the start
    proxy, url = pg_proxy
    proxy.set_mode("refuse")
    app = create_app(ApiSettings(database_url=url, refresh_interval=0.1, refresh_timeout=0.5, listen=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        # When a probe asks
        response = client.get("/healthz")
        # Then it is told the truth: down, 503
        assert response.status_code == 503 and response.json()["status"] == "down"
        # And once the database answers, the snapshot loads and the service is ok
        proxy.set_mode("pass")
        seconds_until(lambda: client.get("/healthz").json()["status"] == "ok", within=10)
