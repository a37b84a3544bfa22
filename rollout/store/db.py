"""Engines and sessions. Callers own transactions; store functions never commit."""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rollout.errors import InvalidInputError, StoreUnavailableError, VersionConflictError
from rollout.store.retry import is_transient

T = TypeVar("T")

DEFAULT_DATABASE_URL = "sqlite:///rollout.db"


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ROLLOUT_DATABASE_URL, else ./rollout.db.

    Plain `postgresql://` URLs are taken to mean psycopg 3, the driver we ship.
    """
    url = url or os.environ.get("ROLLOUT_DATABASE_URL") or DEFAULT_DATABASE_URL
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInputError(f"not a database URL: {url!r}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if not (parsed.drivername.startswith("postgresql") or parsed.drivername.startswith("sqlite")):
        raise InvalidInputError(f"unsupported database {parsed.drivername!r}: use sqlite or postgresql")
    return parsed.render_as_string(hide_password=False)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


class ConnectionSettings(BaseSettings):
    """How long a PostgreSQL connection may hang before it counts as dead (seconds); SQLite ignores these.

    Without them a partition blocks a thread for as long as the kernel keeps a
    TCP connection (minutes to hours): the flusher, the poller, a controller's
    check. From the environment as ROLLOUT_DB_CONNECT_TIMEOUT and so on.
    """

    model_config = SettingsConfigDict(env_prefix="ROLLOUT_DB_", frozen=True)

    connect_timeout: int = 5          # libpq's: the whole connection set-up, in whole seconds
    statement_timeout: float = 30.0   # server side: no statement runs longer (0: no limit)
    keepalives_idle: int = 5          # TCP keepalives: first probe after this idle time...
    keepalives_interval: int = 2      # ...then one probe every this...
    keepalives_count: int = 3         # ...and the connection is dead after this many unanswered
    tcp_user_timeout: float = 10.0    # data sent but not acknowledged for this long: dead (Linux)
    io_timeout: float = 40.0          # client side: a guarded unit of work (see io_deadline) is cut after this

    def connect_args(self) -> dict[str, Any]:
        return {
            "connect_timeout": max(1, self.connect_timeout),
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle,
            "keepalives_interval": self.keepalives_interval,
            "keepalives_count": self.keepalives_count,
            "tcp_user_timeout": int(self.tcp_user_timeout * 1000),
            "options": f"-c statement_timeout={int(self.statement_timeout * 1000)}",
        }


def make_engine(url: str | None = None, *, connection: ConnectionSettings | None = None,
                **kwargs: Any) -> Engine:
    """An engine for this URL. On PostgreSQL, connections get `connection`'s timeouts (default: from the env).

    A `connect_args` passed in is merged over those settings, key by key.
    """
    url = database_url(url)
    if url.startswith("sqlite"):
        # A writer and a reader (app SDK, flow, CLI) share one file: WAL lets them
        # proceed together, and busy_timeout waits out a writer instead of failing.
        # isolation_level="IMMEDIATE": the transaction sqlite3 opens before the first write is
        # BEGIN IMMEDIATE, which takes the write lock at once and waits for it under busy_timeout.
        # A plain (deferred) BEGIN first reads, then upgrades; under a stream of outcome writes the
        # upgrade fails at once with "database is locked" (SQLite cannot wait there without risking
        # a deadlock): measured with bench/rollback_load.py, manual rollbacks failed that way.
        # Reads still open no transaction, so they never take the write lock.
        engine = create_engine(url, connect_args={"timeout": 30, "isolation_level": "IMMEDIATE"}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    settings = connection if connection is not None else ConnectionSettings()
    kwargs["connect_args"] = {**settings.connect_args(), **kwargs.get("connect_args", {})}  # type: ignore[dict-item]
    pre_ping = kwargs.pop("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    _io_timeouts[engine.dialect] = settings.io_timeout  # read by io_deadline
    if pre_ping:
        _guarded_ping(engine, float(max(1, settings.connect_timeout)))
    return engine


class _Watchdog:
    """One daemon thread that shuts down the sockets of guarded work that ran past its deadline.

    One thread for the process rather than a timer per unit of work: arming and
    disarming are a dict write under a lock, cheap enough for every checkout.
    """

    TICK = 0.1  # seconds: how late past its deadline a cut may come

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, int]] = {}  # token -> (deadline, socket fd)
        self._next = 0
        self._thread: threading.Thread | None = None

    def arm(self, fd: int, seconds: float) -> int:
        with self._lock:
            self._next += 1
            self._armed[self._next] = (time.monotonic() + seconds, fd)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rollout-io-watchdog", daemon=True)
                self._thread.start()
            return self._next

    def disarm(self, token: int) -> bool:
        """True if the work finished in time; False if its socket was cut."""
        with self._lock:
            return self._armed.pop(token, None) is not None

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            with self._lock:
                expired = [t for t, (deadline, _fd) in self._armed.items() if deadline <= now]
                fds = [self._armed.pop(t)[1] for t in expired]
                for fd in fds:  # under the lock, so a disarmed (and maybe reused) fd is never cut
                    _shutdown(fd)


_watchdog = _Watchdog()
# Each engine's io_timeout, by its dialect (one per engine, shared with its execution-option copies).
_io_timeouts: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


@contextmanager
def _guarded(driver_connection: Any, seconds: float | None) -> Iterator[None]:
    if not seconds or driver_connection is None:
        yield
        return
    token = _watchdog.arm(driver_connection.pgconn.socket, seconds)
    in_time = True
    try:
        yield
    finally:
        in_time = _watchdog.disarm(token)
    if not in_time:
        raise StoreUnavailableError(f"the database did not answer within {seconds:g} s; the connection was cut")


@contextmanager
def io_deadline(conn: Connection, seconds: float | None = None) -> Iterator[None]:
    """Cut this PostgreSQL connection if the work inside takes longer than `seconds` (default: the engine's).

    The server's statement_timeout cannot help when the server never hears the
    statement, and keepalives and tcp_user_timeout cannot when something on the
    path (a proxy, a NAT box) acknowledges the bytes and then holds them: a
    partition that looks healthy to the kernel. So a watchdog shuts the socket
    down; the blocked call then fails at once, the connection is dropped from
    the pool, and the next try connects afresh. Covers the commit too when the
    transaction is begun inside. No-op on SQLite.
    """
    if conn.dialect.name != "postgresql":
        yield
        return
    limit = _io_timeouts.get(conn.dialect) if seconds is None else seconds
    try:
        with _guarded(conn.connection.driver_connection, limit):
            yield
    except BaseException:
        if not conn.invalidated and conn.connection.driver_connection.closed:  # type: ignore[union-attr]
            conn.invalidate()
        raise


def _guarded_ping(engine: Engine, seconds: float) -> None:
    """pool_pre_ping, but bounded: a checkout of a connection that a partition froze fails in `seconds`.

    SQLAlchemy's own pre-ping waits for the ping's answer without a limit. Raising
    DisconnectionError makes the pool drop the connection and hand out a fresh one.
    """

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_conn, record):  # type: ignore[no-untyped-def]
        record.info["fresh"] = True  # just connected (under connect_timeout): no ping needed

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn, record, _proxy):  # type: ignore[no-untyped-def]
        if record.info.pop("fresh", False):
            return
        try:
            with _guarded(dbapi_conn, seconds):
                engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure: this connection is not to be used
            raise DisconnectionError(f"pre-ping failed: {exc}") from exc


def _shutdown(fd: int) -> None:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def store_faults() -> Iterator[None]:
    """Turn the driver's "the database is not there" faults into `StoreUnavailableError`.

    What counts is `retry.is_transient` (unreachable, connection lost, timed
    out, SQLite busy), so "unavailable" and "worth retrying" are one rule. The
    driver's error stays as `__cause__`; answers such as a constraint
    violation pass through unchanged.
    """
    try:
        yield
    except (SQLAlchemyError, *_DRIVER_FAULTS) as exc:
        if isinstance(exc, SQLAlchemyError) and not is_transient(exc):
            raise
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise StoreUnavailableError(f"database unavailable: {detail}") from exc


# The PostgreSQL COPY path speaks to psycopg directly, so its faults arrive unwrapped.
_DRIVER_FAULTS: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError,
                                               sqlite3.OperationalError)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error; faults of the database are `StoreUnavailableError`."""
    with store_faults(), session_factory(engine)() as session, session.begin():
        yield session


PRIORITY_STALE = 10.0  # seconds: a marker older than this was left by a crashed process; ignore it
PRIORITY_WAIT = 3.0    # seconds a bulk writer defers to a flag change at most, per chunk


def _priority_marker(engine: Engine) -> str | None:
    """The file beside a SQLite database that says "a flag change is waiting for the write lock"."""
    if engine.dialect.name != "sqlite":
        return None
    path = engine.url.database
    return None if not path or path == ":memory:" else f"{path}-flag-change"


@contextmanager
def flag_change_priority(engine: Engine) -> Iterator[None]:
    """On SQLite, ask bulk writers (outcome flushers) to step aside while this flag change runs.

    SQLite has one writer at a time and waiters only poll for the lock, so a
    rollback polling among several app processes that flush outcomes flat out
    lost the race for seconds at a time (p99 14 s in bench/rollback_load.py).
    The marker file makes flushers wait before their next chunk (see
    `defer_to_flag_changes`), so the change gets the lock as soon as the chunk
    in progress commits. Nothing on PostgreSQL, which has row locks.
    """
    marker = _priority_marker(engine)
    if marker is None:
        yield
        return
    token = f"{marker}.{os.getpid()}.{threading.get_ident()}"
    try:
        with open(token, "w"):
            pass
        os.replace(token, marker)  # atomic; two changers at once share one marker, the last removes it
    except OSError:
        marker = None
    try:
        yield
    finally:
        if marker is not None:
            try:
                os.unlink(marker)
            except OSError:
                pass


def defer_to_flag_changes(engine: Engine) -> None:
    """Before a bulk write on SQLite: wait (bounded) while a flag change is waiting for the write lock."""
    marker = _priority_marker(engine)
    if marker is None:
        return
    deadline = time.monotonic() + PRIORITY_WAIT
    while time.monotonic() < deadline:
        try:
            age = time.time() - os.stat(marker).st_mtime
        except OSError:
            return
        if age > PRIORITY_STALE:
            return
        time.sleep(0.005)


def retry_transaction(engine: Engine, work: Callable[[Session], T], *, attempts: int = 8) -> T:
    """Run `work` in a transaction; if someone changed the flag under it, run it again on the new state.

    For changes that mean "whatever the flag is now" (a manual rollback, a
    hand-set percentage), never for the controller's own compare-and-set
    writes, which must lose to a human. On SQLite these changes go ahead of
    outcome writes (see `flag_change_priority`).
    """
    for attempt in range(attempts):
        try:
            with flag_change_priority(engine), transaction(engine) as session:
                return work(session)
        except VersionConflictError:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
    raise AssertionError("unreachable")
