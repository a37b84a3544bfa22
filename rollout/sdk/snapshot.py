"""Keeping the in-memory snapshot current: a cheap version poll, plus LISTEN/NOTIFY on PostgreSQL.

The snapshot is a plain dict of compiled flags that is replaced whole, never
edited, so readers on other threads always see one consistent version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from rollout.core import CompiledFlag
from rollout.store.flags import NOTIFY_CHANNEL, fingerprint, list_flags
from rollout.store.outcomes import flag_ids

log = logging.getLogger("rollout.client")


class Snapshot:
    """The flags one client evaluates from, and how fresh they are."""

    def __init__(self, engine: Engine, namespace: str, on_change: Callable[[], None] | None = None) -> None:
        self._engine = engine
        self._namespace = namespace
        self.flags: dict[str, CompiledFlag] = {}
        self.ids: dict[str, int] = {}
        self.loaded = False
        self.stale = False
        self.fingerprint: tuple[int, int, int] | None = None
        self.refreshes = 0
        self.refresh_errors = 0
        self.last_error: str | None = None
        self.loaded_at: float | None = None
        self._lock = threading.Lock()
        self._on_change = on_change

    def refresh(self, *, force: bool = False) -> bool:
        """Reload if anything changed. Never raises; on failure keeps the last snapshot, marked stale."""
        with self._lock:
            try:
                with Session(self._engine) as session:
                    fp = fingerprint(session, namespace=self._namespace)
                    if not force and not self.stale and fp == self.fingerprint:
                        return False
                    states = list_flags(session, namespace=self._namespace)
                    ids = flag_ids(session, namespace=self._namespace)
                self.ids = ids
                self.flags = {s.key: CompiledFlag(s) for s in states}
                self.fingerprint = fp
                self.loaded = True
                self.stale = False
                self.loaded_at = time.time()
                self.refreshes += 1
            except Exception as exc:  # noqa: BLE001 - apps keep serving the last state
                self.refresh_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                if self.loaded and not self.stale:
                    log.warning("rollout: database unreachable, serving the last snapshot: %s", self.last_error)
                    self.flags = {k: c.as_stale() for k, c in self.flags.items()}
                    self.stale = True
                return False
        if self._on_change is not None:
            self._on_change()
        return True


class Refresher:
    """Polls every `interval` seconds; on PostgreSQL also wakes on NOTIFY within milliseconds."""

    def __init__(self, snapshot: Snapshot, engine: Engine, *, interval: float, listen: bool) -> None:
        self._snapshot = snapshot
        self._engine = engine
        self._interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.notifications = 0
        self._poller = threading.Thread(target=self._poll, name="rollout-snapshot-poller", daemon=True)
        self._poller.start()
        self._listener: threading.Thread | None = None
        if listen and engine.dialect.name == "postgresql":
            self._listener = threading.Thread(target=self._listen, name="rollout-snapshot-listener", daemon=True)
            self._listener.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._poller.join(timeout=5)
        if self._listener is not None:
            self._listener.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if not self._stop.is_set():
                self._snapshot.refresh()

    def _listen(self) -> None:
        url = self._engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    backoff = 0.1
                    # A change may have landed while we were (re)connecting.
                    self._wake.set()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self.notifications += 1
                            self._wake.set()
            except Exception as exc:  # noqa: BLE001 - fall back to polling, reconnect with backoff
                log.debug("rollout: LISTEN connection lost: %s", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
