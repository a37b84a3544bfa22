"""The SDK: answers always, refreshes by itself, refuses bad outcomes, loses none on close."""

from __future__ import annotations

import math
import time

import pytest
from sqlalchemy import Engine, func, select

from rollout import ErrorCode, Reason, RolloutClient
from rollout.core import Stratum
from rollout.errors import FlagNotFoundError, InvalidOutcomeError
from rollout.store import flags as store
from rollout.store.db import make_engine, transaction
from rollout.store.models import Outcome
from tests.conftest import BACKENDS

FREE = Stratum.from_json({"name": "free", "match": {"attribute": "tier", "equals": "free"}})


def _flag(engine: Engine, percent_bp: int = 5_000) -> None:
    with transaction(engine) as s:
        store.create_flag(s, "summarizer", variants=["current", "new-model"], actor="t", strata=[FREE], salt="salt")
        store.set_allocation(s, "summarizer", percent_bp, actor="t")


def _wait_for(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_assign_answers_from_the_snapshot(engine: Engine, db_url: str) -> None:
    _flag(engine)
    with RolloutClient(db_url, listen=False) as client:
        results = [client.assign("summarizer", f"u{i}", {"tier": "free"}) for i in range(2_000)]
    assert {r.stratum for r in results} == {"free"}
    share = sum(r.is_candidate for r in results) / len(results)
    assert 0.44 < share < 0.56
    assert {r.reason for r in results} == {Reason.SPLIT}


def test_unknown_flags_get_the_callers_default_with_flag_not_found(engine: Engine, db_url: str) -> None:
    with RolloutClient(db_url, listen=False) as client:
        result = client.assign("nope", "u1", default="fallback")
    assert (result.variant, result.reason, result.error_code) == ("fallback", Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)


def test_a_client_that_never_loaded_answers_not_ready_and_does_not_raise() -> None:
    # Given a database that cannot be reached at all
    with RolloutClient("postgresql://postgres@127.0.0.1:1/none", listen=False, refresh_interval=60) as client:
        # When asked for a flag, Then it answers the default, with PROVIDER_NOT_READY
        result = client.assign("summarizer", "u1", default="current")
        assert (result.variant, result.error_code) == ("current", ErrorCode.PROVIDER_NOT_READY)
        assert not client.stats.loaded and client.stats.refresh_errors == 1
        with pytest.raises(FlagNotFoundError, match="never loaded"):
            client.record("summarizer", "u1", {"error": 0})


def test_changes_reach_a_running_client_by_polling(engine: Engine, db_url: str) -> None:
    _flag(engine, 10_000)
    with RolloutClient(db_url, listen=False, refresh_interval=0.05) as client:
        assert client.assign("summarizer", "u1").variant == "new-model"
        with transaction(engine) as s:
            store.rollback(s, "summarizer", actor="t", reason="test")
        assert _wait_for(lambda: client.assign("summarizer", "u1").variant == "current")
        assert client.assign("summarizer", "u1").reason is Reason.DISABLED


@pytest.mark.postgres
def test_changes_reach_a_running_client_by_notify_without_polling(request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("_postgres_db")
    from tests.conftest import _empty_postgres

    _empty_postgres(url)
    engine = make_engine(url)
    _flag(engine, 10_000)
    # Given a client that would not poll for a minute
    with RolloutClient(url, refresh_interval=60) as client:
        assert _wait_for(lambda: client._refresher._listener is not None)  # noqa: SLF001
        time.sleep(0.3)  # let LISTEN register
        with transaction(engine) as s:
            store.rollback(s, "summarizer", actor="t", reason="test")
        # Then the rollback arrives through NOTIFY
        assert _wait_for(lambda: client.assign("summarizer", "u1").variant == "current", timeout=3)
        assert client.stats.notifications >= 1
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def disposable_url(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    """A database a test may destroy: (url, destroy)."""
    from rollout.store import migrate

    if request.param == "sqlite":
        path = tmp_path / "gone.db"
        url = f"sqlite:///{path}"
        migrate.upgrade(url)

        def destroy() -> None:
            # An unlinked or overwritten file stays readable through open connections
            # and their page cache; a renamed table fails every query the client makes.
            import sqlite3

            with sqlite3.connect(path) as conn:
                conn.execute("ALTER TABLE flags RENAME TO flags_gone")
        return url, destroy
    scratch = request.getfixturevalue("scratch_postgres")
    url = scratch.create("rollout_gone")
    migrate.upgrade(url)

    def drop() -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
    return url, drop


def test_a_lost_database_leaves_the_last_snapshot_serving_as_stale(disposable_url) -> None:  # type: ignore[no-untyped-def]
    url, destroy = disposable_url
    engine = make_engine(url)
    _flag(engine, 10_000)
    engine.dispose()
    with RolloutClient(url, listen=False, refresh_interval=0.05) as client:
        assert client.assign("summarizer", "u1").reason is Reason.SPLIT
        # When the database goes away
        destroy()
        # Then the client keeps answering the same variant, marked STALE
        assert _wait_for(lambda: client.assign("summarizer", "u1").reason is Reason.STALE)
        assert client.assign("summarizer", "u1").variant == "new-model"
        assert client.stats.stale and client.stats.refresh_errors >= 1
        client.close(timeout=0.5)


def _stored(engine: Engine) -> list[tuple]:
    with transaction(engine) as s:
        return [tuple(r) for r in s.execute(
            select(Outcome.variant, Outcome.stratum, Outcome.metric, Outcome.value).order_by(Outcome.id))]


def test_recorded_outcomes_are_stored_with_the_units_arm_and_stratum(engine: Engine, db_url: str) -> None:
    _flag(engine, 10_000)
    with RolloutClient(db_url, listen=False) as client:
        client.record("summarizer", "u1", {"latency_ms": 812.5, "error": False}, attributes={"tier": "free"})
        client.record("summarizer", "u2", {"quality": 0.9}, variant="current")
        assert client.flush(timeout=10)
    assert _stored(engine) == [
        ("new-model", "free", "latency_ms", 812.5),
        ("new-model", "free", "error", 0.0),
        ("current", "default", "quality", 0.9),
    ]


BAD_OUTCOMES = [
    ("unknown flag", dict(flag="nope", unit_id="u", metrics={"error": 0}), FlagNotFoundError, "unknown flag"),
    ("NaN", dict(metrics={"quality": math.nan}), InvalidOutcomeError, "finite"),
    ("infinity", dict(metrics={"quality": math.inf}), InvalidOutcomeError, "finite"),
    ("negative latency", dict(metrics={"latency_ms": -1}), InvalidOutcomeError, "cannot be negative"),
    ("negative cost", dict(metrics={"cost_usd": -0.01}), InvalidOutcomeError, "cannot be negative"),
    ("name with a space", dict(metrics={"bad name": 1}), InvalidOutcomeError, "not an identifier"),
    ("name starting with a digit", dict(metrics={"1st": 1}), InvalidOutcomeError, "not an identifier"),
    ("sql in a name", dict(metrics={"x'; drop table outcomes;--": 1}), InvalidOutcomeError, "not an identifier"),
    ("text value", dict(metrics={"quality": "high"}), InvalidOutcomeError, "must be a number"),
    ("huge integer", dict(metrics={"tokens": 10**400}), InvalidOutcomeError, "too large"),
    ("65 metrics", dict(metrics={f"m{i}": 1 for i in range(65)}), InvalidOutcomeError, "at most 64"),
    ("no metrics", dict(metrics={}), InvalidOutcomeError, "at least one"),
    ("not a mapping", dict(metrics=[("error", 1)]), InvalidOutcomeError, "mapping"),
    ("empty unit", dict(unit_id=""), InvalidOutcomeError, "non-empty"),
    ("foreign variant", dict(variant="other"), InvalidOutcomeError, "not an arm"),
    ("bad attributes", dict(attributes=["tier"]), InvalidOutcomeError, "attributes must be a mapping"),
]


@pytest.mark.parametrize(("_name", "override", "error", "message"), BAD_OUTCOMES, ids=[b[0] for b in BAD_OUTCOMES])
def test_bad_outcomes_are_refused_at_the_door_and_nothing_is_stored(
    engine: Engine, db_url: str, _name: str, override: dict, error: type, message: str
) -> None:
    _flag(engine)
    call = {"flag": "summarizer", "unit_id": "u1", "metrics": {"error": 0, "latency_ms": 5}} | override
    with RolloutClient(db_url, listen=False) as client:
        with pytest.raises(error, match=message):
            client.record(call.pop("flag"), call.pop("unit_id"), call.pop("metrics"), **call)
        client.flush(timeout=10)
        assert client.stats.outcomes_accepted == 0
    assert _stored(engine) == []


def test_close_stores_everything_recorded(engine: Engine, db_url: str) -> None:
    _flag(engine)
    client = RolloutClient(db_url, listen=False, batch_size=1_000, flush_interval=10)
    for i in range(12_345):
        client.record("summarizer", f"u{i}", {"latency_ms": float(i), "error": i % 2})
    client.close()
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(Outcome)) == 2 * 12_345
    assert client.stats.outcomes_written == 12_345 and client.stats.outcomes_dropped == 0


def test_outcomes_keep_the_time_they_were_recorded(engine: Engine, db_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    _flag(engine)
    before = datetime.now(UTC)
    with RolloutClient(db_url, listen=False) as client:
        client.record("summarizer", "u1", {"error": 0})
        assert client.flush(timeout=10)
    after = datetime.now(UTC)
    with transaction(engine) as s:
        stamp = s.scalar(select(Outcome.recorded_at))
    assert before - timedelta(milliseconds=1) <= stamp <= after + timedelta(milliseconds=1)
