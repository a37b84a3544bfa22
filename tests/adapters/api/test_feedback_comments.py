"""POST /v1/feedback with a comment: stored only for namespaces that opted in, redacted, capped, at most once."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from rollout.store.comments import comments
from rollout.store.db import transaction
from tests.adapters.api.conftest import Service, build_service
from tests.adapters.api.test_exposure_tokens import FLAG, _wait_for_variant
from tests.sdk.test_exposures import flag_in_rollout


def mask_digits(text: str) -> str:
    return re.sub(r"\d", "#", text)


@pytest.fixture
def opted_in(db_url: str) -> Iterator[Service]:
    yield from build_service(db_url, rate_limit=0, comment_namespaces="default",
                             comment_redact=f"{__name__}:mask_digits", comment_max_chars=16)


def _comments(api: Service, flag_id: int) -> list[tuple]:
    with transaction(api.engine) as s:
        return [(c.variant, c.comment) for c in comments(s, flag_id=flag_id)]


def test_an_opted_in_namespace_keeps_the_comment_redacted_capped_and_once(opted_in: Service) -> None:
    # Given a namespace that opted in, and a user served the candidate
    flag_id, _ = flag_in_rollout(opted_in.engine, bp=10_000, key=FLAG)
    token = _wait_for_variant(opted_in, "u1", "new-model")["exposure"]
    body = {"exposure": token, "thumbs_up": False, "comment": "order 12345 summary was wrong"}
    # When the feedback is posted, and posted again (a retry)
    first = opted_in.client.post("/v1/feedback", json=body, headers=opted_in.auth("write"))
    again = opted_in.client.post("/v1/feedback", json=body, headers=opted_in.auth("write"))
    # Then the comment is stored once, redacted and capped, credited to the candidate
    assert first.status_code == 200 and first.json()["comment"] == "stored", first.text
    assert again.json()["comment"] == "duplicate" and again.json()["stored"] == 0
    assert _comments(opted_in, flag_id) == [("new-model", "order ##### summ")]


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"comment": 42}, 422, "comment must be text"),
    ({"comment": "fine"}, 200, "not kept: this namespace did not opt in"),
    ({"thumbs_up": True, "comment": "fine"}, 200, "not kept: this namespace did not opt in"),
])
def test_without_opting_in_no_comment_is_kept(api: Service, body: dict, status: int, says: str) -> None:
    # Given the default service (no namespace opted in)
    flag_id, _ = flag_in_rollout(api.engine, bp=10_000, key=FLAG)
    token = _wait_for_variant(api, "u1", "new-model")["exposure"]
    # When feedback with a comment is posted
    response = api.client.post("/v1/feedback", json={"exposure": token, **body}, headers=api.auth("write"))
    # Then it is refused or answered with why the comment was not kept, and none is stored
    assert response.status_code == status, response.text
    assert says in response.text
    assert _comments(api, flag_id) == []
