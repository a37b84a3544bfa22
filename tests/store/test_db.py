"""The store speaks the error tree: a database that is not there is `StoreUnavailableError`, with the driver's error kept."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from rollout.errors import FlagExistsError, StoreUnavailableError
from rollout.store import flags as store
from rollout.store.db import make_engine, transaction
from rollout.store.models import Flag
from rollout.store.outcomes import insert_outcomes
from tests.harness.tcp_proxy import TcpProxy

NOBODY_LISTENS = "postgresql://postgres@127.0.0.1:1/none"  # a real refused connection, on loopback


def _count_flags(engine: Engine) -> int:
    with transaction(engine) as s:
        return s.query(Flag).count()


@pytest.mark.parametrize("work", [
    pytest.param(_count_flags, id="transaction"),
    pytest.param(lambda engine: insert_outcomes(engine, 1, [(1, ((1, None, 0, "a", "default", 7), (("error", 0.0),), 0.0))]),
                 id="the SDK's outcome write"),
])
def test_a_refused_connection_is_store_unavailable(work) -> None:  # type: ignore[no-untyped-def]
    # Given an engine for a port nobody listens on
    engine = make_engine(NOBODY_LISTENS)
    # When the store is used, Then it says the store is unavailable, and keeps the driver's error as the cause
    with pytest.raises(StoreUnavailableError, match="database unavailable") as caught:
        work(engine)
    assert isinstance(caught.value.__cause__, OperationalError)
    engine.dispose()


@pytest.mark.postgres
def test_a_connection_cut_mid_transaction_is_store_unavailable(pg_proxy: tuple[TcpProxy, str]) -> None:
    # Given a transaction under way through a proxy
    proxy, url = pg_proxy
    engine = make_engine(url, pool_pre_ping=False)
    with pytest.raises(StoreUnavailableError) as caught, transaction(engine) as s:
        s.query(Flag).count()
        # When the network cuts the connection before the next statement
        proxy.set_mode("refuse")
        time.sleep(0.2)
        s.query(Flag).count()
    # Then the caller sees the tree's error, and the driver's is its cause
    assert isinstance(caught.value.__cause__, (OperationalError, InterfaceError))
    engine.dispose()


def test_an_answer_of_the_database_is_not_unavailability(engine: Engine) -> None:
    # Given a flag, When it is created again, Then that is a conflict, not a fault of the store
    with transaction(engine) as s:
        store.create_flag(s, "summarizer", variants=["a", "b"], actor="t")
    with pytest.raises(FlagExistsError), transaction(engine) as s:
        store.create_flag(s, "summarizer", variants=["a", "b"], actor="t")
    # And a constraint violation that no one translated stays the driver's own error
    with pytest.raises(IntegrityError), transaction(engine) as s:
        s.add(Flag(key="summarizer", namespace="default", salt="s", baseline="a", candidate="b"))
        s.flush()


def test_a_missing_rollout_is_named_as_a_rollout(engine: Engine) -> None:
    from rollout.errors import NotFoundError, RolloutNotFoundError
    from rollout.store.rollouts import get_rollout

    # Given no rollout, When rollout 7 is asked for, Then the error says so (not "unknown flag 'rollout 7'")
    with pytest.raises(RolloutNotFoundError, match=r"^unknown rollout #7$") as caught, transaction(engine) as s:
        get_rollout(s, 7)
    assert isinstance(caught.value, NotFoundError) and caught.value.rollout_id == 7
