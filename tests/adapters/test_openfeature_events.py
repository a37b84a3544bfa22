"""`RolloutProvider` through the real openfeature-sdk: status and events, tracking, datetimes, never raising.

Events are heard with the SDK's own event API (`api.add_handler`), and the
faults are real: PostgreSQL behind a TCP proxy that refuses connections
(tests/harness/tcp_proxy.py), a revoked token. Only the resolver fuzz uses
httpx's MockTransport, to send what no real server would.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openfeature import api as openfeature
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import ProviderStatus
from openfeature.track import TrackingEventDetails
from sqlalchemy import select

from rollout.adapters.openfeature import RolloutProvider
from rollout.store import flags as store
from rollout.store.db import make_engine, transaction
from rollout.store.models import Outcome
from rollout.store.tokens import revoke_token
from tests.adapters.api.conftest import Service, build_service
from tests.harness.tcp_proxy import TcpProxy

FAST = 0.05  # seconds between the provider's (and the client's) looks at the flags


@pytest.fixture
def api(db_url: str) -> Iterator[Service]:
    """A service (in-process, over ASGI) on a fresh database with the spec's flags and tokens of every scope."""
    yield from build_service(db_url, rate_limit=0)


class Heard:
    """Every provider event the SDK delivers, in order, with a wait for the next one wanted."""

    def __init__(self) -> None:
        self.events: list[tuple[ProviderEvent, EventDetails]] = []
        self._cond = threading.Condition()
        self._handlers = {e: self._handler(e) for e in ProviderEvent}
        self.listen()

    def listen(self) -> None:
        """(Again:) `api.shutdown()` drops every handler, as the SDK resets its whole state."""
        for event, handler in self._handlers.items():
            openfeature.add_handler(event, handler)

    def _handler(self, event: ProviderEvent) -> Callable[[EventDetails], None]:
        def handle(details: EventDetails) -> None:
            with self._cond:
                self.events.append((event, details))
                self._cond.notify_all()
        return handle

    def wait(self, event: ProviderEvent, since: int = 0, timeout: float = 15.0,
             match: Callable[[EventDetails], bool] = lambda d: True) -> EventDetails:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e, d in self.events[since:]:
                    if e is event and match(d):
                        return d
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {event} after #{since}; heard {[e.name for e, _ in self.events]}")
                self._cond.wait(left)

    def close(self) -> None:
        for event, handler in self._handlers.items():
            try:
                openfeature.remove_handler(event, handler)
            except ValueError:  # already dropped by a shutdown
                pass


@pytest.fixture
def heard() -> Iterator[Heard]:
    h = Heard()
    yield h
    h.close()
    openfeature.shutdown()


def _ramp(url: str, key: str, bp: int) -> None:
    engine = make_engine(url)
    with transaction(engine) as s:
        store.set_allocations(s, key, {"default": bp}, actor="test")
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["in_process", "remote"])
def test_events_follow_the_flags_and_the_database(pg_proxy: tuple[TcpProxy, str], heard: Heard, mode: str) -> None:
    proxy, url = pg_proxy
    # Given flags in PostgreSQL (reached through a proxy that can refuse) and a provider watching them
    service_gen = build_service(url, rate_limit=0, token_ttl=3600.0)  # seeds; a trusted token outlives the outage
    api: Service = next(service_gen)
    try:
        provider = (RolloutProvider.in_process(url, listen=False, refresh_interval=FAST, watch_interval=FAST)
                    if mode == "in_process" else
                    RolloutProvider.remote("http://testserver", api.tokens["read"], http_client=api.client,
                                           watch_interval=FAST))
        openfeature.set_provider_and_wait(provider)
        client = openfeature.get_client()
        # Then it is READY
        heard.wait(ProviderEvent.PROVIDER_READY)
        assert client.get_provider_status() is ProviderStatus.READY

        # When one flag changes, Then CONFIGURATION_CHANGED names exactly that flag
        mark = len(heard.events)
        _ramp(url, "inactive", 0)  # not a ramp of a ramping flag: any change bumps the version
        changed = heard.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, mark)
        assert changed.flags_changed == ["inactive"]

        # When the database refuses every connection, Then STALE, and evaluation still answers
        mark = len(heard.events)
        proxy.set_mode("refuse")
        heard.wait(ProviderEvent.PROVIDER_STALE, mark)
        assert client.get_provider_status() is ProviderStatus.STALE
        details = client.get_string_details("promoted", "x", EvaluationContext("user-1"))
        assert (details.value, details.reason) == ("new-model", "STALE")

        # When it is back, Then READY again
        mark = len(heard.events)
        proxy.set_mode("pass")
        heard.wait(ProviderEvent.PROVIDER_READY, mark)
        assert client.get_provider_status() is ProviderStatus.READY

        # When the app shuts OpenFeature down and sets the same provider again, Then it serves again
        openfeature.shutdown()
        heard.listen()
        mark = len(heard.events)
        openfeature.set_provider_and_wait(provider)
        heard.wait(ProviderEvent.PROVIDER_READY, mark)
        assert openfeature.get_client().get_string_value("promoted", "x", EvaluationContext("u")) == "new-model"
    finally:
        openfeature.shutdown()
        next(service_gen, None)


