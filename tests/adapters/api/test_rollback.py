"""POST /v1/rollouts/{flag}/rollback: admins only, audited with the token's name."""

from __future__ import annotations

import pytest

from rollout.store import flags as store
from rollout.store.db import transaction
from tests.adapters.api.conftest import Service


def test_a_rollback_puts_everyone_on_the_baseline_and_is_audited_with_the_token(api: Service) -> None:
    # Given the ramping summarizer, When an admin token rolls it back with a reason
    response = api.client.post("/v1/rollouts/summarizer/rollback", json={"reason": "p99 latency doubled"},
                               headers=api.auth("admin"))
    # Then the flag is rolled back, evaluation serves the baseline at once, and the audit log names the token
    assert response.status_code == 200 and response.json()["phase"] == "rolled_back"
    evaluated = api.client.post("/v1/evaluate", headers=api.auth("read"), json={
        "flag": "summarizer", "unit_id": "user-1", "attributes": {"email_domain": "example.com"}}).json()
    assert (evaluated["variant"], evaluated["reason"]) == ("current", "DISABLED")
    with transaction(api.engine) as s:
        entry = store.audit_log(s, "summarizer", limit=1)[0]
    assert (entry.actor, entry.action, entry.reason) == ("token:admin-token", "flag.rollback", "p99 latency doubled")


def test_a_stale_expected_version_is_409_and_changes_nothing(api: Service) -> None:
    with transaction(api.engine) as s:
        version = store.get_flag(s, "summarizer").version
    response = api.client.post("/v1/rollouts/summarizer/rollback", json={"reason": "x", "expected_version": version - 1},
                               headers=api.auth("admin"))
    assert response.status_code == 409
    with transaction(api.engine) as s:
        assert store.get_flag(s, "summarizer").version == version


@pytest.mark.parametrize("flag,body,status", [
    ("no-such-flag", {"reason": "x"}, 404),
    ("bad%00key", {"reason": "x"}, 404),
    ("' OR 1=1 --", {"reason": "x"}, 404),
    ("summarizer", {}, 422),
    ("summarizer", {"reason": "   "}, 422),
    ("summarizer", {"reason": "a\u0000b"}, 422),
    ("summarizer", {"reason": 5}, 422),
    ("summarizer", {"reason": "x", "expected_version": "7"}, 422),
    ("summarizer", [], 422),
])
def test_bad_rollbacks_are_refused_and_change_nothing(api: Service, flag: str, body: object, status: int) -> None:
    with transaction(api.engine) as s:
        version = store.get_flag(s, "summarizer").version
    response = api.client.post(f"/v1/rollouts/{flag}/rollback", json=body, headers=api.auth("admin"))
    assert response.status_code == status, response.text
    with transaction(api.engine) as s:
        assert store.get_flag(s, "summarizer").version == version
