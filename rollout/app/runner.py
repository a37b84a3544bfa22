"""Driving a rollout without Prefect: the same checks, in a plain foreground loop.

`rollout start` uses this when no Prefect API is configured. Approvals then
come through `rollout approve` (recorded in the database, read at the next
check), and Ctrl-C or SIGTERM applies the plan's on_abort just as the flow's
cancellation hook does.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from rollout.core.controller import RolloutState, Status
from rollout.app.plans import load_plan
from rollout.app.reconcile import CONTROLLER, CheckResult, RolloutRun, check, claim, run_eval_stage
from rollout.store import flags as flag_store
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction


def run_foreground(engine: Engine, document: dict[str, Any], *, actor: str, namespace: str = "default",
                   on_check: Callable[[CheckResult], None] | None = None,
                   sleep: Callable[[float], None] = time.sleep) -> RolloutState:
    plan = load_plan(document)
    owner = f"cli-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    run = claim(engine, plan, document, owner=owner, actor=actor, namespace=namespace)
    # Signal handlers can only be set from the main thread (an embedding app may call us from another).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None
    try:
        eval_failure: str | None = None
        while True:
            result = check(run, eval_failure=eval_failure)
            eval_failure = None
            if on_check is not None:
                on_check(result)
            state = result.step.state
            if not result.owned or not state.status.active:
                return state
            if state.status is Status.EVALUATING:
                eval_failure, written = run_eval_stage(run, state.stage_index)
                if written == 0 and eval_failure is None:
                    sleep(plan.check_interval.total_seconds())
            elif result.step.action != "enter_stage":
                sleep(plan.check_interval.total_seconds())
    except KeyboardInterrupt:
        return abort(run, "interrupted (Ctrl-C or SIGTERM)")
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def abort(run: RolloutRun, reason: str) -> RolloutState:
    """The plan's on_abort, if this controller still owns the rollout."""
    with transaction(run.engine) as s:
        record = rollout_store.get_rollout(s, run.rollout_id)
        if record.lease_owner == run.owner and rollout_store.abort(s, run.rollout_id, owner=run.owner, reason=reason):
            if run.plan.on_abort.value == "rollback":
                flag_store.rollback(s, run.plan.flag, actor=CONTROLLER, reason=f"on_abort: {reason}",
                                    namespace=run.namespace)
        return rollout_store.get_rollout(s, run.rollout_id).state


def _raise_interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


__all__ = ["Status", "abort", "run_foreground"]
