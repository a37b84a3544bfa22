"""The local Prefect server harness, proven with real flows against a real server.

Each test prints what it measured (see `pytest -s`); the figures are also in
rollout/prefect_server.py's docstring.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from typing import Literal
from uuid import UUID

import httpx
import pytest
from prefect import flow, get_client
from prefect.exceptions import FailedRun
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run as current_run
from prefect.states import Failed, StateType

from rollout.testing.prefect_server import PrefectServer

pytestmark = pytest.mark.slow


# --- flows under test -------------------------------------------------------


@flow
def add_one(x: int) -> int:
    return x + 1


class Approval(RunInput):
    """What a human types to let a gated ramp step go on. No defaults on purpose."""

    decision: Literal["approve", "reject"]
    approver: str


_paused_run_ids: queue.Queue[UUID] = queue.Queue()


@flow
def gated_step() -> str:
    _paused_run_ids.put(UUID(current_run.id))
    answer = pause_flow_run(wait_for_input=Approval, timeout=60, poll_interval=1)
    return f"{answer.decision} by {answer.approver}"


@flow
def rolls_back():
    return Failed(name="RolledBack", message="error rate 4.1% > 2.0% at 25%; flag set to 0%")


@flow
def blows_up():
    raise ValueError("judge crashed")


def _server_state(run_id: UUID):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


# --- (a) the server and a trivial flow run -----------------------------------


def test_the_server_answers_and_serves_the_ui(prefect_server: PrefectServer) -> None:
    # Given the session's server
    # When we ask its health endpoint and its UI over loopback
    with httpx.Client(trust_env=False, timeout=5) as http:
        health = http.get(f"{prefect_server.api_url}/health")
        ui = http.get(prefect_server.ui_url, follow_redirects=True)

    # Then both answer, and a client process is told where to go, offline
    assert health.status_code == 200 and health.json() is True
    assert ui.status_code == 200 and "<html" in ui.text.lower()
    env = prefect_server.env()
    assert env["PREFECT_API_URL"] == prefect_server.api_url
    assert prefect_server.api_url.startswith("http://127.0.0.1:")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "1"
    print(f"\nserver healthy {prefect_server.startup_seconds:.2f} s after start_server() "
          f"(template build {prefect_server.template_seconds:.2f} s of it)")


def test_a_trivial_flow_run_completes_against_the_server(prefect_server: PrefectServer) -> None:
    # Given the session's server and the heartbeat switched off
    from prefect.settings import get_current_settings

    assert get_current_settings().api.url == prefect_server.api_url
    assert get_current_settings().flows.heartbeat_frequency is None

    # When a flow runs five times
    timings = []
    for x in range(5):
        started = time.monotonic()
        state = add_one(x, return_state=True)
        timings.append(time.monotonic() - started)

    # Then every run completed with its result, and the server recorded it so
    run_id = state.state_details.flow_run_id
    assert state.is_completed() and state.result() == 5
    assert _server_state(run_id).type == StateType.COMPLETED
    assert max(timings[1:]) < 3.0, timings
    print("\nflow run overhead: " + ", ".join(f"{t:.3f}" for t in timings) + " s")


# --- (b) pause for input, resume from another thread --------------------------


def test_a_paused_flow_rejects_bad_input_and_continues_on_a_valid_approval(
    prefect_server: PrefectServer,
) -> None:
    # Given a flow that pauses for an Approval whose fields have no defaults,
    # and an approver on another thread
    while not _paused_run_ids.empty():
        _paused_run_ids.get_nowait()
    seen: dict[str, object] = {}

    def approver() -> None:
        try:
            run_id = _paused_run_ids.get(timeout=30)
            seen["run_id"] = run_id
            deadline = time.monotonic() + 30
            while _server_state(run_id).type != StateType.PAUSED:
                assert time.monotonic() < deadline, "the flow never paused"
                time.sleep(0.05)
            # When bad input arrives: none, empty, and a decision outside the schema
            rejections = []
            for bad in (None, {}, {"decision": "maybe", "approver": "mallory"}):
                try:
                    resume_flow_run(run_id, run_input=bad)
                except RuntimeError as error:
                    rejections.append(str(error))
            seen["rejections"] = rejections
            seen["state_after_bad_input"] = _server_state(run_id).type
            # And then a valid approval
            seen["resumed_at"] = time.monotonic()
            resume_flow_run(run_id, run_input={"decision": "approve", "approver": "alice"})
        except BaseException as error:  # surfaced by the main thread below
            seen["error"] = error

    # Threads do not inherit temporary_settings: hand the test's context over.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(approver,))
    thread.start()

    # When the flow runs here, on the main thread, until it is resumed
    state = gated_step(return_state=True)
    finished_at = time.monotonic()
    thread.join(timeout=30)

    # Then the server rejected each bad input with a reason and kept the run paused,
    assert "error" not in seen, seen.get("error")
    assert len(seen["rejections"]) == 3, seen["rejections"]
    assert all(r.startswith("Cannot resume this run") for r in seen["rejections"])
    assert "decision" in seen["rejections"][1]
    assert seen["state_after_bad_input"] == StateType.PAUSED
    # and the valid approval reached the flow within a couple of poll intervals
    assert state.is_completed() and state.result() == "approve by alice"
    latency = finished_at - seen["resumed_at"]
    assert latency < 5.0
    assert _server_state(seen["run_id"]).type == StateType.COMPLETED
    print(f"\nresume latency (poll_interval=1): {latency:.2f} s; rejections: {seen['rejections']}")


# --- (c) final states, including a custom Failed named RolledBack -------------


def test_a_flow_that_returns_a_rolledback_state_ends_failed_with_that_name_and_message(
    prefect_server: PrefectServer,
) -> None:
    # Given a flow that returns Failed(name="RolledBack", message=...)
    # When it runs
    state = rolls_back(return_state=True)

    # Then the run is of type FAILED, named RolledBack, with the message, on the server too
    assert state.type == StateType.FAILED and state.name == "RolledBack"
    assert state.message.startswith("error rate 4.1%")
    on_server = _server_state(state.state_details.flow_run_id)
    assert (on_server.type, on_server.name, on_server.message) == (
        StateType.FAILED, "RolledBack", state.message,
    )
    # and a plain call (no return_state) raises FailedRun carrying the message
    with pytest.raises(FailedRun, match="error rate 4.1%"):
        rolls_back()


def test_a_flow_that_raises_ends_failed_and_one_that_returns_ends_completed(
    prefect_server: PrefectServer,
) -> None:
    # Given a flow that raises and one that returns a value
    # When each runs
    failed = blows_up(return_state=True)
    completed = add_one(1, return_state=True)

    # Then the server holds Failed (named "Failed", the exception in the message) and Completed
    on_server = _server_state(failed.state_details.flow_run_id)
    assert (on_server.type, on_server.name) == (StateType.FAILED, "Failed")
    assert "judge crashed" in on_server.message
    with pytest.raises(ValueError, match="judge crashed"):
        failed.result()
    assert _server_state(completed.state_details.flow_run_id).type == StateType.COMPLETED
