"""The SDK's snapshot through a real fault: PostgreSQL behind a TCP proxy that refuses or black-holes.

Figures (time to STALE, time to recover) are printed; run with -s to see them.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from rollout.core import Reason
from rollout.sdk import RolloutClient
from rollout.store import flags as store
from rollout.store.db import make_engine, transaction
from tests.harness.tcp_proxy import TcpProxy
from tests.harness.waiting import seconds_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

INTERVAL = 0.2
TIMEOUT = 1.0


@pytest.fixture
def seeded(pg_proxy: tuple[TcpProxy, str]) -> tuple[TcpProxy, str, Engine]:
    proxy, url = pg_proxy
    direct = make_engine(url.replace(f":{proxy.port}/", f":{proxy.upstream[1]}/"))
    with transaction(direct) as s:
        store.create_flag(s, "summarizer", variants=["old", "new"], actor="test")
        store.promote(s, "summarizer", actor="test")
    return proxy, url, direct


@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
def test_the_sdk_turns_stale_within_bounds_and_recovers_when_no_flag_changed(
        seeded: tuple[TcpProxy, str, Engine], fault: str) -> None:
    proxy, url, direct = seeded
    # Given a client through the proxy, fresh
    client = RolloutClient(url, refresh_interval=INTERVAL, refresh_timeout=TIMEOUT, listen=False)
    try:
        assert client.assign("summarizer", "u-1").reason is Reason.STATIC and not client.stats.stale
        # When the database goes away (refused, or silent like a partition)
        proxy.set_mode(fault)  # type: ignore[arg-type]
        to_stale = seconds_until(lambda: client.stats.stale, within=10)
        # Then within interval + timeout the client says so, and keeps answering from the last snapshot
        answer = client.assign("summarizer", "u-1")
        assert answer.reason is Reason.STALE and answer.variant == "new"
        assert to_stale <= INTERVAL + TIMEOUT + 1.0, to_stale
        assert client.stats.refresh_errors >= 1
        # When the database is back, with no flag changed meanwhile
        proxy.set_mode("pass")
        to_fresh = seconds_until(lambda: not client.stats.stale, within=15)
        # Then the client is fresh again at once
        assert client.assign("summarizer", "u-1").reason is Reason.STATIC
        assert to_fresh <= 3 * INTERVAL + 2.0, to_fresh
        print(f"\nSDK {fault}: STALE after {to_stale:.2f} s, fresh {to_fresh:.2f} s after the database was back")
    finally:
        proxy.set_mode("pass")
        client.close(timeout=5)
        direct.dispose()


def test_a_change_made_during_a_partition_is_seen_once_it_heals(seeded: tuple[TcpProxy, str, Engine]) -> None:
    proxy, url, direct = seeded
    client = RolloutClient(url, refresh_interval=INTERVAL, refresh_timeout=TIMEOUT, listen=False)
    try:
        proxy.set_mode("blackhole")
        seconds_until(lambda: client.stats.stale, within=10)
        # Given a rollback made while the client is partitioned from the database
        with transaction(direct) as s:
            store.rollback(s, "summarizer", actor="test", reason="partition test")
        # When the partition heals
        proxy.set_mode("pass")
        # Then the client serves the rolled-back flag, fresh
        seconds_until(lambda: client.assign("summarizer", "u-1").reason is Reason.DISABLED, within=15)
        assert not client.stats.stale
    finally:
        proxy.set_mode("pass")
        client.close(timeout=5)
        direct.dispose()
