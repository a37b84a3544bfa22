"""The service's view of flag state, and the signal that wakes long-polls.

The service evaluates from the very snapshot the SDK uses
(`rollout.sdk.snapshot.Snapshot` with `namespace=None`: every namespace,
compiled, replaced whole on change), kept current by the same `Refresher`
(a cheap fingerprint query every interval, a LISTEN/NOTIFY wake-up on
PostgreSQL, a deadline on every refresh). So the number of waiting long-poll
requests never changes the load on the database: they wait on an asyncio
event that a refresh sets.
"""

from __future__ import annotations

import asyncio

from rollout.sdk.snapshot import NamespaceView, Snapshot, flag_document


class ChangeSignal:
    """Wakes every coroutine waiting for a change; set from the refresher's thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    @property
    def event(self) -> asyncio.Event:
        if self._event is None:
            self.bind(asyncio.get_running_loop())
        assert self._event is not None
        return self._event

    def _fire(self) -> None:
        # Swap in a fresh event before setting the old one, so a waiter that
        # re-arms after waking waits for the *next* change.
        old, self._event = self._event, asyncio.Event()
        if old is not None:
            old.set()

    def fire_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._fire)
            except RuntimeError:  # the loop closed between the check and the call
                pass


__all__ = ["ChangeSignal", "NamespaceView", "Snapshot", "flag_document"]
