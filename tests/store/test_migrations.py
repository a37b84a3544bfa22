"""The Alembic history upgrades, downgrades and upgrades again, and matches the models."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from rollout.store import migrate
from rollout.store.db import make_engine
from rollout.store.models import Base
from tests.conftest import BACKENDS


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return request.getfixturevalue("scratch_postgres").create("rollout_migrations")


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_leaves_the_full_schema(fresh_url: str) -> None:
    # Given an empty database, When migrated up, down to nothing, and up again
    migrate.upgrade(fresh_url)
    assert _tables(fresh_url) == set(Base.metadata.tables)
    migrate.downgrade(fresh_url, "base")
    assert _tables(fresh_url) == set()
    migrate.upgrade(fresh_url)
    # Then every table is back and the models agree with the migrations (alembic check)
    assert _tables(fresh_url) == set(Base.metadata.tables)
    migrate.check(fresh_url)
