"""GET /v1/rollouts/{flag} and POST /v1/rollouts/{flag}/approve: status for readers, answers from admins, audited."""

from __future__ import annotations

import pytest

from rollout.app.plans import load_plan
from rollout.app.reconcile import check, claim
from rollout.store import flags as store
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction
from tests.adapters.api.conftest import Service

PLAN = {
    "flag": "gated", "baseline": "current", "candidate": "new-model",
    "stages": [{"name": "canary", "kind": "ramp", "percent": 5, "approval": "required"}],
    "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.01}],
}


def waiting_rollout(api: Service) -> int:
    """A rollout of `gated` (namespace default) waiting for approval of its canary."""
    run = claim(api.engine, load_plan(PLAN), PLAN, owner="test", actor="tester")
    assert check(run).step.state.status.value == "awaiting_approval"
    return run.rollout_id


def test_a_reader_sees_the_rollout_status(api: Service) -> None:
    waiting_rollout(api)
    response = api.client.get("/v1/rollouts/gated", headers=api.auth("read"))
    assert response.status_code == 200
    body = response.json()
    assert body["flag"]["key"] == "gated" and body["rollout"]["pending_approval"] == "canary"
    assert body["rollout"]["last_check"]["action"] == "request_approval"


def test_an_admin_approves_and_the_answer_is_kept_with_the_tokens_name(api: Service) -> None:
    rollout_id = waiting_rollout(api)
    response = api.client.post("/v1/rollouts/gated/approve", json={"decision": "approve", "comment": "fine"},
                               headers=api.auth("admin"))
    assert response.status_code == 200, response.text
    assert response.json()["stage"] == "canary" and response.json()["approver"] == "token:admin-token"
    with transaction(api.engine) as s:
        approvals = rollout_store.approvals(s, rollout_id)
        audit = store.audit_log(s, "gated", limit=1)[0]
    assert [(a.approved, a.approver, a.comment) for a in approvals] == [(True, "token:admin-token", "fine")]
    assert (audit.actor, audit.action) == ("token:admin-token", "rollout.approve")


@pytest.mark.parametrize(("who", "flag", "body", "status"), [
    ("read", "gated", {"decision": "approve"}, 403),
    ("write", "gated", {"decision": "approve"}, 403),
    ("other-admin", "gated", {"decision": "approve"}, 404),
    ("admin", "gated", {"decision": "maybe"}, 422),
    ("admin", "gated", {}, 422),
    ("admin", "gated", {"decision": "approve", "comment": "a\u0000b"}, 422),
    ("admin", "summarizer", {"decision": "approve"}, 404),
    ("admin", "no-such-flag", {"decision": "approve"}, 404),
])
def test_bad_approvals_are_refused_and_record_nothing(api: Service, who: str, flag: str, body: dict,
                                                      status: int) -> None:
    rollout_id = waiting_rollout(api)
    response = api.client.post(f"/v1/rollouts/{flag}/approve", json=body, headers=api.auth(who))
    assert response.status_code == status, response.text
    with transaction(api.engine) as s:
        assert rollout_store.approvals(s, rollout_id) == []


def test_approving_when_nothing_waits_is_a_conflict(api: Service) -> None:
    run = claim(api.engine, load_plan({**PLAN, "stages": [{"name": "canary", "kind": "ramp", "percent": 5}]}),
                PLAN, owner="test", actor="tester")
    check(run)
    response = api.client.post("/v1/rollouts/gated/approve", json={"decision": "approve"}, headers=api.auth("admin"))
    assert response.status_code == 409
