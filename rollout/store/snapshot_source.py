"""The SQL side of the flag snapshot: fingerprint and flags from the database, NOTIFY on PostgreSQL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import psycopg
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from rollout.core import FlagState
from rollout.ports import Fingerprint
from rollout.store.flags import NOTIFY_CHANNEL, fingerprint, list_flags
from rollout.store.models import Flag

log = logging.getLogger("rollout.client")

LISTEN_CONNECT_TIMEOUT = 5  # seconds; libpq's connect_timeout for the LISTEN connection


class SqlFlagSource:
    """`rollout.ports.FlagSource` on our tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def fingerprint(self, namespace: str | None) -> Fingerprint:
        with Session(self.engine) as session:
            return fingerprint(session, namespace=namespace)

    def load(self, namespace: str | None) -> tuple[Fingerprint, Sequence[tuple[FlagState, int]]]:
        with Session(self.engine) as session:
            fp = fingerprint(session, namespace=namespace)
            states = list_flags(session, namespace=namespace)
            query = select(Flag.namespace, Flag.key, Flag.id)
            if namespace is not None:
                query = query.where(Flag.namespace == namespace)
            ids = {(ns, key): flag_id for ns, key, flag_id in session.execute(query)}
        return fp, [(s, ids[(s.namespace, s.key)]) for s in states if (s.namespace, s.key) in ids]

    def listen(self, wake: Callable[[], None], stop: threading.Event) -> None:
        """On PostgreSQL: LISTEN on the flags channel, reconnecting with backoff; elsewhere nothing to hear."""
        if self.engine.dialect.name != "postgresql":
            return
        dsn = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        backoff = 0.1
        while not stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=LISTEN_CONNECT_TIMEOUT) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    backoff = 0.1
                    wake()  # a change may have landed while we were (re)connecting
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            wake()
            except Exception as exc:  # noqa: BLE001 - polling goes on; reconnect with backoff
                log.debug("rollout: LISTEN connection lost: %s", exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)


__all__ = ["SqlFlagSource"]
