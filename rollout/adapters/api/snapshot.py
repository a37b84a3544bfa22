"""The service's view of flag state: every namespace, compiled, replaced whole on change.

One `ServiceSnapshot` serves all tokens. It is kept current the same way the
SDK keeps its own (`rollout.sdk.snapshot.Refresher`: a cheap fingerprint
query every interval, and on PostgreSQL a LISTEN/NOTIFY wake-up), so the
number of waiting long-poll requests never changes the load on the
database: they wait on an asyncio event that a refresh sets.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from rollout.core import CompiledFlag, FlagState
from rollout.store.flags import fingerprint, flag_to_json, list_flags
from rollout.store.models import Flag

log = logging.getLogger("rollout.api")


def flag_document(state: FlagState) -> dict[str, Any]:
    """A flag as `GET /v1/flags` serves it: enough for an SDK in another language to evaluate locally."""
    doc = flag_to_json(state)
    doc["salt"] = state.salt
    doc["payloads"] = dict(state.payloads)
    return doc


@dataclass(frozen=True, slots=True)
class NamespaceView:
    """One namespace's flags at one moment. `etag` changes exactly when `body` does."""

    namespace: str
    flags: dict[str, CompiledFlag] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    body: bytes = b""
    etag: str = ""

    @classmethod
    def build(cls, namespace: str, flags: dict[str, CompiledFlag], ids: dict[str, int]) -> NamespaceView:
        docs = [flag_document(c.state) for c in flags.values()]
        digest = hashlib.sha256(orjson.dumps(docs, option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]
        etag = f'"{digest}"'
        body = orjson.dumps({"namespace": namespace, "etag": etag, "flags": docs})
        return cls(namespace, flags, ids, body, etag)


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


class ServiceSnapshot:
    """Compiled flags of every namespace. Readers see one consistent version; `refresh` never raises."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._views: dict[str, NamespaceView] = {}
        self.fingerprint: tuple[int, int, int] | None = None
        self.version = 0
        self.loaded = False
        self.stale = False
        self.refreshes = 0
        self.refresh_errors = 0
        self.last_error: str | None = None
        self.loaded_at: float | None = None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def view(self, namespace: str) -> NamespaceView:
        view = self._views.get(namespace)
        if view is None:
            # A namespace with no flags still has a stable ETag, so clients can long-poll it.
            view = NamespaceView.build(namespace, {}, {})
        return view

    def refresh(self, *, force: bool = False) -> bool:
        """Reload if anything changed. On failure keep serving the last state, marked stale."""
        with self._lock:
            try:
                with Session(self._engine) as session:
                    fp = fingerprint(session, namespace=None)
                    if not force and not self.stale and fp == self.fingerprint:
                        return False
                    states = list_flags(session, namespace=None)
                    ids = {(ns, key): i for ns, key, i in session.execute(select(Flag.namespace, Flag.key, Flag.id))}
                grouped: dict[str, dict[str, CompiledFlag]] = {}
                for state in states:
                    grouped.setdefault(state.namespace, {})[state.key] = CompiledFlag(state)
                old = self._views
                views = {}
                for ns, flags in grouped.items():
                    view = NamespaceView.build(ns, flags, {k: ids[(ns, k)] for k in flags})
                    previous = old.get(ns)
                    # Not after an outage: the previous views hold flags compiled as stale.
                    keep = previous is not None and previous.etag == view.etag and not self.stale
                    views[ns] = previous if keep else view  # type: ignore[assignment]
                self._views = views
                self.fingerprint = fp
                self.version = fp[1]
                self.loaded, self.stale = True, False
                self.loaded_at = time.time()
                self.refreshes += 1
            except Exception as exc:  # noqa: BLE001 - the service keeps answering from the last state
                self.refresh_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                if self.loaded and not self.stale:
                    log.warning("rollout: database unreachable, serving the last snapshot: %s", self.last_error)
                    self._views = {
                        ns: NamespaceView(ns, {k: c.as_stale() for k, c in v.flags.items()}, v.ids, v.body, v.etag)
                        for ns, v in self._views.items()
                    }
                    self.stale = True
                return False
        for listener in self._listeners:
            listener()
        return True
