"""The one snapshot and refresher (rollout.sdk.snapshot) on the in-memory flag source: no database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from rollout.core import FlagState, Phase, Reason
from rollout.sdk.snapshot import Refresher, Snapshot
from rollout.testing.flag_source import InMemoryFlagSource
from tests.harness.waiting import seconds_until


def promoted(key: str = "summarizer", namespace: str = "default", version: int = 1) -> FlagState:
    return FlagState(key=key, salt=f"salt-{key}", baseline="old", candidate="new", phase=Phase.PROMOTED,
                     version=version, namespace=namespace)


@pytest.fixture
def source() -> Iterator[InMemoryFlagSource]:
    source = InMemoryFlagSource([promoted(), promoted("other-flag", namespace="other")])
    yield source
    source.health = "up"  # release any hung read


def test_a_loaded_snapshot_answers_from_its_own_namespace(source: InMemoryFlagSource) -> None:
    # Given the SDK's snapshot of namespace "default"
    snap = Snapshot(source, "default")
    # When it loads
    assert snap.refresh(force=True)
    # Then it holds that namespace's flags only, fresh
    assert set(snap.flags) == {"summarizer"} and snap.loaded and not snap.stale
    assert snap.flags["summarizer"].evaluate("u-1").reason is Reason.STATIC


def test_the_service_snapshot_holds_every_namespace(source: InMemoryFlagSource) -> None:
    snap = Snapshot(source, None)
    snap.refresh(force=True)
    assert set(snap.view("default").flags) == {"summarizer"} and set(snap.view("other").flags) == {"other-flag"}
    # An empty namespace still has a stable document to long-poll on
    assert snap.view("nobody").etag == snap.view("nobody").etag and snap.view("nobody").flags == {}


@pytest.mark.parametrize("namespace", ["default", None])
def test_a_failed_refresh_serves_the_last_flags_as_stale_then_recovers_without_any_change(
        source: InMemoryFlagSource, namespace: str | None) -> None:
    # Given a loaded snapshot
    snap = Snapshot(source, namespace)
    snap.refresh(force=True)
    etag = snap.view("default").etag
    # When the source refuses
    source.health = "refuse"
    assert not snap.refresh()
    # Then the last flags are still answered, with reason STALE, and the document (ETag) is unchanged
    assert snap.stale and snap.refresh_errors == 1 and "refuses" in (snap.last_error or "")
    assert snap.view("default").flags["summarizer"].evaluate("u-1").reason is Reason.STALE
    assert snap.view("default").etag == etag
    # When the source answers again and no flag changed meanwhile
    source.health = "up"
    assert snap.refresh()
    # Then the snapshot is fresh again (the fingerprint alone proves it: nothing is reloaded)
    assert not snap.stale
    assert snap.view("default").flags["summarizer"].evaluate("u-1").reason is Reason.STATIC
    assert snap.refreshes == 1


def test_a_change_made_during_the_outage_is_loaded_on_recovery(source: InMemoryFlagSource) -> None:
    snap = Snapshot(source, "default")
    snap.refresh(force=True)
    source.health = "refuse"
    snap.refresh()
    source.put(promoted(version=2))
    source.health = "up"
    assert snap.refresh()
    assert not snap.stale and snap.flags["summarizer"].state.version == 2


def test_a_snapshot_that_never_loaded_is_not_stale_but_not_loaded(source: InMemoryFlagSource) -> None:
    source.health = "refuse"
    snap = Snapshot(source, "default")
    assert not snap.refresh(force=True)
    assert not snap.loaded and not snap.stale and snap.flags == {} and snap.refresh_errors == 1


class SlowFirstLoad:
    """Wraps a source: the first load reads its rows, then waits for `release` before answering them."""

    def __init__(self, source: InMemoryFlagSource) -> None:
        self.source = source
        self.release = threading.Event()
        self.loads = 0

    def fingerprint(self, namespace):  # type: ignore[no-untyped-def]
        return self.source.fingerprint(namespace)

    def load(self, namespace):  # type: ignore[no-untyped-def]
        self.loads += 1
        answer = self.source.load(namespace)
        if self.loads == 1:
            self.release.wait(5)
        return answer

    def listen(self, wake, stop):  # type: ignore[no-untyped-def]
        return None


def test_an_older_result_never_overwrites_a_newer_one(source: InMemoryFlagSource) -> None:
    # Given a refresh that read version 1 and is slow to answer it
    slow = SlowFirstLoad(source)
    snap = Snapshot(slow, "default")
    old = threading.Thread(target=snap.refresh, kwargs={"force": True})
    old.start()
    seconds_until(lambda: slow.loads == 1)
    # When the flag changes and a newer refresh publishes version 2 first
    source.put(promoted(version=2))
    assert snap.refresh(force=True)
    # And only then the old refresh answers with version 1
    slow.release.set()
    old.join(5)
    # Then the snapshot keeps the newer state
    assert snap.flags["summarizer"].state.version == 2


def test_unchanged_flags_keep_their_built_document(source: InMemoryFlagSource) -> None:
    snap = Snapshot(source, None)
    snap.refresh(force=True)
    before = snap.view("default")
    body = before.body
    source.put(promoted("other-flag", namespace="other", version=3))  # only the other namespace changes
    snap.refresh()
    assert snap.view("default") is before and snap.view("default").body is body
    assert snap.view("other").flags["other-flag"].state.version == 3


def test_listeners_hear_every_change_and_every_recovery(source: InMemoryFlagSource) -> None:
    heard: list[int] = []
    snap = Snapshot(source, "default", on_change=lambda: heard.append(1))
    snap.refresh(force=True)
    snap.refresh()                      # nothing changed: nobody woken
    source.health = "refuse"
    snap.refresh()
    source.health = "up"
    snap.refresh()                      # recovered: woken once
    assert len(heard) == 2


@pytest.mark.parametrize("failure", ["refuse", "hang"])
def test_the_refresher_marks_stale_within_interval_plus_timeout_and_recovers_at_once(
        source: InMemoryFlagSource, failure: str) -> None:
    # Given a refresher polling every 20 ms, giving each refresh 200 ms
    snap = Snapshot(source, "default")
    snap.refresh(force=True)
    refresher = Refresher(snap, interval=0.02, timeout=0.2, listen=False)
    try:
        # When the source fails (refuses, or hangs like a black-holed connection)
        source.health = failure  # type: ignore[assignment]
        to_stale = seconds_until(lambda: snap.stale)
        # Then the snapshot is stale within interval + timeout (plus scheduling slack)
        assert to_stale < 0.02 + 0.2 + 1.0
        assert snap.flags["summarizer"].evaluate("u").reason is Reason.STALE
        # When the source answers again, with no flag changed
        source.health = "up"
        to_fresh = seconds_until(lambda: not snap.stale)
        # Then it is fresh within a poll or two
        assert to_fresh < 1.0
        assert snap.flags["summarizer"].evaluate("u").reason is Reason.STATIC
    finally:
        source.health = "up"
        refresher.stop()


def test_hung_refreshes_are_bounded_and_the_poller_never_hangs(source: InMemoryFlagSource) -> None:
    snap = Snapshot(source, "default")
    snap.refresh(force=True)
    refresher = Refresher(snap, interval=0.01, timeout=0.05, listen=False)
    try:
        source.health = "hang"
        seconds_until(lambda: snap.stale)
        time.sleep(0.5)
        # At most three reads wait in the source at once, however long the partition lasts
        hung = [t for t in threading.enumerate() if t.name == "rollout-snapshot-refresh"]
        assert 1 <= len(hung) <= 3
        assert refresher._poller.is_alive()
    finally:
        source.health = "up"
        refresher.stop()
    seconds_until(lambda: not [t for t in threading.enumerate() if t.name == "rollout-snapshot-refresh"])
