"""Driving a rollout without Prefect: the one check loop (rollout.app.loop) in a plain foreground process.

`rollout start` uses this when no Prefect API is configured. Approvals then
come through `rollout approve` (recorded in the database, read at the next
check), database blips are ridden out by the loop's retries, and Ctrl-C or
SIGTERM applies the plan's on_abort through the loop's one abort path, just
as the flow's cancellation hook does.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from rollout.app.loop import Ending, Hooks, drive
from rollout.app.plans import load_plan
from rollout.app.reconcile import CheckResult, claim
from rollout.core.controller import RolloutState, Status
from rollout.ports import Clock, EvalRunner, EvidenceSource
from rollout.store.retry import call_with_retry


def run_foreground(source: Any, document: dict[str, Any], *, actor: str, namespace: str = "default",
                   on_check: Callable[[CheckResult], None] | None = None,
                   sleep: Callable[[float], None] | None = None, evidence: EvidenceSource | None = None,
                   evals: EvalRunner | None = None, clock: Clock | None = None) -> Ending:
    """Claim the rollout and check it until it ends. `source`: an Engine, or a Store (then pass `evidence`)."""
    plan = load_plan(document)
    owner = f"cli-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # Starting also rides out a blip (a bounded one: nothing is live yet, so failing is safe).
    run = call_with_retry(lambda: claim(source, plan, document, owner=owner, actor=actor, namespace=namespace,
                                        evidence=evidence, evals=evals, clock=clock), deadline=30.0)
    hooks = Hooks(sleep=sleep)
    if on_check is not None:
        hooks.on_check = lambda _run, result: on_check(result)
    # Signal handlers can only be set from the main thread (an embedding app may call us from another).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None
    try:
        return drive(run, hooks)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


__all__ = ["Ending", "RolloutState", "Status", "run_foreground"]
