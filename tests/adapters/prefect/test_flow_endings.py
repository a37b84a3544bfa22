"""The flow's guards that need no running flow: the approval form's schema, restarts, and the abort hook."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import jsonschema
import pytest
from pydantic import ValidationError
from sqlalchemy import Engine

from rollout.adapters.prefect.flow import StageApproval, _on_abort, _refuse_restart
from rollout.app.plans import load_plan
from rollout.app.reconcile import check, claim
from rollout.core.controller import Status
from rollout.store import flags as flag_store
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction
from rollout.store.unit import SqlStore
from tests.adapters.prefect.test_rollout_flow import plan


@pytest.mark.parametrize("approver", ["", " ", "\t\n "])
def test_a_blank_approver_is_refused_by_the_forms_schema_itself(approver: str) -> None:
    answer = {"decision": "approve", "approver": approver}
    # Given the JSON schema the Prefect server checks a resume against, and the model the run reads it with
    schema = StageApproval.model_json_schema()
    # Then both refuse a blank name, so the server answers the resume with an error and the run never sees it
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(answer, schema)
    with pytest.raises(ValidationError):
        StageApproval.model_validate(answer)


def test_an_approver_name_is_kept_stripped() -> None:
    assert StageApproval.model_validate({"decision": "reject", "approver": "  bob "}).approver == "bob"
    jsonschema.validate({"decision": "reject", "approver": "  bob "}, StageApproval.model_json_schema())


def test_a_retried_run_whose_rollout_ended_is_refused_unless_the_plan_allows_it(engine: Engine) -> None:
    # Given a rollout started by flow run X that has ended (rolled back by hand)
    run_id = str(uuid4())
    document = plan()
    run = claim(engine, load_plan(document), document, owner=run_id, actor="alice", flow_run_id=run_id)
    check(run)
    with transaction(engine) as s:
        flag_store.rollback(s, "summarizer", actor="carol", reason="stop")
    # When flow run X is retried
    refused = _refuse_restart(SqlStore(engine), load_plan(document), run_id)
    # Then it is refused with the reason, unless the plan says `restart: allowed`
    assert refused is not None and "rolled_back" in refused and "restart: allowed" in refused
    assert _refuse_restart(SqlStore(engine), load_plan({**document, "restart": "allowed"}), run_id) is None
    assert _refuse_restart(SqlStore(engine), load_plan(document), str(uuid4())) is None  # a new run may start


@dataclass
class _FlowRun:
    id: Any
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class _State:
    name: str
    message: str


def test_a_failed_or_crashed_run_with_users_on_the_candidate_applies_on_abort(engine: Engine, db_url: str) -> None:
    # Given a rollout in its shadow stage, owned by flow run X
    run_id = uuid4()
    document = plan()
    run = claim(engine, load_plan(document), document, owner=str(run_id), actor="alice", flow_run_id=str(run_id))
    assert check(run).step.state.status is Status.SHADOW
    # When Prefect reports the run failed (or crashed) and runs the hook
    flow_run = _FlowRun(run_id, {"plan": document, "database_url": db_url})
    _on_abort(None, flow_run, _State("Crashed", "the process was killed"))
    # Then the rollout is aborted and the flag back on the baseline
    with transaction(engine) as s:
        record = rollout_store.get_rollout(s, run.rollout_id)
        flag = flag_store.get_flag(s, "summarizer")
    assert record.state.status is Status.ABORTED and "crashed" in record.state.reason
    assert flag.phase.value == "rolled_back" and flag.shadow_bp == 0


@pytest.mark.parametrize(("on_abort", "says"), [("rollback", "serves everyone the baseline (current) again"),
                                                ("hold", "keeps its allocations but nobody judges it any more")])
def test_a_cancelled_run_says_in_one_line_what_on_abort_did(engine: Engine, db_url: str, on_abort: str, says: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    import logging

    # Given a rollout in its shadow stage, owned by flow run X, whose plan says what to do on abort
    run_id = uuid4()
    document = {**plan(), "on_abort": on_abort}
    claim(engine, load_plan(document), document, owner=str(run_id), actor="alice", flow_run_id=str(run_id))
    # When the release manager cancels the run in the UI and Prefect runs the cancellation hook
    with caplog.at_level(logging.INFO):
        _on_abort(None, _FlowRun(run_id, {"plan": document, "database_url": db_url}),
                  _State("Cancelling", "Flow run was cancelled."))  # what Prefect 3.9 passes the hook
    # Then one WARNING line, without a traceback, names the cancellation, the policy and what it did
    lines = [r for r in caplog.records if "on_abort" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and lines[0].exc_info is None
    assert lines[0].getMessage() == (f"flow run cancelled: the rollout is aborted and the "
                                     f"plan's on_abort ({on_abort}) was applied: the flag summarizer {says}"
                                     + ("" if on_abort == "rollback" else
                                        "; roll back by hand with `rollout rollback summarizer` or start a new run"))


def test_the_failure_hook_after_the_loop_gave_up_does_not_tell_the_loss_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    from rollout.adapters.prefect import flow as rollout_flow
    from rollout.core.controller import Emit, Event

    sent: list[Event] = []
    monkeypatch.setattr(rollout_flow, "_emit_for", lambda flag, event, payload: sent.append(event))
    with socket.socket() as s:  # a port nobody listens on: the database is unreachable
        s.bind(("127.0.0.1", 0))
        dead = f"postgresql+psycopg://postgres@127.0.0.1:{s.getsockname()[1]}/test?connect_timeout=1"
    document = {**plan(), "check_interval": "1s"}
    # Given a flow run whose loop could not reach the database to abort, and so sent rollout.lost itself
    run_id = uuid4()
    run = SimpleNamespace(owner=str(run_id), rollout_id=1, plan=load_plan(document))
    monkeypatch.setattr(rollout_flow, "emit_event", lambda **kw: None)
    rollout_flow._emit(run, Emit(Event.LOST, {"reason": "database unreachable"}))  # type: ignore[arg-type]
    # When Prefect runs the failure hook, which tries on_abort once more, still without a database
    started = time.monotonic()
    _on_abort(None, _FlowRun(run_id, {"plan": document, "database_url": dead}), _State("Failed", "lost"))
    # Then it gave up after about one lease, and sent no second rollout.lost
    assert time.monotonic() - started < 60 and sent == []
    # while a run that had not told it yet (it crashed before its loop could) does tell it
    _on_abort(None, _FlowRun(uuid4(), {"plan": document, "database_url": dead}), _State("Crashed", "killed"))
    assert sent == [Event.LOST]


def test_the_hook_leaves_alone_a_rollout_another_run_owns(engine: Engine, db_url: str) -> None:
    # Given a rollout owned by flow run X
    document = plan()
    run = claim(engine, load_plan(document), document, owner="run-x", actor="alice", flow_run_id="run-x")
    check(run)
    # When a refused duplicate run Y fails and its hook runs
    _on_abort(None, _FlowRun(uuid4(), {"plan": document, "database_url": db_url}), _State("Failed", "refused"))
    # Then X's rollout goes on untouched
    with transaction(engine) as s:
        assert rollout_store.get_rollout(s, run.rollout_id).state.status is Status.SHADOW
        assert flag_store.get_flag(s, "summarizer").phase.value == "shadow"


def test_an_intended_ending_loses_prefects_crash_traceback_and_a_real_failure_keeps_it() -> None:
    import logging
    import sys

    from prefect.exceptions import FailedRun

    from rollout.adapters.prefect.flow import _ended

    def engine_record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:  # noqa: BLE001
            info = sys.exc_info()
        return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1,
                                 "Engine execution exited with unexpected exception", (), info)

    # Given a run that ended rolled back, as the flow returns it
    state = _ended("RolledBack", "harm proven: error +4.1 % beyond the margin")
    assert state.is_failed() and state.name == "RolledBack"
    kept: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = kept.append  # type: ignore[method-assign]
    logger = logging.getLogger("prefect.flow_runs")
    logger.addHandler(handler)
    try:
        # When Prefect's engine logs its "unexpected exception" for that state, and for a real bug
        logger.handle(engine_record(FailedRun(state.message)))
        logger.handle(engine_record(RuntimeError("a real bug")))
    finally:
        logger.removeHandler(handler)
    # Then only the real bug's traceback is kept
    assert [str(r.exc_info[1]) for r in kept] == ["a real bug"]


def test_the_summary_card_renders_the_status_view(engine: Engine) -> None:
    from rollout.adapters.prefect.flow import summary_markdown
    from rollout.app.status import rollout_status

    # Given a rollout in its shadow stage after one check
    document = plan()
    run = claim(engine, load_plan(document), document, owner="run-x", actor="alice")
    check(run)
    # When the run page renders its summary from the status view
    with transaction(engine) as s:
        text = summary_markdown(rollout_status(s, "summarizer"))
    # Then it says the stage as people count it, the allocations per stratum, and why
    assert "stage 1 of 3 (shadow)" in text and "| free | 0 % |" in text and "entering stage shadow" in text
