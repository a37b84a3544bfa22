"""A running service per test (in-process, over ASGI) on SQLite and PostgreSQL, with tokens of every scope.

Tenants: the spec's flags live in namespace `default`; namespace `other` has a
flag of its own, `secret-flag`, and one that shares a key with `default`
(`summarizer`) but has other variants, so a leak across namespaces shows.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine

warnings.filterwarnings("ignore", message=".*httpx2.*")

from fastapi.testclient import TestClient  # noqa: E402

from rollout.adapters.api import ApiSettings, create_app  # noqa: E402
from rollout.store import flags as store  # noqa: E402
from rollout.store import migrate  # noqa: E402
from rollout.store.db import make_engine, transaction  # noqa: E402
from rollout.store.tokens import create_token, revoke_token  # noqa: E402
from tests.conftest import BACKENDS  # noqa: E402
from tests.spec import install_spec_flags  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Service:
    url: str
    engine: Engine
    client: TestClient
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, token_name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[token_name]}"}


def make_tokens(engine: Engine) -> dict[str, str]:
    """read / write / admin in `default`, admin in `other`, and a revoked admin in `default`."""
    tokens: dict[str, str] = {}
    with transaction(engine) as s:
        for scope in ("read", "write", "admin"):
            tokens[scope] = create_token(s, f"{scope}-token", namespace="default", scope=scope, actor="test").token
        tokens["other-admin"] = create_token(s, "other-admin", namespace="other", scope="admin", actor="test").token
        tokens["revoked"] = create_token(s, "revoked", namespace="default", scope="admin", actor="test").token
        revoke_token(s, "revoked", namespace="default", actor="test")
    return tokens


def seed(engine: Engine) -> None:
    with transaction(engine) as s:
        install_spec_flags(s)
        store.create_flag(s, "secret-flag", variants=["x", "y"], actor="test", namespace="other")
        store.create_flag(s, "summarizer", variants=["other-a", "other-b"], actor="test", namespace="other")
        store.promote(s, "summarizer", actor="test", namespace="other")


def build_service(db_url: str, **settings: object) -> Iterator[Service]:
    engine = make_engine(db_url)
    seed(engine)
    tokens = make_tokens(engine)
    # listen=False: polling every 50 ms is as quick here, and stopping needs no wait for a LISTEN connection.
    options = {"database_url": db_url, "refresh_interval": 0.05, "token_ttl": 0.2, "listen": False, **settings}
    app = create_app(ApiSettings(**options))  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Service(db_url, engine, client, tokens)
    engine.dispose()


@pytest.fixture
def api(db_url: str) -> Iterator[Service]:
    """A fresh database and service for a test that changes state."""
    yield from build_service(db_url, rate_limit=0)


def module_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str) -> str:
    """A migrated, empty database for a module-scoped fixture parametrised over BACKENDS."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp(name) / "rollout.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("scratch_postgres").create(f"rollout_{name}")
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="module", params=BACKENDS)
def shared_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One database and service for a whole module, for tests that only read or check deltas."""
    yield from build_service(module_database(request, tmp_path_factory, "api"), rate_limit=0)


from bench.server import RunningServer, free_port, start_server, stop_server  # noqa: E402,F401
