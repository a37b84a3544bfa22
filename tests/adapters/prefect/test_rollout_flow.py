"""End to end through a real Prefect server: the flow promotes, rolls back, waits for and obeys humans."""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine

from rollout.adapters.prefect.flow import run_rollout
from rollout import RolloutClient
from rollout.store import flags as flag_store
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction
from rollout.testing import Traffic, VariantBehaviour

pytestmark = pytest.mark.slow

METRICS = [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.05},
           {"name": "latency_ms", "kind": "continuous", "better": "lower", "margin": "25%", "scale": "log"}]
STRATA = [{"name": "internal", "match": {"attribute": "email_domain", "in": ["example.com"]}},
          {"name": "free", "match": {"attribute": "tier", "equals": "free"}}]


def plan(**overrides: Any) -> dict[str, Any]:
    return {
        "flag": "summarizer", "baseline": "current", "candidate": "new-model", "strata": STRATA,
        "stages": [
            {"name": "shadow", "kind": "shadow", "sample": 0.5, "min_samples": 80, "min_duration": "1s"},
            {"name": "canary", "kind": "ramp", "percent": {"internal": 100, "free": 30, "default": 20},
             "min_samples": 80, "min_duration": "1s"},
            {"name": "full", "kind": "full", "approval": "required"},
        ],
        "metrics": METRICS, "check_interval": "1s",
        # the tests judge quality, not lost outcomes: a loose completion tolerance lets healthy stages pass fast
        "completion": {"tolerance": "20%"}, **overrides,
    }


class Rollout:
    """Runs the flow in a thread while the test plays the app's traffic and the release manager."""

    def __init__(self, db_url: str, engine: Engine, document: dict[str, Any], candidate: VariantBehaviour) -> None:
        self.db_url, self.engine, self.document, self.candidate = db_url, engine, document, candidate
        self.state: Any = None
        # Prefect's settings live in context variables, which a new thread does not inherit.
        context = contextvars.copy_context()
        self.thread = threading.Thread(target=context.run, args=(self._run,), daemon=True)

    def _run(self) -> None:
        self.state = run_rollout(plan=self.document, started_by="tester", database_url=self.db_url,
                                 return_state=True)

    def status(self) -> Any:
        with transaction(self.engine) as s:
            return rollout_store.latest_rollout(s, "summarizer")

    def drive(self, *, on_waiting: Any = None, timeout: float = 150) -> Any:
        self.thread.start()
        deadline = time.monotonic() + timeout
        with RolloutClient(self.db_url, listen=False, refresh_interval=0.2) as client:
            traffic = Traffic(client, "summarizer", candidate=self.candidate, seed=7)
            while self.thread.is_alive() and time.monotonic() < deadline:
                record = self.status()
                if record is not None and record.state.status.waiting and on_waiting is not None:
                    on_waiting(record)
                if "summarizer" not in client.flag_versions():
                    time.sleep(0.1)  # the flow creates the flag from the plan; wait for it
                    continue
                traffic.run(150)
                client.flush(timeout=30)
                time.sleep(0.1)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the flow did not finish in time"
        return self.state


def approve_through_prefect(record: Any) -> None:
    from prefect.flow_runs import resume_flow_run

    try:
        resume_flow_run(record.flow_run_id, run_input={"decision": "approve", "approver": "alice",
                                                       "comment": "looks good"})
    except Exception:  # noqa: BLE001 - not paused yet: try again on the next loop
        pass


def test_a_healthy_candidate_is_promoted_with_an_approval_sent_through_the_prefect_api(
        prefect_server: Any, engine: Engine, db_url: str) -> None:
    final = Rollout(db_url, engine, plan(), VariantBehaviour()).drive(on_waiting=approve_through_prefect)
    assert final.is_completed(), final
    with transaction(engine) as s:
        flag = flag_store.get_flag(s, "summarizer")
        record = rollout_store.latest_rollout(s, "summarizer")
        approvals = rollout_store.approvals(s, record.id)
        decisions = rollout_store.decisions(s, record.id)
    assert flag.phase.value == "promoted" and set(flag.allocations.values()) == {10_000}
    assert [(a.approver, a.approved, a.comment) for a in approvals] == [("alice", True, "looks good")]
    assert [d.sequence for d in decisions] == list(range(1, len(decisions) + 1))
    assert record.state.status.value == "promoted" and record.ended_at is not None


def test_a_regressed_candidate_is_rolled_back_by_the_judge(prefect_server: Any, engine: Engine, db_url: str) -> None:
    bad = VariantBehaviour(error_rate_by_stratum={"free": 0.30})
    final = Rollout(db_url, engine, plan(), bad).drive()
    assert final.name == "RolledBack" and final.is_failed()
    assert "harm proven" in final.message and "error" in final.message
    with transaction(engine) as s:
        flag = flag_store.get_flag(s, "summarizer")
        record = rollout_store.latest_rollout(s, "summarizer")
        stored = sum(d.details["samples"] for d in rollout_store.decisions(s, record.id)[-1:])
    assert flag.phase.value == "rolled_back" and set(flag.allocations.values()) == {0}
    # within the judge's sample budget: well before the stage's planned 1,000 per arm
    assert stored < 1_000


def test_an_approval_timeout_follows_the_plan(prefect_server: Any, engine: Engine, db_url: str) -> None:
    document = plan(approval_timeout="3s", on_approval_timeout="rollback")
    final = Rollout(db_url, engine, document, VariantBehaviour()).drive()
    assert final.name == "RolledBack"
    assert "no answer on stage full within 3s" in final.message


def test_an_empty_approval_is_refused_by_the_server_and_approves_nothing(
        prefect_server: Any, engine: Engine, db_url: str) -> None:
    from prefect.flow_runs import resume_flow_run

    refused: list[str] = []

    def answer(record: Any) -> None:
        if not refused:
            with pytest.raises(Exception) as info:  # noqa: PT011 - Prefect raises its own validation error
                resume_flow_run(record.flow_run_id, run_input={})
            refused.append(str(info.value))
            return
        from prefect.flow_runs import resume_flow_run as resume

        try:
            resume(record.flow_run_id, run_input={"decision": "reject", "approver": "bob", "comment": "no"})
        except Exception:  # noqa: BLE001
            pass

    final = Rollout(db_url, engine, plan(), VariantBehaviour()).drive(on_waiting=answer)
    assert refused, "the empty input was never tried"
    assert final.name == "RolledBack" and "rejected by bob: no" in final.message
