"""The golden assignment cases through OFREP, as any OpenFeature SDK's OFREP provider would ask them.

OFREP carries the unit as `targetingKey` (omitted when the case's unit is
null) and the variant, reason and metadata in its answer; an unknown flag is
a 404 FLAG_NOT_FOUND, after which the OpenFeature SDK answers the caller's
default, which is what the spec expects.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.adapters.api.conftest import Service, build_service
from tests.spec import CASES, expected_fields


@pytest.fixture
def api(db_url: str) -> Iterator[Service]:
    yield from build_service(db_url, rate_limit=0)


def context(case: dict[str, Any]) -> dict[str, Any]:
    ctx = dict(case["attributes"] or {})
    if case["unit_id"] is not None:
        ctx["targetingKey"] = case["unit_id"]
    return ctx


def ofrep_observed(status: int, body: dict[str, Any], default: str | None) -> dict[str, Any]:
    """What an OpenFeature SDK would report, in the spec's fields."""
    if status != 200:
        return {"variant": default, "stratum": None, "in_shadow": False, "reason": "ERROR",
                "error_code": body["errorCode"]}
    meta = body["metadata"]
    return {"variant": body["variant"], "stratum": meta.get("stratum"), "in_shadow": meta["inShadow"],
            "reason": body["reason"], "error_code": meta.get("errorCode")}


def test_every_case_through_the_single_flag_endpoint(api: Service) -> None:
    # Given the spec's flags behind the service, When each case is evaluated over OFREP
    failures = []
    for case in CASES:
        response = api.client.post(f"/ofrep/v1/evaluate/flags/{case['flag']}", json={"context": context(case)},
                                   headers=api.auth("read"))
        assert response.status_code in (200, 404), (case["name"], response.text)
        got = ofrep_observed(response.status_code, response.json(), case.get("default"))
        if got != expected_fields(case):
            failures.append((case["name"], got, expected_fields(case)))
    # Then every answer matches the spec
    assert failures == []


def test_every_case_through_the_bulk_endpoint(api: Service) -> None:
    # Given the same flags, When each known flag's case is answered by the bulk form
    failures = []
    for case in CASES:
        response = api.client.post("/ofrep/v1/evaluate/flags", json={"context": context(case)},
                                   headers=api.auth("read"))
        assert response.status_code == 200
        by_key = {f["key"]: f for f in response.json()["flags"]}
        status = 200 if case["flag"] in by_key else 404
        body = by_key.get(case["flag"], {"errorCode": "FLAG_NOT_FOUND"})
        got = ofrep_observed(status, body, case.get("default"))
        if got != expected_fields(case):
            failures.append((case["name"], got, expected_fields(case)))
    # Then the bulk answers agree with the spec too
    assert failures == []
