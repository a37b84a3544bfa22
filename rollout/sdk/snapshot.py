"""The one flag snapshot and its refresher, shared by the SDK (one namespace) and the service (all).

A `Snapshot` holds compiled flags per namespace, replaced whole, never edited,
so readers on other threads always see one consistent version. It reads from
a `rollout.ports.FlagSource` (the database in production, an in-memory fake in
tests) and tells the truth about how fresh it is:

* a refresh that fails marks it STALE at once: every answer keeps coming from
  the last snapshot, with reason STALE;
* a refresh that does not answer (a network partition) is given up on after
  `timeout` seconds by the `Refresher` and marks it STALE all the same, so the
  time to STALE is bounded by `interval + timeout` whatever the network does;
* the first refresh that succeeds again makes it fresh, even when no flag
  changed meanwhile (the fingerprint then matches and nothing is reloaded).

Refreshes may overlap (a hung one is abandoned, not waited for): each takes a
sequence number when it starts, and a result older than one already
published is dropped, so an old read can never overwrite a newer one.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from rollout.core import CompiledFlag, FlagState
from rollout.ports import Fingerprint, FlagSource
from rollout.store.flags import flag_to_json
from rollout.store.snapshot_source import SqlFlagSource

log = logging.getLogger("rollout.client")

DEFAULT_REFRESH_TIMEOUT = 3.0
"""Seconds a refresh may take before the snapshot is marked STALE (with a 0.25-1 s poll: STALE within 5 s)."""
MAX_REFRESHES_IN_FLIGHT = 3
"""Hung refreshes kept waiting at most; each may hold a database connection until its socket gives up."""


def flag_document(state: FlagState) -> dict[str, Any]:
    """A flag as `GET /v1/flags` serves it: enough for an SDK in another language to evaluate locally."""
    doc = flag_to_json(state)
    doc["salt"] = state.salt
    doc["payloads"] = dict(state.payloads)
    return doc


class NamespaceView:
    """One namespace's flags at one moment. `body` and `etag` (the HTTP document) are built on first use.

    A stale view shares the fresh one's document and ETag: the flags did not
    change, only our knowledge of them aged, so long-polls must not wake.
    """

    __slots__ = ("_doc", "flags", "ids", "namespace", "stale")

    def __init__(self, namespace: str, flags: dict[str, CompiledFlag], ids: dict[str, int], *,
                 stale: bool = False, doc: list[bytes] | None = None) -> None:
        self.namespace = namespace
        self.flags = flags
        self.ids = ids
        self.stale = stale
        self._doc = doc if doc is not None else []  # [body, etag] once built; shared with the stale copy

    def as_stale(self) -> NamespaceView:
        return NamespaceView(self.namespace, {k: c.as_stale() for k, c in self.flags.items()}, self.ids,
                             stale=True, doc=self._doc)

    def _build(self) -> list[bytes]:
        if not self._doc:
            # Only the HTTP service serves the document, and orjson comes with its extra (`server`);
            # the SDK's core install must import without it.
            import orjson

            docs = [flag_document(c.state) for c in self.flags.values()]
            digest = hashlib.sha256(orjson.dumps(docs, option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]
            etag = f'"{digest}"'
            self._doc[:] = [orjson.dumps({"namespace": self.namespace, "etag": etag, "flags": docs}),
                            etag.encode()]
        return self._doc

    @property
    def body(self) -> bytes:
        return self._build()[0]

    @property
    def etag(self) -> str:
        return self._build()[1].decode()

    def same_flags(self, other: NamespaceView) -> bool:
        """Whether `other` holds the same flag states (then this view, and its built document, can stay)."""
        return self.ids == other.ids and self.flags.keys() == other.flags.keys() and all(
            other.flags[k].state == c.state for k, c in self.flags.items())


class Snapshot:
    """The flags one client (one namespace) or the service (`namespace=None`: all) evaluates from."""

    def __init__(self, source: FlagSource | Engine, namespace: str | None,
                 on_change: Callable[[], None] | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.source: FlagSource = SqlFlagSource(source) if isinstance(source, Engine) else source
        self.namespace = namespace
        self._clock = clock
        self._fresh: dict[str, NamespaceView] = {}
        self._views: dict[str, NamespaceView] = {}  # what readers get: `_fresh`, or its stale copies
        # The SDK's own namespace, kept as plain attributes: assign() reads them on every call.
        self.flags: dict[str, CompiledFlag] = {}
        self.ids: dict[str, int] = {}
        self.fingerprint: Fingerprint | None = None
        self.loaded = False
        self.stale = False
        self.refreshes = 0          # reloads that changed the flags
        self.refresh_errors = 0     # refreshes that failed or timed out
        self.last_error: str | None = None
        self.loaded_at: float | None = None        # wall time of the last reload
        self.last_contact: float | None = None     # clock() of the last refresh the source answered
        self._listeners: list[Callable[[], None]] = [on_change] if on_change is not None else []
        self._lock = threading.Lock()              # held only to publish, never across I/O
        self._sequence = itertools.count(1)
        self._published = 0                        # sequence number of the newest result published

    # --- reading -----------------------------------------------------------------------------

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def view(self, namespace: str) -> NamespaceView:
        view = self._views.get(namespace)
        if view is None:
            # A namespace with no flags still has a stable ETag, so clients can long-poll it.
            view = NamespaceView(namespace, {}, {}, stale=self.stale)
        return view

    @property
    def version(self) -> int:
        """Sum of flag versions over everything loaded: rises with every change."""
        return self.fingerprint[1] if self.fingerprint else 0

    def namespace_version(self, namespace: str) -> int:
        """Sum of flag versions in one namespace (what a tenant may see of the service's state)."""
        return sum(c.state.version for c in self.view(namespace).flags.values())

    # --- refreshing --------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> bool:
        """Reload if anything changed; True when what readers see changed. Never raises.

        On failure the last snapshot stays, marked stale. Safe to call from
        several threads at once; the newest result wins.
        """
        sequence = next(self._sequence)
        try:
            fp = self.source.fingerprint(self.namespace)
            if not force and self.loaded and fp == self.fingerprint:
                return self._back_in_touch(sequence)
            fp, rows = self.source.load(self.namespace)
        except Exception as exc:  # noqa: BLE001 - apps keep serving the last state
            self.mark_stale(f"{type(exc).__name__}: {exc}", sequence=sequence)
            return False
        return self._publish(sequence, fp, rows)

    def mark_stale(self, reason: str, *, sequence: int | None = None) -> None:
        """The source failed or did not answer: keep the last flags, answered with reason STALE."""
        with self._lock:
            if sequence is not None and sequence < self._published:
                return  # a newer refresh got through meanwhile
            self.refresh_errors += 1
            self.last_error = reason[:500]
            if self.loaded and not self.stale:
                log.warning("rollout: database unreachable, serving the last snapshot: %s", self.last_error)
                self._serve({ns: v.as_stale() for ns, v in self._fresh.items()}, stale=True)

    def _back_in_touch(self, sequence: int) -> bool:
        with self._lock:
            if sequence < self._published:
                return False
            self._published = sequence
            self.last_contact = self._clock()
            if not self.stale:
                return False
            self._serve(self._fresh, stale=False)
        log.warning("rollout: database reachable again, serving fresh flags")
        self._notify()
        return True

    def _publish(self, sequence: int, fp: Fingerprint, rows: Any) -> bool:
        grouped: dict[str, tuple[dict[str, CompiledFlag], dict[str, int]]] = {}
        for state, flag_id in rows:
            flags, ids = grouped.setdefault(state.namespace, ({}, {}))
            flags[state.key] = CompiledFlag(state)
            ids[state.key] = flag_id
        with self._lock:
            if sequence < self._published:
                return False
            old = self._fresh
            fresh = {}
            for ns, (flags, ids) in grouped.items():
                view = NamespaceView(ns, flags, ids)
                previous = old.get(ns)
                fresh[ns] = previous if previous is not None and view.same_flags(previous) else view
            was_stale = self.stale
            self._fresh = fresh
            self._serve(fresh, stale=False)
            self._published = sequence
            self.fingerprint = fp
            self.loaded = True
            self.loaded_at = time.time()
            self.last_contact = self._clock()
            self.refreshes += 1
        if was_stale:
            log.warning("rollout: database reachable again, serving fresh flags")
        self._notify()
        return True

    def _serve(self, views: dict[str, NamespaceView], *, stale: bool) -> None:
        own = views.get(self.namespace or "default")
        self._views, self.stale = views, stale
        self.flags, self.ids = (own.flags, own.ids) if own is not None else ({}, {})

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()


class Refresher:
    """Refreshes every `interval` seconds, and at once when the source announces a change (NOTIFY).

    Each refresh runs on its own short-lived thread and is given `timeout`
    seconds: past that the snapshot is marked STALE and the next tick starts
    a new refresh beside the hung one (at most MAX_REFRESHES_IN_FLIGHT), so a
    black-holed connection can neither hang the poller nor keep the snapshot
    stale once the database answers again on a new connection.
    """

    def __init__(self, snapshot: Snapshot, *, interval: float, listen: bool = True,
                 timeout: float = DEFAULT_REFRESH_TIMEOUT) -> None:
        self._snapshot = snapshot
        self._interval = interval
        self._timeout = timeout
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.notifications = 0
        self._in_flight: list[tuple[float, threading.Thread]] = []
        self._poller = threading.Thread(target=self._poll, name="rollout-snapshot-poller", daemon=True)
        self._poller.start()
        self._listener: threading.Thread | None = None
        if listen:
            self._listener = threading.Thread(target=snapshot.source.listen, args=(self._notified, self._stop),
                                              name="rollout-snapshot-listener", daemon=True)
            self._listener.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._poller.join(timeout=5)
        if self._listener is not None:
            self._listener.join(timeout=5)

    def _notified(self) -> None:
        self.notifications += 1
        self._wake.set()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if not self._stop.is_set():
                self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        self._in_flight = [(started, t) for started, t in self._in_flight if t.is_alive()]
        if self._in_flight and now - self._in_flight[-1][0] < self._timeout:
            return  # the last refresh is still within its time
        if len(self._in_flight) >= MAX_REFRESHES_IN_FLIGHT:
            self._snapshot.mark_stale(f"{len(self._in_flight)} refreshes hung for over {self._timeout:g} s")
            return
        thread = threading.Thread(target=self._snapshot.refresh, name="rollout-snapshot-refresh", daemon=True)
        thread.start()
        self._in_flight.append((now, thread))
        thread.join(self._timeout)
        if thread.is_alive():
            self._snapshot.mark_stale(f"the database did not answer within {self._timeout:g} s")


__all__ = ["DEFAULT_REFRESH_TIMEOUT", "NamespaceView", "Refresher", "Snapshot", "flag_document"]
