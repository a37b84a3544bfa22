"""The golden assignment cases through OFREP, on the wire, and what any OpenFeature app sees of them.

OFREP carries the unit as `targetingKey`, which is text: an integer unit id
goes as its decimal text (as every OpenFeature SDK sends it), and a null one
is left out. Our reasons become OFREP's (an inactive flag, everyone on the
baseline, is STATIC); a case whose answer is an error is an OFREP failure:
400 TARGETING_KEY_MISSING (its metadata still says which variant and stratum
the unit would have had), 404 FLAG_NOT_FOUND. `ofrep_expected` is what an
app gets through a stock OFREP provider; the stock-client tests
(tests/adapters/api/test_ofrep_clients.py) compare against it too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.adapters.api.conftest import Service, build_service
from tests.spec import CASES, expected_fields

OFREP_REASON = {"SPLIT": "SPLIT", "STATIC": "STATIC", "DEFAULT": "STATIC", "DISABLED": "DISABLED"}
CODE_DEFAULT = "<code default>"
"""The default an app passes when the case names none; an error answers it back."""
STATUS = {"TARGETING_KEY_MISSING": 400, "FLAG_NOT_FOUND": 404}


@pytest.fixture
def api(db_url: str) -> Iterator[Service]:
    yield from build_service(db_url, rate_limit=0)


def context(case: dict[str, Any]) -> dict[str, Any]:
    ctx = dict(case["attributes"] or {})
    if case["unit_id"] is not None:
        ctx["targetingKey"] = str(case["unit_id"])
    return ctx


def ofrep_expected(case: dict[str, Any]) -> dict[str, Any]:
    """What an app asking `get_string_details(flag, default)` through any OFREP provider must get."""
    e = case["expected"]
    if e["error_code"] is not None:
        return {"value": case.get("default") or CODE_DEFAULT, "variant": None, "reason": "ERROR",
                "errorCode": e["error_code"]}
    return {"value": e["variant"], "variant": e["variant"], "reason": OFREP_REASON[e["reason"]], "errorCode": None,
            "stratum": e["stratum"], "inShadow": e["in_shadow"]}


def wire_observed(status: int, body: dict[str, Any], case: dict[str, Any]) -> dict[str, Any]:
    """An OFREP answer as the fields `ofrep_expected` names, read as a provider reads it."""
    if status != 200:
        return {"value": case.get("default") or CODE_DEFAULT, "variant": None, "reason": "ERROR",
                "errorCode": body["errorCode"]}
    meta = body["metadata"]
    return {"value": body["value"], "variant": body["variant"], "reason": body["reason"], "errorCode": None,
            "stratum": meta.get("stratum"), "inShadow": meta["inShadow"]}


def test_every_case_through_the_single_flag_endpoint(api: Service) -> None:
    # Given the spec's flags behind the service, When each case is evaluated over OFREP
    failures = []
    for case in CASES:
        response = api.client.post(f"/ofrep/v1/evaluate/flags/{case['flag']}", json={"context": context(case)},
                                   headers=api.auth("read"))
        body = response.json()
        code = case["expected"]["error_code"]
        # Then the status is OFREP's for the case, and the answer is what the spec says
        if response.status_code != STATUS.get(code, 200):
            failures.append((case["name"], response.status_code, body))
            continue
        got = wire_observed(response.status_code, body, case)
        if got != ofrep_expected(case):
            failures.append((case["name"], got, ofrep_expected(case)))
        if code == "TARGETING_KEY_MISSING":
            # the failure still says what rollout counts the unit as, for logs and debugging
            meta = body["metadata"]
            seen = {"variant": meta["variant"], "stratum": meta["stratum"], "in_shadow": meta["inShadow"]}
            want = {k: expected_fields(case)[k] for k in seen}
            if seen != want:
                failures.append((case["name"], seen, want))
    assert failures == []


def test_every_case_through_the_bulk_endpoint(api: Service) -> None:
    # Given the same flags, When each case's context is answered by the bulk form
    failures = []
    for case in CASES:
        response = api.client.post("/ofrep/v1/evaluate/flags", json={"context": context(case)},
                                   headers=api.auth("read"))
        assert response.status_code == 200
        by_key = {f["key"]: f for f in response.json()["flags"]}
        entry = by_key.get(case["flag"])
        # Then a known flag is a success or (no targeting key) a failure item; an unknown one is absent
        if entry is None:
            got = wire_observed(404, {"errorCode": "FLAG_NOT_FOUND"}, case)
        else:
            got = wire_observed(200 if "errorCode" not in entry else 400, entry, case)
        if got != ofrep_expected(case):
            failures.append((case["name"], got, ofrep_expected(case)))
    assert failures == []


def test_no_reason_outside_ofreps_list_ever_goes_out(api: Service) -> None:
    # Given every case, When all are asked one by one and in bulk
    reasons = set()
    for case in CASES:
        for path in (f"/ofrep/v1/evaluate/flags/{case['flag']}", "/ofrep/v1/evaluate/flags"):
            body = api.client.post(path, json={"context": context(case)}, headers=api.auth("read")).json()
            for item in body.get("flags", [body]):
                if "reason" in item:
                    reasons.add(item["reason"])
    # Then only OFREP's success reasons appear (errors are failures, never a 200 with ERROR)
    assert reasons <= {"STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN"}
    assert {"SPLIT", "STATIC", "DISABLED"} <= reasons