@pytest.mark.postgres
def test_a_database_never_reached_is_error_then_ready_when_it_answers(pg_proxy: tuple[TcpProxy, str],
                                                                      heard: Heard) -> None:
    proxy, url = pg_proxy
    engine = make_engine(url)
    with transaction(engine) as s:
        store.create_flag(s, "f", variants=["a", "b"], actor="test")
    engine.dispose()
    # Given a database that refuses connections from the start
    proxy.set_mode("refuse")
    provider = RolloutProvider.in_process(url, listen=False, refresh_interval=FAST, watch_interval=FAST)
    # When the provider is set, Then it is in ERROR (nothing to serve), and evaluation answers the default
    with pytest.raises(ProviderNotReadyError):
        openfeature.set_provider_and_wait(provider)  # initialisation failed, as the spec says it must tell
    heard.wait(ProviderEvent.PROVIDER_ERROR)
    client = openfeature.get_client()
    assert client.get_provider_status() is ProviderStatus.ERROR
    assert client.get_string_value("f", "default", EvaluationContext("u")) == "default"
    # When the database answers, Then READY, and the flag is served
    mark = len(heard.events)
    proxy.set_mode("pass")
    heard.wait(ProviderEvent.PROVIDER_READY, mark)
    assert client.get_string_value("f", "default", EvaluationContext("u")) == "a"


def test_a_revoked_token_puts_a_remote_provider_in_error(api: Service, heard: Heard) -> None:
    # Given a remote provider that is READY
    provider = RolloutProvider.remote("http://testserver", api.tokens["read"], http_client=api.client,
                                      watch_interval=FAST)
    openfeature.set_provider_and_wait(provider)
    heard.wait(ProviderEvent.PROVIDER_READY)
    # When its token is revoked, Then it reports ERROR (it cannot read flags any more)
    mark = len(heard.events)
    with transaction(api.engine) as s:
        revoke_token(s, "read-token", namespace="default", actor="test")
    details = heard.wait(ProviderEvent.PROVIDER_ERROR, mark)
    assert "401" in (details.message or "")


# --- tracking ----------------------------------------------------------------------------

def _outcomes(api: Service) -> list[tuple[Any, ...]]:
    with transaction(api.engine) as s:
        return sorted(tuple(r) for r in s.execute(select(Outcome.flag_id, Outcome.variant, Outcome.metric,
                                                         Outcome.value)))


def _flag_keys(api: Service) -> dict[int, str]:
    from rollout.store.outcomes import flag_ids

    with transaction(api.engine) as s:
        return {v: k for k, v in flag_ids(s).items()}


TRACKING = [
    # (name, provider options, flags evaluated first, attributes, expected (flag, metric) pairs)
    ("the flags evaluated for the unit", {}, ["summarizer", "promoted"], {"latency_ms": 5},
     {("promoted", "latency_ms"), ("promoted", "thumbs_up"), ("summarizer", "latency_ms"),
      ("summarizer", "thumbs_up")}),
    ("an explicit flag attribute wins", {}, ["summarizer", "promoted"], {"flag": "promoted", "latency_ms": 5},
     {("promoted", "latency_ms"), ("promoted", "thumbs_up")}),
    ("a list of flags", {}, [], {"flags": ["summarizer", "edges"], "cost_usd": 0.5},
     {("summarizer", "cost_usd"), ("summarizer", "thumbs_up"), ("edges", "cost_usd"), ("edges", "thumbs_up")}),
    ("the provider's configured flags", {"track_flags": ["edges"]}, ["summarizer"], {"latency_ms": 5},
     {("edges", "latency_ms"), ("edges", "thumbs_up")}),
]


