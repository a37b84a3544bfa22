"""Engines and sessions. Callers own transactions; store functions never commit."""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
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


def make_engine(url: str | None = None, **kwargs: object) -> Engine:
    url = database_url(url)
    if url.startswith("sqlite"):
        # A writer and a reader (app SDK, flow, CLI) share one file: WAL lets them
        # proceed together, and busy_timeout waits out a writer instead of failing.
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


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


def retry_transaction(engine: Engine, work: Callable[[Session], T], *, attempts: int = 8) -> T:
    """Run `work` in a transaction; if someone changed the flag under it, run it again on the new state.

    For changes that mean "whatever the flag is now" (a manual rollback, a
    hand-set percentage), never for the controller's own compare-and-set
    writes, which must lose to a human.
    """
    for attempt in range(attempts):
        try:
            with transaction(engine) as session:
                return work(session)
        except VersionConflictError:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
    raise AssertionError("unreachable")
