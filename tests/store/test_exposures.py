"""The exposure upsert: counts add up per unit and cell, each batch once, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from rollout.errors import StoreUnavailableError
from rollout.store.db import make_engine
from rollout.store.exposures import exposure_counts, upsert_exposures
from rollout.store.models import Exposure
from tests.harness.tcp_proxy import TcpProxy

A = (1, 3, 2, "current", "free", -42)
B = (1, 3, 2, "new-model", "free", 2**62)


def test_counts_add_up_and_the_seen_span_only_widens(engine: Engine) -> None:
    # Given one batch for two units
    assert upsert_exposures(engine, 1, 1, [(A, 5, 100.0, 200.0), (B, 1, 150.0, 150.0)]) == 2
    # When a later batch and another writer's older one arrive for unit A
    upsert_exposures(engine, 1, 2, [(A, 2, 300.0, 400.0)])
    upsert_exposures(engine, 2, 1, [(A, 1, 50.0, 60.0)])
    # Then A's count is the sum and its span covers every batch; B is untouched
    with Session(engine) as s:
        assert exposure_counts(s, 1) == {A: 8, B: 1}
        first, last = s.execute(select(Exposure.first_at, Exposure.last_at).where(Exposure.unit_hash == -42)).one()
    assert (first, last) == (datetime.fromtimestamp(50, UTC), datetime.fromtimestamp(400, UTC))


def test_a_big_batch_is_one_row_per_key(engine: Engine) -> None:
    rows = [((1, 3, 2, "current", "default", h), 1, 10.0, 10.0) for h in range(6_000)]
    assert upsert_exposures(engine, 1, 1, rows) == 6_000
    assert upsert_exposures(engine, 1, 2, rows[:10]) == 10
    with Session(engine) as s:
        counts = exposure_counts(s, 1)
    assert len(counts) == 6_000 and sum(counts.values()) == 6_010


def test_nothing_to_write_touches_nothing(engine: Engine) -> None:
    assert upsert_exposures(engine, 1, 1, []) == 0


@pytest.mark.parametrize("replayed", [1, 2], ids=["the older batch", "the latest batch"])
def test_a_replayed_batch_adds_nothing(engine: Engine, replayed: int) -> None:
    # Given two batches of one writer stored (their commit replies lost, say)
    batches = {1: [(A, 5, 100.0, 200.0)], 2: [(A, 2, 300.0, 400.0), (B, 3, 300.0, 400.0)]}
    for seq, rows in batches.items():
        assert upsert_exposures(engine, 77, seq, rows) == len(rows)
    # When one of them is sent again, as the writer's retry does
    again = upsert_exposures(engine, 77, replayed, batches[replayed])
    # Then it stores nothing and says so, while the next batch and other writers still count
    assert again == 0
    assert upsert_exposures(engine, 77, 3, [(B, 1, 500.0, 500.0)]) == 1
    assert upsert_exposures(engine, 78, 1, [(B, 1, 500.0, 500.0)]) == 1
    with Session(engine) as s:
        assert exposure_counts(s, 1) == {A: 7, B: 5}


@pytest.mark.postgres
def test_a_batch_whose_commit_reply_was_lost_is_added_once_when_retried(_postgres_db: str,
                                                                        pg_proxy: tuple[TcpProxy, str]) -> None:
    # Given a writer whose next commit is stored but whose reply is lost on the way back
    proxy, url = pg_proxy
    through = make_engine(url)
    rows = [(A, 5, 100.0, 200.0), (B, 1, 150.0, 150.0)]
    proxy.cut_budget = 1
    proxy.set_mode("cut_after_commit")
    # When it sends batch 1, hears a fault, and sends batch 1 again (as the SDK's flusher does)
    with pytest.raises(StoreUnavailableError):
        upsert_exposures(through, 9, 1, rows)
    assert proxy.commits_cut == 1
    assert upsert_exposures(through, 9, 1, rows) == 0
    through.dispose()
    # Then the counts were added once
    direct = make_engine(_postgres_db)  # straight to the database, not through the proxy
    with Session(direct) as s:
        assert exposure_counts(s, 1) == {A: 5, B: 1}
    direct.dispose()