@pytest.mark.parametrize("mode", ["in_process", "remote"])
@pytest.mark.parametrize(("name", "options", "evaluated", "attributes", "expected"), TRACKING,
                         ids=[row[0] for row in TRACKING])
def test_track_stores_outcomes_for_the_flags_the_convention_names(api: Service, mode: str, name: str,
                                                                  options: dict[str, Any], evaluated: list[str],
                                                                  attributes: dict[str, Any],
                                                                  expected: set[tuple[str, str]]) -> None:
    # Given a provider, and a unit that was served some flags
    provider = (RolloutProvider.in_process(api.url, listen=False, **options) if mode == "in_process" else
                RolloutProvider.remote("http://testserver", api.tokens["write"], http_client=api.client, **options))
    openfeature.set_provider_and_wait(provider)
    client = openfeature.get_client()
    ctx = EvaluationContext("user-1", {"email_domain": "example.com"})
    served = {key: client.get_string_details(key, "x", ctx).variant for key in evaluated}
    # When the app tracks an event with a value and attributes
    client.track("thumbs_up", ctx, TrackingEventDetails(value=1.0, attributes=attributes))
    openfeature.shutdown()  # flushes the in-process client's buffer
    # Then one outcome per named flag holds the numeric attributes and the value (named after the event)
    keys = _flag_keys(api)
    rows = _outcomes(api)
    assert {(keys[f], metric) for f, _, metric, _ in rows} == expected
    for flag_id, variant, _, _ in rows:
        if keys[flag_id] in served:
            assert variant == served[keys[flag_id]]  # the variant the unit was served


def test_a_datetime_in_a_remote_context_is_sent_as_rfc3339_text(api: Service) -> None:
    # Given a stratum rule on a text attribute and a context holding a datetime too
    provider = RolloutProvider.remote("http://testserver", api.tokens["read"], http_client=api.client)
    ctx = EvaluationContext("user-1", {"signed_up": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
                                       "email_domain": "example.com"})
    # When it is evaluated remotely, Then it is evaluated (no GENERAL error), as in-process
    details = provider.resolve_string_details("summarizer", "x", ctx)
    assert (details.value, details.reason, details.error_code) == ("new-model", "SPLIT", None)


# --- never raising, whatever the server sends --------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=12)
ofrep_like = st.fixed_dictionaries({}, optional={
    "key": json_values, "value": json_values, "variant": json_values, "errorDetails": json_values,
    "reason": st.sampled_from(["STATIC", "SPLIT", "ERROR", "NOPE", ""]) | json_values,
    "errorCode": st.sampled_from([c.value for c in ErrorCode] + ["NOT_A_CODE"]) | json_values,
    "metadata": st.dictionaries(st.text(max_size=8), json_values, max_size=4) | json_values,
})
bodies = st.one_of(ofrep_like.map(lambda d: json.dumps(d).encode()), json_values.map(lambda v: json.dumps(v).encode()),
                   st.binary(max_size=40))


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(status=st.sampled_from([200, 200, 200, 304, 400, 401, 404, 429, 500, 503]), body=bodies,
       content_type=st.sampled_from(["application/json", "text/plain", ""]),
       kind=st.sampled_from(["boolean", "string", "integer", "float", "object"]))
def test_resolvers_never_raise_whatever_the_server_sends(status: int, body: bytes, content_type: str,
                                                         kind: str) -> None:
    # Given a "server" answering anything at all
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": content_type} if content_type else {})

    http = httpx.Client(base_url="http://fuzz", transport=httpx.MockTransport(answer))
    provider = RolloutProvider.remote("http://fuzz", "rlt_x", http_client=http)
    default = {"boolean": True, "string": "d", "integer": 7, "float": 0.5, "object": {"d": 1}}[kind]
    # When a flag of each type is resolved
    details = getattr(provider, f"resolve_{kind}_details")("f", default, EvaluationContext("u", {"t": 1}))
    # Then a resolution comes back, never an exception; an error answers the caller's default
    assert isinstance(details, FlagResolutionDetails)
    if details.error_code is not None:
        assert details.value == default and details.reason == Reason.ERROR
    assert all(isinstance(v, (bool, int, float, str)) for v in details.flag_metadata.values())
    # And tracking never raises either
    provider.track("f", EvaluationContext("u"), TrackingEventDetails(value=1.0))
