"""The SDK's write path under real network faults (PostgreSQL through tests/harness/tcp_proxy.py).

Each test drives a real RolloutClient through the fault-injecting proxy and
then counts, straight from the database: every acknowledged outcome stored,
none twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, text

from rollout import RolloutClient
from rollout.errors import ClientClosedError
from rollout.store import flags as store
from rollout.store.db import make_engine, transaction
from rollout.store.models import Flag, Rollout, utcnow
from tests.harness.faults import FAST, outcome_counts, record_until_closed
from tests.harness.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

@pytest.fixture
def direct(_postgres_db: str, pg_proxy: tuple[TcpProxy, str]) -> Iterator[Engine]:
    """An engine straight to the test database (not through the proxy), with one flag in it."""
    engine = make_engine(_postgres_db)
    with transaction(engine) as s:
        store.create_flag(s, "summarizer", variants=["current", "new-model"], actor="test")
        store.set_allocation(s, "summarizer", 5_000, actor="test")
    yield engine
    engine.dispose()


def _client(url: str, **kwargs: object) -> RolloutClient:
    engine = make_engine(url, connection=FAST)
    return RolloutClient(engine=engine, listen=False, refresh_interval=3600, flush_interval=0.02, **kwargs)


def _record(client: RolloutClient, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        client.record("summarizer", f"user-{i}", {"latency_ms": 100.0 + i, "error": 0})


def test_lost_commit_replies_store_every_outcome_exactly_once(direct: Engine, pg_proxy) -> None:  # type: ignore[no-untyped-def]
    # Given a client whose next 10 commits are stored but their replies lost
    proxy, url = pg_proxy
    client = _client(url, batch_size=100)
    proxy.cut_budget = 10
    proxy.set_mode("cut_after_commit")
    # When it records 3,000 outcomes (2 metrics each) and flushes
    _record(client, 3_000)
    assert client.flush(timeout=120)
    stats = client.stats
    client.close()
    # Then the 10 replies were lost, each batch was retried, and nothing is stored twice
    assert proxy.commits_cut == 10
    assert stats.write_errors >= 10
    rows, keys, extra = outcome_counts(direct)
    assert (keys, rows, extra) == (3_000, 6_000, 0)
    assert stats.outcomes_accepted == stats.outcomes_written == 3_000 and stats.outcomes_dropped == 0


def test_lost_commit_replies_count_every_exposure_exactly_once(direct: Engine, pg_proxy) -> None:  # type: ignore[no-untyped-def]
    # Given a flag in a running rollout, and a client whose next 5 commits are stored but their replies lost
    proxy, url = pg_proxy
    with transaction(direct) as s:
        flag_id = s.scalar(select(Flag.id).where(Flag.key == "summarizer"))
        s.add(Rollout(flag_id=flag_id, active_flag_id=flag_id, plan={}, status="running", stage_index=1,
                      started_by="t", lease_owner="t", started_at=utcnow(), updated_at=utcnow()))
    client = _client(url, batch_size=100)
    proxy.cut_budget = 5
    proxy.set_mode("cut_after_commit")
    # When 1,000 units are assigned 3 times each (exposure batches of 100 rows) and the client flushes
    for _ in range(3):
        for i in range(1_000):
            client.assign("summarizer", f"user-{i}")
    assert client.flush(timeout=120)
    stats = client.stats
    client.close()
    # Then replies were lost and batches retried, yet every unit has one row counting exactly its 3 exposures
    assert proxy.commits_cut == 5
    assert stats.write_errors >= 5
    with direct.connect() as conn:
        counts = conn.execute(text("SELECT count, count(*) FROM exposures GROUP BY count")).all()
    assert counts == [(3, 1_000)]
    assert stats.exposure_rows_written >= 1_000 and stats.exposures_dropped == 0


def test_connection_resets_lose_nothing_and_store_nothing_twice(direct: Engine, pg_proxy) -> None:  # type: ignore[no-untyped-def]
    # Given a client recording steadily
    proxy, url = pg_proxy
    client = _client(url, batch_size=50)
    done = threading.Event()

    def app() -> None:
        for burst in range(40):
            _record(client, 100, start=burst * 100)
            time.sleep(0.01)
        done.set()

    thread = threading.Thread(target=app)
    thread.start()
    # When the server goes away and comes back five times (open connections are cut each time)
    for _ in range(5):
        time.sleep(0.15)
        proxy.set_mode("refuse")
        time.sleep(0.3)
        proxy.set_mode("pass")
    thread.join()
    assert done.is_set()
    assert client.flush(timeout=120)
    stats = client.stats
    client.close()
    # Then every acknowledged outcome is stored once
    rows, keys, extra = outcome_counts(direct)
    assert (keys, rows, extra) == (4_000, 8_000, 0)
    assert stats.outcomes_written == 4_000 and stats.outcomes_dropped == 0
    assert stats.write_errors >= 1


def test_a_partition_fails_writes_in_bounded_time_and_the_flusher_reconnects(direct: Engine, pg_proxy) -> None:  # type: ignore[no-untyped-def]
    # Given a client that has written once (so its pool holds a live connection)
    proxy, url = pg_proxy
    client = _client(url, batch_size=100)
    _record(client, 100)
    assert client.flush(timeout=30)
    # When the network black-holes (nothing moves, nothing resets) and the app keeps recording
    proxy.set_mode("blackhole")
    _record(client, 500, start=100)
    started = time.monotonic()
    assert client.flush(timeout=2) is False
    while client.stats.write_errors == 0 and time.monotonic() - started < 20:
        time.sleep(0.1)
    noticed = time.monotonic() - started
    # Then the flusher noticed within the bounded time, and kept the outcomes (none dropped)
    assert client.stats.write_errors >= 1, "a black-holed write never failed"
    assert noticed < 10, noticed
    assert client.stats.outcomes_dropped == 0 and client.stats.outcomes_buffered >= 1
    # And when the network heals, it reconnects and stores everything, once
    proxy.set_mode("pass")
    healed = time.monotonic()
    assert client.flush(timeout=60)
    recovered = time.monotonic() - healed
    client.close()
    rows, keys, extra = outcome_counts(direct)
    assert (keys, rows, extra) == (600, 1_200, 0)
    assert recovered < 30, recovered


def test_close_with_the_database_down_reports_exactly_what_it_could_not_store(direct: Engine, pg_proxy) -> None:  # type: ignore[no-untyped-def]
    # Given a client with 1,000 outcomes buffered and the database down
    proxy, url = pg_proxy
    client = _client(url, batch_size=5_000)
    proxy.set_mode("refuse")
    _record(client, 1_000)
    # When it is closed with a 3 s timeout
    started = time.monotonic()
    result = client.close(timeout=3)
    took = time.monotonic() - started
    # Then close() returned in bounded time and says what it could not store, and counts it
    assert took < 3 + 10, took
    assert result.stored + result.unstored == 1_000
    assert result.unstored == 1_000 - outcome_counts(direct)[1]
    stats = client.stats
    assert stats.outcomes_unstored_at_close == result.unstored and stats.outcomes_dropped == result.unstored
    # And the client takes nothing more
    with pytest.raises(ClientClosedError):
        client.record("summarizer", "late", {"error": 0})


def test_close_while_four_threads_record_stores_everything_it_accepted(direct: Engine, pg_proxy) -> None:  # type: ignore[no-untyped-def]
    # Given 4 threads recording as fast as they can
    _proxy, url = pg_proxy
    client = _client(url, batch_size=500)
    accepted = [0, 0, 0, 0]
    refused = [0, 0, 0, 0]

    app = record_until_closed(client, accepted, refused)

    threads = [threading.Thread(target=app, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    # When another thread closes the client mid-stream
    result = client.close(timeout=60)
    for t in threads:
        t.join()
    # Then every record() that returned normally was stored, once, and every later one raised
    rows, keys, extra = outcome_counts(direct)
    assert result.complete and result.unstored == 0
    assert keys == sum(accepted) == client.stats.outcomes_written and extra == 0 and rows == 2 * keys
    assert 0 < result.stored <= keys  # the part close() itself flushed
    assert all(r == 1 for r in refused)
