"""Exposures and exposure tokens: counted per unit and cell, and late outcomes credited to what was served."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from rollout import RolloutClient
from rollout.core import Assignment, Cell, Reason, Stratum, bind
from rollout.errors import ExposureExpiredError, InvalidExposureError, InvalidOutcomeError
from rollout.sdk.outcomes import _unit_hash
from rollout.store.secrets import UnitKeys
from rollout.sdk.exposures import ExposureCounts, ExposureKeys, Served
from rollout.store import flags as store
from rollout.store.db import transaction
from rollout.store.exposures import exposure_counts
from rollout.store.models import Exposure, Flag, Outcome, Rollout, utcnow
from rollout.store.secrets import EXPOSURE, rotate

FREE = Stratum.from_json({"name": "free", "match": {"attribute": "tier", "equals": "free"}})


def flag_in_rollout(engine: Engine, *, bp: int, stage: int = 1, key: str = "summarizer") -> tuple[int, int]:
    """A flag ramping at `bp` with an active rollout in `stage`: (flag id, rollout id)."""
    with transaction(engine) as s:
        store.create_flag(s, key, variants=["current", "new-model"], actor="t", strata=[FREE], salt="salt")
        store.set_allocation(s, key, bp, actor="t")
        flag_id = s.scalar(select(Flag.id).where(Flag.key == key))
        row = Rollout(flag_id=flag_id, active_flag_id=flag_id, plan={}, status="running", stage_index=stage,
                      started_by="t", lease_owner="t", started_at=utcnow(), updated_at=utcnow())
        s.add(row)
        s.flush()
        return flag_id, row.id


def ramp(engine: Engine, *, bp: int, stage: int, key: str = "summarizer") -> None:
    with transaction(engine) as s:
        store.set_allocation(s, key, bp, actor="t")
        s.execute(update(Rollout).values(stage_index=stage))


def _outcomes(engine: Engine) -> list[tuple]:
    with Session(engine) as s:
        return [tuple(r) for r in s.execute(select(
            Outcome.rollout_id, Outcome.stage, Outcome.variant, Outcome.stratum, Outcome.unit_hash, Outcome.metric,
            Outcome.value).order_by(Outcome.id))]


def _baseline_unit(client: RolloutClient) -> str:
    return next(u for u in (f"u{i}" for i in range(1000)) if not client.assign("summarizer", u).is_candidate)


# --- counting -------------------------------------------------------------------------

def test_repeat_assignments_become_one_counted_row_per_unit_and_cell(engine: Engine, db_url: str) -> None:
    # Given a flag in stage 1 of a rollout
    flag_id, rollout_id = flag_in_rollout(engine, bp=5_000)
    with RolloutClient(db_url, listen=False, refresh_interval=3600) as client:
        # When unit a asks 5 times (free tier), unit b twice (no attributes), then again after a flush
        answers = [client.assign("summarizer", "a", {"tier": "free"}) for _ in range(5)]
        answers += [client.assign("summarizer", "b") for _ in range(2)]
        assert client.flush(timeout=30)
        client.assign("summarizer", "a", {"tier": "free"})
        assert client.flush(timeout=30)
        assert client.stats.exposure_rows_written == 3
    # Then there is one row per unit, with the requests counted and the upsert adding the second flush
    with Session(engine) as s:
        counts = exposure_counts(s, flag_id)
        span = s.execute(select(Exposure.first_at, Exposure.last_at)).all()
    a, b = answers[0], answers[-1]
    key = UnitKeys(engine).get("default")  # stored unit hashes are keyed with the namespace's UNIT secret
    assert counts == {
        (flag_id, rollout_id, 1, a.variant, "free", _unit_hash(key, "a")): 6,
        (flag_id, rollout_id, 1, b.variant, "default", _unit_hash(key, "b")): 2,
    }
    assert all(first <= last for first, last in span)


def test_shadow_counts_what_it_served_like_assign(engine: Engine, db_url: str) -> None:
    # Given a flag in a rollout's shadow stage (stage 0), with every unit in the shadow sample
    flag_id, rollout_id = flag_in_rollout(engine, bp=0, stage=0)
    with transaction(engine) as s:
        store.set_shadow(s, "summarizer", 10_000, actor="t")
    with RolloutClient(db_url, listen=False, refresh_interval=3600) as client:
        # When unit a's requests go through shadow() three times (free tier) and unit b's twice
        for unit, times, attributes in (("a", 3, {"tier": "free"}), ("b", 2, None)):
            for _ in range(times):
                assert client.shadow("summarizer", unit, str.upper, str.lower, "hi", attributes=attributes) == "HI"
        assert client.shadow_stats.sampled == 5
        assert client.flush(timeout=30)
    # Then each unit's exposures to the baseline it was served are counted, one row per unit and cell
    key = UnitKeys(engine).get("default")
    with Session(engine) as s:
        assert exposure_counts(s, flag_id) == {
            (flag_id, rollout_id, 0, "current", "free", _unit_hash(key, "a")): 3,
            (flag_id, rollout_id, 0, "current", "default", _unit_hash(key, "b")): 2,
        }


def test_flags_without_a_rollout_count_no_exposures(engine: Engine, db_url: str) -> None:
    # Given a flag with an allocation but no rollout
    with transaction(engine) as s:
        store.create_flag(s, "plain", variants=["a", "b"], actor="t", salt="salt")
        store.set_allocation(s, "plain", 5_000, actor="t")
    with RolloutClient(db_url, listen=False) as client:
        # When units are assigned
        for i in range(50):
            client.assign("plain", f"u{i}")
        assert client.flush(timeout=30)
    # Then nothing is written: nobody judges it, so nothing needs the rows
    with Session(engine) as s:
        assert s.scalars(select(Exposure)).all() == []


def test_exposures_can_be_switched_off(engine: Engine, db_url: str) -> None:
    flag_in_rollout(engine, bp=5_000)
    with RolloutClient(db_url, listen=False, exposures=False) as client:
        client.assign("summarizer", "u1")
        assert client.flush(timeout=30)
    with Session(engine) as s:
        assert s.scalars(select(Exposure)).all() == []


def test_error_answers_count_nothing_and_cannot_be_credited(engine: Engine, db_url: str) -> None:
    flag_in_rollout(engine, bp=5_000)
    with RolloutClient(db_url, listen=False) as client:
        # Given answers that are errors (unknown flag, missing unit)
        for answer in (client.assign("nope", "u1"), client.assign("summarizer", "")):
            # When their outcome is recorded, Then it is refused with the reason
            with pytest.raises(InvalidExposureError, match="error answer"):
                client.record(answer, {"error": 0})
        assert client.flush(timeout=30)
    with Session(engine) as s:
        assert s.scalars(select(Exposure)).all() == []


# --- crediting what was served ------------------------------------------------------------

def test_a_late_outcome_is_credited_to_what_was_served_before_theramp(engine: Engine, db_url: str) -> None:
    # Given a user served the baseline in stage 1 at 10 %, holding the assignment and its token
    _, rollout_id = flag_in_rollout(engine, bp=1_000, stage=1)
    with RolloutClient(db_url, listen=False, refresh_interval=3600) as client:
        unit = _baseline_unit(client)
        served = client.assign("summarizer", unit)
        token = client.exposure_token(served)
        assert served.variant == "current" and token is not None and len(token) < 100
        # When the allocation is raised to 100 % in stage 2, and the outcomes arrive afterwards
        ramp(engine, bp=10_000, stage=2)
        assert client.refresh()
        assert client.assign("summarizer", unit).variant == "new-model"
        client.record(token, {"thumbs_up": 0})
        client.record(served, {"error": 1})
        client.record("summarizer", unit, {"latency_ms": 5.0})  # the old form: credited to the current assignment
        assert client.flush(timeout=30)
    # Then the token and the assignment are stored as the baseline's, in stage 1; the old form as the candidate's
    h = _unit_hash(UnitKeys(engine).get("default"), unit)
    assert _outcomes(engine) == [
        (rollout_id, 1, "current", "default", h, "thumbs_up", 0.0),
        (rollout_id, 1, "current", "default", h, "error", 1.0),
        (rollout_id, 2, "new-model", "default", h, "latency_ms", 5.0),
    ]


def test_a_token_is_honoured_by_another_client_of_the_namespace(engine: Engine, db_url: str) -> None:
    # Given a token issued by one process
    flag_in_rollout(engine, bp=10_000)
    with RolloutClient(db_url, listen=False) as issuer:
        token = issuer.exposure_token(issuer.assign("summarizer", "u1", {"tier": "free"}))
    # When another process records with it, Then it is credited as served
    with RolloutClient(db_url, listen=False) as other:
        other.record(token, {"rating": 4.0})
        assert other.flush(timeout=30)
    assert [r[2:4] for r in _outcomes(engine)] == [("new-model", "free")]


TAMPERINGS = [
    ("garbage", lambda t: "not-a-token-at-all-" * 3),
    ("one character changed", lambda t: t[:30] + ("A" if t[30] != "A" else "B") + t[31:]),
    ("signature cut", lambda t: t[:-4]),
    ("not a string", lambda t: 12345),
]


@pytest.mark.parametrize(("case", "tamper"), TAMPERINGS, ids=[c for c, _ in TAMPERINGS])
def test_forged_or_tampered_tokens_are_refused_and_store_nothing(engine: Engine, db_url: str, case, tamper) -> None:  # type: ignore[no-untyped-def]
    flag_in_rollout(engine, bp=5_000)
    with RolloutClient(db_url, listen=False) as client:
        token = client.exposure_token(client.assign("summarizer", "u1"))
        with pytest.raises(InvalidExposureError):
            client.record(tamper(token), {"error": 0})
        assert client.flush(timeout=30)
    assert _outcomes(engine) == []


def test_a_token_from_another_namespace_is_refused(engine: Engine, db_url: str) -> None:
    flag_in_rollout(engine, bp=5_000)
    with RolloutClient(db_url, listen=False) as client:
        token = client.exposure_token(client.assign("summarizer", "u1"))
    # Given keys of another namespace (its own secret), When it verifies the token, Then it is refused
    other = ExposureKeys(engine, "elsewhere")
    assert other.load()
    with pytest.raises(InvalidExposureError, match="signature"):
        other.verify(token, horizon=3600)


def test_tokens_older_than_the_horizon_are_refused_with_a_clear_error(engine: Engine, db_url: str) -> None:
    flag_in_rollout(engine, bp=5_000)
    with RolloutClient(db_url, listen=False, exposure_horizon=0.5) as client:
        token = client.exposure_token(client.assign("summarizer", "u1"))
        time.sleep(1.6)
        with pytest.raises(ExposureExpiredError, match="credited to what was served only within"):
            client.record(token, {"error": 0})
        assert isinstance(ExposureExpiredError("x"), InvalidOutcomeError)


def test_tokens_signed_before_a_key_rotation_still_verify(engine: Engine, db_url: str) -> None:
    # Given a token signed with key version 1, and a rotation to version 2 by someone else
    flag_in_rollout(engine, bp=5_000)
    with RolloutClient(db_url, listen=False) as client:
        old = client.exposure_token(client.assign("summarizer", "u1"))
        with transaction(engine) as s:
            assert rotate(s, "default", EXPOSURE) == 2
        # When a fresh client (signing with version 2) records with the old token, Then it is credited
    with RolloutClient(db_url, listen=False) as fresh:
        new = fresh.exposure_token(fresh.assign("summarizer", "u2"))
        assert new != old
        fresh.record(old, {"error": 0})
        fresh.record(new, {"error": 1})
        assert fresh.flush(timeout=30)
    assert len(_outcomes(engine)) == 2


def test_exposure_forms_refuse_variant_and_attributes(engine: Engine, db_url: str) -> None:
    flag_in_rollout(engine, bp=5_000)
    with RolloutClient(db_url, listen=False) as client:
        served = client.assign("summarizer", "u1")
        with pytest.raises(InvalidOutcomeError, match="fixes the variant"):
            client.record(served, {"error": 0}, variant="new-model")


# --- the buffer alone (no database) ------------------------------------------------------------

CELLS = [Cell("f", "salt", 1, 1, v, s) for v in ("a", "b") for s in ("default", "free")]
ANSWERS = [Assignment("f", c.variant, c.stratum, False, Reason.SPLIT, 1, cell=c) for c in CELLS]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(CELLS) - 1), st.integers(0, 30)), max_size=300),
       st.lists(st.sampled_from(["ok", "down", "reply lost"]), min_size=1, max_size=6))
def test_every_assignment_is_written_once_whatever_the_write_failures(calls, failures) -> None:  # type: ignore[no-untyped-def]
    # Given a writer that fails on some attempts: before storing (down), or after (the commit reply was lost)
    stored: dict[tuple, int] = {}
    applied: dict[int, int] = {}  # source -> highest seq stored, as the exposure_sources table keeps it
    attempts = iter(failures)

    def write(source, seq, rows):  # type: ignore[no-untyped-def]
        outcome = next(attempts, "ok")
        if outcome == "down":
            raise OSError("database down")
        assert len({key for key, *_ in rows}) == len(rows)  # unique keys: PostgreSQL's upsert needs that
        if seq > applied.get(source, 0):  # what the upsert does
            assert seq == applied.get(source, 0) + 1  # batches arrive in order, none skipped
            applied[source] = seq
            for key, count, first, last in rows:
                assert first <= last
                stored[key] = stored.get(key, 0) + count
        if outcome == "reply lost":
            raise OSError("connection lost after COMMIT")
        return len(rows)

    counts = ExposureCounts(write, lambda: {"f": 7}, lambda _salt, unit: _unit_hash(b"unit-key", unit))
    # When assignments are counted across several write rounds
    for i, (cell, unit) in enumerate(calls):
        key = bind(ANSWERS[cell], f"u{unit}")
        counts.counts[key] = counts.counts.get(key, 0) + 1
        if i % 97 == 0:
            counts.write_pending()
    for _ in range(len(failures) + 1):
        if counts.write_pending():
            break
    # Then each (cell, unit) adds up to its number of assignments, nothing lost or doubled
    expected: dict[tuple, int] = {}
    for cell, unit in calls:
        c = CELLS[cell]
        key = (7, c.rollout_id, c.stage, c.variant, c.stratum, _unit_hash(b"unit-key", f"u{unit}"))
        expected[key] = expected.get(key, 0) + 1
    assert stored == expected and counts.exposures == len(calls)


def test_a_token_round_trips_what_was_served() -> None:
    keys = ExposureKeys(None, "default")  # type: ignore[arg-type]
    keys._current, keys._all = (3, b"k" * 32), {3: b"k" * 32}  # noqa: SLF001 - keys without a database
    served = Served(12, 4, 2, "gpt-4o-mini", "enterprise", -(2**63), int(time.time()))
    assert keys.verify(keys.sign(served), horizon=60) == served
    with pytest.raises(ExposureExpiredError):
        keys.verify(keys.sign(served), horizon=60, now=time.time() + 120)


# --- feedback ------------------------------------------------------------------------------------

def test_late_feedback_is_credited_to_the_arm_that_served_it(engine: Engine, db_url: str) -> None:
    # Given a user served the baseline at 10 %, then a ramp to 100 % in stage 2
    _, rollout_id = flag_in_rollout(engine, bp=1_000, stage=1)
    with RolloutClient(db_url, listen=False, refresh_interval=3600) as client:
        unit = _baseline_unit(client)
        token = client.exposure_token(client.assign("summarizer", unit))
        ramp(engine, bp=10_000, stage=2)
        assert client.refresh()
        # When their feedback arrives, by token
        client.feedback(token, thumbs_up=False, rating=2)
        # Then bad feedback input is refused at once
        with pytest.raises(InvalidOutcomeError, match="thumbs_up or rating"):
            client.feedback(token)
        with pytest.raises(InvalidOutcomeError, match="true or false"):
            client.feedback(token, thumbs_up="yes")  # type: ignore[arg-type]
        assert client.flush(timeout=30)
    # And it is stored as the baseline's, in stage 1
    h = _unit_hash(UnitKeys(engine).get("default"), unit)
    assert _outcomes(engine) == [(rollout_id, 1, "current", "default", h, "thumbs_up", 0.0),
                                 (rollout_id, 1, "current", "default", h, "rating", 2.0)]
