"""`RolloutProvider` beyond the golden cases: typed values, tracking to outcomes, faults."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from openfeature import api as openfeature
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.track import TrackingEventDetails
from sqlalchemy import select

from rollout.errors import RolloutError
from rollout.adapters.openfeature import RolloutProvider
from rollout.store import flags as store
from rollout.store.db import transaction
from rollout.store.models import Outcome
from tests.adapters.api.conftest import Service


@pytest.fixture
def with_payloads(api: Service) -> Service:
    with transaction(api.engine) as s:
        store.create_flag(s, "limits", variants={"small": {"max_tokens": 256}, "large": {"max_tokens": 4096}},
                          actor="test")
        store.promote(s, "limits", actor="test")
        store.create_flag(s, "temperature", variants={"cold": 0.1, "warm": 0.9}, actor="test")
        store.create_flag(s, "dark-mode", variants={"off": False, "on": True}, actor="test")
        store.promote(s, "dark-mode", actor="test")
    api.client.app.state.rollout.snapshot.refresh()  # type: ignore[attr-defined]
    return api


def provider_for(api: Service, mode: str) -> RolloutProvider:
    # Only the one asked for: an in-process provider owns a client whose refresher must be shut down.
    if mode == "in_process":
        return RolloutProvider.in_process(api.url, listen=False)
    return RolloutProvider.remote("http://testserver", api.tokens["write"], http_client=api.client)


@pytest.fixture(params=["in_process", "remote"])
def of_client(request: pytest.FixtureRequest, with_payloads: Service) -> Iterator[object]:
    provider = provider_for(with_payloads, request.param)
    openfeature.set_provider_and_wait(provider)
    yield openfeature.get_client()
    openfeature.shutdown()


def test_values_come_typed_from_the_variant_payloads(of_client) -> None:  # type: ignore[no-untyped-def]
    ctx = EvaluationContext("user-1")
    assert of_client.get_object_value("limits", {}, ctx) == {"max_tokens": 4096}
    assert of_client.get_float_value("temperature", 0.5, ctx) == 0.1
    assert of_client.get_boolean_value("dark-mode", False, ctx) is True
    assert of_client.get_string_value("summarizer", "x", ctx) == "current"


def test_a_payload_of_another_type_is_a_type_mismatch_and_the_default(of_client) -> None:  # type: ignore[no-untyped-def]
    details = of_client.get_integer_details("limits", 7, EvaluationContext("user-1"))
    assert (details.value, details.error_code, details.reason) == (7, ErrorCode.TYPE_MISMATCH, Reason.ERROR)


def test_details_carry_variant_reason_and_metadata(of_client) -> None:  # type: ignore[no-untyped-def]
    details = of_client.get_string_details("summarizer", "x",
                                           EvaluationContext("user-1", {"email_domain": "example.com"}))
    assert (details.value, details.variant, details.reason) == ("new-model", "new-model", "SPLIT")
    assert details.flag_metadata["stratum"] == "internal" and details.flag_metadata["isCandidate"] is True


@pytest.mark.parametrize("mode", ["in_process", "remote"])
def test_tracking_records_outcomes_in_the_units_arm(with_payloads: Service, mode: str) -> None:
    # Given a provider, When the app tracks an event for a unit of the internal stratum
    provider = provider_for(with_payloads, mode)
    openfeature.set_provider_and_wait(provider)
    client = openfeature.get_client()
    ctx = EvaluationContext("user-1", {"email_domain": "example.com"})
    client.track("summarizer", ctx, TrackingEventDetails(value=1.0, attributes={"latency_ms": 640, "note": "x"}))
    client.track("no-such-flag", ctx, TrackingEventDetails(attributes={"latency_ms": 1}))  # refused, never raises
    openfeature.shutdown()  # flushes the in-process client's buffer
    # Then the numeric attributes and the value are stored as metrics of the candidate arm
    with transaction(with_payloads.engine) as s:
        rows = sorted(tuple(r) for r in s.execute(select(Outcome.variant, Outcome.stratum, Outcome.metric,
                                                         Outcome.value)))
    assert rows == [("new-model", "internal", "latency_ms", 640.0), ("new-model", "internal", "value", 1.0)]


def test_an_unreachable_service_gives_the_default_with_an_error_not_an_exception() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    provider = RolloutProvider.remote("http://127.0.0.1:9", "rlt_x", http_client=httpx.Client(
        base_url="http://127.0.0.1:9", transport=httpx.MockTransport(refuse)))
    details = provider.resolve_string_details("summarizer", "fallback", EvaluationContext("u"))
    assert (details.value, details.reason, details.error_code) == ("fallback", Reason.ERROR, ErrorCode.GENERAL)
    provider.track("summarizer", EvaluationContext("u"), TrackingEventDetails(value=1))  # does not raise


def test_a_bad_token_gives_the_default_with_an_error(with_payloads: Service) -> None:
    provider = RolloutProvider.remote("http://testserver", "rlt_nope", http_client=with_payloads.client)
    details = provider.resolve_string_details("summarizer", "fallback", EvaluationContext("u"))
    assert (details.value, details.error_code) == ("fallback", ErrorCode.GENERAL)
    assert "401" in (details.error_message or "")


def test_the_provider_needs_exactly_one_way_to_reach_flags() -> None:
    with pytest.raises(RolloutError):
        RolloutProvider()
