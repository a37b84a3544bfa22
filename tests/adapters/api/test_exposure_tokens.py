"""Exposure tokens over HTTP: /v1/evaluate issues them, /v1/outcomes credits what they say was served."""

from __future__ import annotations

import time

from sqlalchemy import select

from rollout import RolloutClient
from rollout.sdk.outcomes import _unit_hash
from rollout.store.secrets import UnitKeys
from rollout.store.db import transaction
from rollout.store.models import Outcome
from tests.adapters.api.conftest import Service
from tests.sdk.test_exposures import flag_in_rollout, ramp

FLAG = "late-feedback"


def _stored(api: Service) -> list[tuple]:
    with transaction(api.engine) as s:
        return [tuple(r) for r in s.execute(select(
            Outcome.rollout_id, Outcome.stage, Outcome.variant, Outcome.unit_hash, Outcome.metric, Outcome.value)
            .order_by(Outcome.id))]


def _evaluate(api: Service, unit: str) -> dict:
    response = api.client.post("/v1/evaluate", json={"flag": FLAG, "unit_id": unit}, headers=api.auth("read"))
    assert response.status_code == 200, response.text
    return response.json()


def _wait_for_stage(api: Service, stage: int) -> None:
    """Until the service's snapshot shows the rollout in `stage`.

    On SQLite a refresh can read the flags and the rollouts on either side of
    a commit, and answer one poll interval without the rollout; tokens issued
    then would name no rollout. The next poll mends it; the test waits for it.
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        flag = api.client.app.state.rollout.snapshot.view("default").flags.get(FLAG)
        if flag is not None and flag.state.rollout_id is not None and flag.state.stage == stage:
            return
        time.sleep(0.05)
    raise AssertionError(f"the service never showed stage {stage}")


def _wait_for_variant(api: Service, unit: str, variant: str) -> dict:
    deadline = time.monotonic() + 10
    while (answer := _evaluate(api, unit))["variant"] != variant and time.monotonic() < deadline:
        time.sleep(0.05)
    return answer


def test_a_late_outcome_posted_with_the_token_is_credited_to_the_baseline_in_the_old_stage(api: Service) -> None:
    # Given a unit served the baseline over HTTP in stage 1 at 10 %, and the token that came with the answer
    _, rollout_id = flag_in_rollout(api.engine, bp=1_000, stage=1, key=FLAG)
    _wait_for_stage(api, 1)
    unit = next(u for u in (f"u{i}" for i in range(100)) if _wait_for_variant(api, u, "current")["variant"] == "current")
    token = _evaluate(api, unit)["exposure"]
    assert isinstance(token, str) and len(token) < 100
    # When the allocation goes to 100 % in stage 2, and the outcome is posted afterwards with the token
    ramp(api.engine, bp=10_000, stage=2, key=FLAG)
    _wait_for_stage(api, 2)
    assert _wait_for_variant(api, unit, "new-model")["variant"] == "new-model"
    response = api.client.post("/v1/outcomes", headers=api.auth("write"), json={"outcomes": [
        {"exposure": token, "metrics": {"thumbs_up": 0}},
        {"exposure": token[:-3] + "AAA", "metrics": {"thumbs_up": 1}},
        {"exposure": token, "flag": FLAG, "metrics": {"thumbs_up": 1}},
    ]})
    # Then it is stored as the baseline's, in stage 1; the tampered and the over-specified items are refused by index
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], [e["index"] for e in body["errors"]]) == (1, [1, 2])
    assert "signature" in body["errors"][0]["error"] and "takes no 'flag'" in body["errors"][1]["error"]
    assert _stored(api) == [(rollout_id, 1, "current", _unit_hash(UnitKeys(api.engine).get("default"), unit), "thumbs_up", 0.0)]


def test_tokens_from_http_and_from_the_sdk_are_interchangeable(api: Service) -> None:
    # Given a token issued over HTTP
    flag_in_rollout(api.engine, bp=10_000, key=FLAG)
    token = _wait_for_variant(api, "u1", "new-model")["exposure"]
    # When a Python app records with it, and the service takes one the SDK issued
    with RolloutClient(api.url, listen=False) as client:
        client.record(token, {"error": 0})
        sdk_token = client.exposure_token(client.assign(FLAG, "u2"))
        assert client.flush(timeout=30)
    response = api.client.post("/v1/outcomes", headers=api.auth("write"),
                               json={"outcomes": [{"exposure": sdk_token, "metrics": {"error": 1}}]})
    # Then both are credited
    assert response.json()["accepted"] == 1
    assert [(r[2], r[5]) for r in _stored(api)] == [("new-model", 0.0), ("new-model", 1.0)]


def test_another_namespace_cannot_use_the_token(api: Service) -> None:
    flag_in_rollout(api.engine, bp=10_000, key=FLAG)
    token = _wait_for_variant(api, "u1", "new-model")["exposure"]
    response = api.client.post("/v1/outcomes", headers=api.auth("other-admin"),
                               json={"outcomes": [{"exposure": token, "metrics": {"error": 1}}]})
    assert response.status_code == 200 and response.json()["rejected"] == 1
    assert _stored(api) == []


def test_error_answers_carry_no_token(api: Service) -> None:
    response = api.client.post("/v1/evaluate", json={"flag": "nope", "unit_id": "u1"}, headers=api.auth("read"))
    assert response.json()["exposure"] is None


FEEDBACK = [
    # (body beside the token, status, stored metrics or the reason refused)
    ({"thumbs_up": False}, 200, [("thumbs_up", 0.0)]),
    ({"thumbs_up": True, "rating": 4.5}, 200, [("thumbs_up", 1.0), ("rating", 4.5)]),
    ({}, 422, "thumbs_up or rating"),
    ({"thumbs_up": "yes"}, 422, "true or false"),
    ({"rating": "great"}, 422, "number"),
    ({"comment": "meh"}, 200, []),              # a comment alone: kept only where opted in (test_feedback_comments)
    ({"mood": "meh"}, 422, "unknown fields"),
]


def test_feedback_over_http_is_stored_as_outcomes_of_the_exposure(api: Service) -> None:
    flag_in_rollout(api.engine, bp=10_000, key=FLAG)
    token = _wait_for_variant(api, "u1", "new-model")["exposure"]
    for extra, status, expected in FEEDBACK:
        before = _stored(api)
        response = api.client.post("/v1/feedback", json={"exposure": token, **extra}, headers=api.auth("write"))
        assert response.status_code == status, (extra, response.text)
        if status == 200:
            assert [(r[4], r[5]) for r in _stored(api)[len(before):]] == expected
        else:
            assert expected in response.json()["error"] and _stored(api) == before
    forged = api.client.post("/v1/feedback", json={"exposure": token[:-2] + "xx", "thumbs_up": True},
                             headers=api.auth("write"))
    assert forged.status_code == 422 and "signature" in forged.json()["error"]
