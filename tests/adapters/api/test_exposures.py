"""Exposures over HTTP: every evaluation the service serves (/v1/evaluate, OFREP single and bulk) is counted
per unit and cell like the SDK's assign(), and a late outcome posted with the answer's token completes it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rollout.sdk.outcomes import _unit_hash
from rollout.store.db import transaction
from rollout.store.evidence import load_evidence
from rollout.store.exposures import exposure_counts
from rollout.store.models import Exposure
from rollout.store.secrets import UnitKeys
from tests.adapters.api.conftest import Service, build_service
from tests.sdk.test_exposures import flag_in_rollout

FLAG = "served-over-http"


@pytest.fixture
def api(db_url: str) -> Iterator[Service]:
    # A short write interval so the test sees the counts soon; what is written is the same at any interval.
    yield from build_service(db_url, rate_limit=0, exposure_flush_interval=0.05)


def _wait_for_stage(api: Service, stage: int) -> None:
    """Until the service's snapshot shows the rollout in `stage` (see test_exposure_tokens for why on SQLite)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        flag = api.client.app.state.rollout.snapshot.view("default").flags.get(FLAG)
        if flag is not None and flag.state.rollout_id is not None and flag.state.stage == stage:
            return
        time.sleep(0.05)
    raise AssertionError(f"the service never showed stage {stage}")


def _stored_when(api: Service, flag_id: int, total: int) -> dict[tuple, int]:
    """The flag's stored exposure counts once they add up to `total` (the writer runs on its own thread)."""
    deadline = time.monotonic() + 20
    while True:
        with Session(api.engine) as s:
            counts = exposure_counts(s, flag_id)
        if sum(counts.values()) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def test_every_serving_path_counts_exposures_per_unit_and_cell(api: Service) -> None:
    # Given a flag ramping at 50 % in stage 1 of a rollout (and the spec's flags, which have no rollout)
    flag_id, rollout_id = flag_in_rollout(api.engine, bp=5_000, stage=1, key=FLAG)
    _wait_for_stage(api, 1)
    read = api.auth("read")
    served: dict[tuple[str, str], int] = {}  # (unit, stratum) -> evaluations served
    variants: dict[str, str] = {}

    def saw(unit: str, stratum: str, variant: str) -> None:
        served[(unit, stratum)] = served.get((unit, stratum), 0) + 1
        variants[unit] = variant

    # When units are served over /v1/evaluate (one at a time and batched, one of them in the free tier) ...
    for unit in ("a", "b"):
        r = api.client.post("/v1/evaluate", json={"flag": FLAG, "unit_id": unit}, headers=read)
        assert r.status_code == 200, r.text
        saw(unit, "default", r.json()["variant"])
    r = api.client.post("/v1/evaluate", headers=read, json={"items": [
        {"flag": FLAG, "unit_id": "a"}, {"flag": FLAG, "unit_id": "c", "attributes": {"tier": "free"}},
        {"flag": "no-such-flag", "unit_id": "a"}]})
    assert r.status_code == 200, r.text
    saw("a", "default", r.json()["results"][0]["variant"])
    saw("c", "free", r.json()["results"][1]["variant"])
    # ... over OFREP, one flag and in bulk (every flag of the namespace), and with no targetingKey
    for unit in ("b", "d"):
        r = api.client.post(f"/ofrep/v1/evaluate/flags/{FLAG}", json={"context": {"targetingKey": unit}}, headers=read)
        assert r.status_code == 200, r.text
        saw(unit, "default", r.json()["variant"])
    r = api.client.post("/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": "d"}}, headers=read)
    assert r.status_code == 200, r.text
    saw("d", "default", next(f["variant"] for f in r.json()["flags"] if f["key"] == FLAG))
    r = api.client.post(f"/ofrep/v1/evaluate/flags/{FLAG}", json={"context": {}}, headers=read)
    assert r.status_code == 400
    # Then the store holds one row per unit and cell, counting exactly what was served; errors count nothing
    key = UnitKeys(api.engine).get("default")
    expected = {(flag_id, rollout_id, 1, variants[u], stratum, _unit_hash(key, u)): n
                for (u, stratum), n in served.items()}
    assert _stored_when(api, flag_id, sum(expected.values())) == expected
    # And flags without a rollout (the spec's, evaluated in bulk) count nothing
    with Session(api.engine) as s:
        assert s.scalar(select(func.count()).select_from(Exposure)) == len(expected)


def test_a_late_outcome_with_the_http_token_completes_its_exposure(api: Service) -> None:
    # Given a unit served over HTTP twice, with the answer's exposure token, in stage 1 of a rollout
    flag_id, rollout_id = flag_in_rollout(api.engine, bp=5_000, stage=1, key=FLAG)
    _wait_for_stage(api, 1)
    answers = [api.client.post("/v1/evaluate", json={"flag": FLAG, "unit_id": "late"}, headers=api.auth("read"))
               .json() for _ in range(2)]
    variant, token = answers[0]["variant"], answers[0]["exposure"]
    assert isinstance(token, str)
    assert sum(_stored_when(api, flag_id, 2).values()) == 2
    # When one outcome arrives later, posted with that token
    r = api.client.post("/v1/outcomes", headers=api.auth("write"),
                        json={"outcomes": [{"exposure": token, "metrics": {"error": 0}}]})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    # Then the judge's evidence credits it to the exposed unit's arm: 1 unit, 2 exposures, 1 completed
    other = "new-model" if variant == "current" else "current"
    with transaction(api.engine) as s:
        evidence = load_evidence(s, flag_id=flag_id, rollout_id=rollout_id)
    assert evidence.exposed
    assert evidence.units == {(variant, "default", 1): 1}
    completion = evidence.completion[(variant, "default")]
    assert (completion.units_total, completion.n, completion.y) == (1, (2.0,), (1.0,))
    assert (other, "default") not in evidence.completion
