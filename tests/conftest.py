"""Shared fixtures: a migrated database per backend, fresh for every test.

Store, SDK and flow tests take `db_url` (or `engine`) and run once on SQLite
and once on PostgreSQL when ROLLOUT_TEST_POSTGRES_URL is set (.ci/run sets
it). Each test session gets its own PostgreSQL database, so two runs on one
server never collide.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Set before Prefect is imported: a thread or process that misses the test
# server must fail at once, not quietly start a slow temporary server.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "false")

from rollout.store import migrate  # noqa: E402
from rollout.store.db import database_url, make_engine  # noqa: E402
from rollout.store.models import Base  # noqa: E402
from tests.harness.faults import empty_postgres  # noqa: E402
from tests.harness.tcp_proxy import TcpProxy  # noqa: E402

POSTGRES_URL = os.environ.get("ROLLOUT_TEST_POSTGRES_URL")
BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=[
        pytest.mark.postgres,
        pytest.mark.skipif(not POSTGRES_URL, reason="set ROLLOUT_TEST_POSTGRES_URL to run on PostgreSQL"),
    ]),
]


class ScratchPostgres:
    """Creates throwaway databases on the test server and drops them at the end."""

    def __init__(self, server_url: str) -> None:
        self._server = make_url(database_url(server_url))
        self._admin = create_engine(self._server, isolation_level="AUTOCOMMIT")
        self._made: list[str] = []

    def create(self, prefix: str = "rollout_test") -> str:
        name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self._made.append(name)
        return self._server.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self._admin.connect() as conn:
            for name in self._made:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()


@pytest.fixture(scope="session")
def scratch_postgres() -> Iterator[ScratchPostgres]:
    if not POSTGRES_URL:
        pytest.skip("set ROLLOUT_TEST_POSTGRES_URL to run on PostgreSQL")
    scratch = ScratchPostgres(POSTGRES_URL)
    yield scratch
    scratch.drop_all()


@pytest.fixture(scope="session")
def _postgres_db(scratch_postgres: ScratchPostgres) -> str:
    url = scratch_postgres.create()
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("template") / "rollout.db"
    migrate.upgrade(f"sqlite:///{path}")
    return str(path)


_empty_postgres = empty_postgres  # tests/sdk/test_client.py imports it by this name


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A migrated, empty database: a copy of a template file on SQLite, a truncated database on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "rollout.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("_postgres_db")
    _empty_postgres(url)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_proxy(request: pytest.FixtureRequest) -> Iterator[tuple[TcpProxy, str]]:
    """A fault-injecting TCP proxy in front of a migrated, empty PostgreSQL test database.

    Yields (proxy, url through the proxy). See tests/harness/tcp_proxy.py for the modes.
    """
    url = request.getfixturevalue("_postgres_db")
    _empty_postgres(url)
    parsed = make_url(url)
    with TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432)) as proxy:
        yield proxy, parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
