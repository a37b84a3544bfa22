"""The golden assignment cases through the OpenFeature SDK and `RolloutProvider`, in-process and remote."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api as openfeature
from openfeature.evaluation_context import EvaluationContext

from rollout.adapters.openfeature import RolloutProvider
from tests.adapters.api.conftest import Service, build_service
from tests.spec import CASES, expected_fields


@pytest.fixture
def api(db_url: str) -> Iterator[Service]:
    yield from build_service(db_url, rate_limit=0)


def of_observed(details: Any) -> dict[str, Any]:
    meta = details.flag_metadata or {}
    return {
        "variant": details.variant if details.variant is not None else details.value,
        "stratum": meta.get("stratum"),
        "in_shadow": bool(meta.get("inShadow", False)),
        "reason": str(getattr(details.reason, "value", details.reason)),
        "error_code": getattr(details.error_code, "value", details.error_code),
    }


def run_cases(provider: RolloutProvider) -> list[Any]:
    openfeature.set_provider_and_wait(provider)
    client = openfeature.get_client()
    failures = []
    try:
        for case in CASES:
            unit = case["unit_id"]
            ctx = EvaluationContext(unit if unit is None else str(unit), dict(case["attributes"] or {}))
            details = client.get_string_details(case["flag"], case.get("default"), ctx)  # type: ignore[arg-type]
            got = of_observed(details)
            if got != expected_fields(case):
                failures.append((case["name"], got, expected_fields(case)))
    finally:
        openfeature.shutdown()
    return failures


@pytest.mark.parametrize("mode", ["in_process", "remote"])
def test_every_case_through_the_openfeature_sdk(api: Service, mode: str) -> None:
    # Given the spec's flags, and the provider reading them locally or over the service
    provider = (RolloutProvider.in_process(api.url, listen=False) if mode == "in_process"
                else RolloutProvider.remote("http://testserver", api.tokens["read"], http_client=api.client))
    # When every case is asked through OpenFeature's client, Then every answer matches the spec
    assert run_cases(provider) == []
