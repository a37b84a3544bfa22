"""`rollout.lost` goes out once per lost episode, however many observers look (rollout.app.status.tell_if_lost)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from rollout.app.plans import load_plan
from rollout.app.reconcile import claim
from rollout.app.status import tell_if_lost
from rollout.core.records import RolloutRecord
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction
from rollout.store.unit import SqlStore
from rollout.testing import FakeClock, InMemoryStore, ScriptedEvidence, passing
from tests.app.test_loop import PLAN


class Told:
    """What the observers told, as (rollout id, reason)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def __call__(self, record: RolloutRecord, reason: str) -> None:
        self.calls.append((record.id, reason))


def test_a_dead_controller_is_told_once_however_often_status_is_asked_and_again_after_a_new_loss() -> None:
    # Given a rollout whose controller died: its lease ran out
    clock = FakeClock()
    store = InMemoryStore(clock=clock)
    evidence = ScriptedEvidence(passing)
    run = claim(store, load_plan(PLAN), PLAN, owner="ctl-1", actor="alice", evidence=evidence, clock=clock)
    assert not tell_if_lost(store, "summarizer", told := Told(), now=clock.now())   # alive: nothing to tell
    clock.advance(run.lease_for.total_seconds() + 1)
    # When `rollout status` is asked on every tick of a watcher, ten times
    answers = [tell_if_lost(store, "summarizer", told, now=clock.now()) for _ in range(10)]
    for _ in range(10):
        clock.advance(5)
        answers.append(tell_if_lost(store, "summarizer", told, now=clock.now()))
    # Then the loss is told once, with when the lease ran out
    assert answers.count(True) == 1 and answers[0] and len(told.calls) == 1
    assert told.calls[0][0] == run.rollout_id and "no controller renewed the lease since" in told.calls[0][1]
    # When a new controller takes the rollout over, and dies too
    successor = claim(store, run.plan, PLAN, owner="ctl-2", actor="bob", evidence=evidence, clock=clock)
    assert successor.rollout_id == run.rollout_id and not tell_if_lost(store, "summarizer", told, now=clock.now())
    clock.advance(successor.lease_for.total_seconds() + 1)
    # Then that second loss is a new episode, told once more
    assert [tell_if_lost(store, "summarizer", told, now=clock.now()) for _ in range(3)] == [True, False, False]
    assert len(told.calls) == 2


def test_a_telling_that_fails_is_not_claimed_so_the_next_observer_tells_it() -> None:
    # Given a lost rollout, and a first observer whose event cannot be sent
    clock = FakeClock()
    store = InMemoryStore(clock=clock)
    run = claim(store, load_plan(PLAN), PLAN, owner="ctl-1", actor="alice", evidence=ScriptedEvidence(passing),
                clock=clock)
    clock.advance(run.lease_for.total_seconds() + 1)

    def broken(record: RolloutRecord, reason: str) -> None:
        raise ConnectionError("the Prefect server is down")

    with pytest.raises(ConnectionError):
        tell_if_lost(store, "summarizer", broken, now=clock.now())
    # When the next observer looks
    told = Told()
    # Then it tells the loss (at least once), and the one after it does not
    assert tell_if_lost(store, "summarizer", told, now=clock.now())
    assert not tell_if_lost(store, "summarizer", told, now=clock.now()) and len(told.calls) == 1


def test_on_the_database_the_episode_is_kept_across_processes(engine: Engine) -> None:
    # Given a rollout in the database whose lease ran out (observers in separate processes share only the rows)
    run = claim(engine, load_plan(PLAN), PLAN, owner="ctl-1", actor="alice")
    with transaction(engine) as s:
        lease = rollout_store.get_rollout(s, run.rollout_id).lease_expires_at
    assert lease is not None
    later = lease + timedelta(minutes=1)
    told = Told()
    # When two stores (as two `rollout status` processes would) look, several times each
    answers = [tell_if_lost(SqlStore(engine), "summarizer", told, now=later) for _ in range(3)]
    # Then the loss is told once
    assert answers == [True, False, False] and len(told.calls) == 1
    # When a controller renews the lease (it took over) and then stops renewing it
    with transaction(engine) as s:
        assert rollout_store.renew_lease(s, run.rollout_id, owner="ctl-1", lease_for=timedelta(seconds=30),
                                         now=later)
    much_later = later + timedelta(minutes=5)
    # Then that is a new episode, told once more
    assert [tell_if_lost(SqlStore(engine), "summarizer", told, now=much_later) for _ in range(2)] == [True, False]
    assert [rid for rid, _ in told.calls] == [run.rollout_id, run.rollout_id]
