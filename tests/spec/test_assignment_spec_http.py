"""The golden assignment cases through the HTTP service: POST /v1/evaluate, one by one and in one batch."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.adapters.api.conftest import Service, build_service
from tests.spec import CASES, expected_fields, observed


@pytest.fixture
def api(db_url: str) -> Iterator[Service]:
    yield from build_service(db_url, rate_limit=0)


def item(case: dict[str, Any]) -> dict[str, Any]:
    out = {"flag": case["flag"], "unit_id": case["unit_id"], "attributes": case["attributes"]}
    if "default" in case:
        out["default"] = case["default"]
    return out


def test_every_case_one_request_each(api: Service) -> None:
    # Given the spec's flags in the database behind the service, When each case is asked for on its own
    failures = []
    for case in CASES:
        response = api.client.post("/v1/evaluate", json=item(case), headers=api.auth("read"))
        assert response.status_code == 200, (case["name"], response.text)
        got = observed(SimpleNamespace(**response.json()))
        if got != expected_fields(case):
            failures.append((case["name"], got, expected_fields(case)))
    # Then every answer matches the spec
    assert failures == []


def test_every_case_in_one_batch(api: Service) -> None:
    # Given the same flags, When every case goes in one batch request
    response = api.client.post("/v1/evaluate", json={"items": [item(c) for c in CASES]}, headers=api.auth("read"))
    # Then the answers come back in order and each matches the spec
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == len(CASES)
    failures = [(c["name"], observed(SimpleNamespace(**r)), expected_fields(c))
                for c, r in zip(CASES, results, strict=True)
                if observed(SimpleNamespace(**r)) != expected_fields(c)]
    assert failures == []
