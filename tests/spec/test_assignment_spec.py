"""Every evaluator in the project passes the same golden assignment cases."""

from __future__ import annotations

from typing import Any

import pytest

from rollout import RolloutClient
from rollout.core import CompiledFlag, bucket, error_assignment
from rollout.core.assignment import ErrorCode
from rollout.store.db import transaction
from tests.spec import CASE_IDS, CASES, SPEC, expected_fields, flag_state, install_spec_flags, observed
from tests.spec.murmur3 import reference_bucket

COMPILED = {key: CompiledFlag(flag_state(key)) for key in SPEC["flags"]}


def test_the_spec_is_large_enough_and_covers_every_phase() -> None:
    assert len(CASES) >= 50
    assert {f["phase"] for f in SPEC["flags"].values()} == {"ramping", "shadow", "promoted", "inactive", "rolled_back"}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_pure_evaluator(case: dict[str, Any]) -> None:
    # Given the flag compiled by the core, When the case's unit is evaluated
    compiled = COMPILED.get(case["flag"])
    if compiled is None:
        result = error_assignment(case["flag"], ErrorCode.FLAG_NOT_FOUND, case.get("default"))
    else:
        result = compiled.evaluate(case["unit_id"], case["attributes"])
    # Then it answers what the spec says
    assert observed(result) == expected_fields(case)
    if "bucket" in case["expected"]:
        assert bucket(SPEC["flags"][case["flag"]]["salt"], str(case["unit_id"])) == case["expected"]["bucket"]
        assert reference_bucket(SPEC["flags"][case["flag"]]["salt"], str(case["unit_id"])) == case["expected"]["bucket"]


def test_sdk_evaluator(db_url: str) -> None:
    # Given the spec's flags written through the store into a real database
    from rollout.store.db import make_engine

    engine = make_engine(db_url)
    with transaction(engine) as session:
        install_spec_flags(session)
    # When a client loads them and answers every case
    with RolloutClient(db_url, listen=False) as client:
        failures = []
        for case in CASES:
            result = client.assign(case["flag"], case["unit_id"], case["attributes"], default=case.get("default"))
            if observed(result) != expected_fields(case):
                failures.append((case["name"], observed(result), expected_fields(case)))
    engine.dispose()
    # Then every answer matches the spec
    assert failures == []
