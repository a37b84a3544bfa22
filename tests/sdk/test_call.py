"""call()/acall(): the assignment decides who answers, and a failing candidate never reaches the user."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from rollout import RolloutClient
from rollout.app.online_evals import grade_round
from rollout.core.online_eval import OnlineEval, kept_for_judges
from rollout.errors import InvalidInputError
from rollout.sdk.outcomes import _unit_hash
from rollout.store import flags as store
from rollout.store.db import transaction
from rollout.store.models import Flag, Outcome, Rollout, Sample, utcnow
from rollout.store.samples import kept_answers
from rollout.store.secrets import UnitKeys

FLAG = "summarizer"
PLAN = {"online_evals": [{"name": "quality", "scorer": "tests.sdk.test_call:quality", "sample": 0.3}]}


def flag_in_rollout(engine: Engine, *, bp: int, stage: int = 1, plan: dict | None = None) -> tuple[int, int]:
    """A flag ramping at `bp` (10,000: everyone gets the candidate) in `stage` of an active rollout."""
    with transaction(engine) as s:
        store.create_flag(s, FLAG, variants=["current", "new-model"], actor="t", salt="salt")
        store.set_allocation(s, FLAG, bp, actor="t")
        flag_id = s.scalar(select(Flag.id).where(Flag.key == FLAG))
        row = Rollout(flag_id=flag_id, active_flag_id=flag_id, plan=plan or {}, status="running", stage_index=stage,
                      started_by="t", lease_owner="t", started_at=utcnow(), updated_at=utcnow())
        s.add(row)
        s.flush()
        return flag_id, row.id


def _client(db_url: str, **kwargs: Any) -> RolloutClient:
    return RolloutClient(db_url, listen=False, refresh_interval=3600, **kwargs)


def _outcomes(engine: Engine) -> dict[str, dict[str, list[float]]]:
    """variant -> metric -> values."""
    by: dict[str, dict[str, list[float]]] = {}
    with Session(engine) as s:
        for variant, metric, value, stage in s.execute(select(Outcome.variant, Outcome.metric, Outcome.value,
                                                              Outcome.stage)):
            assert stage == 1
            by.setdefault(variant, {}).setdefault(metric, []).append(value)
    return by


def _samples(engine: Engine) -> list[Sample]:
    with Session(engine) as s:
        return list(s.scalars(select(Sample).order_by(Sample.id)))


def quality(_input: str, output: str) -> float:
    """A deterministic judge: the candidate's answers say "good"."""
    return 1.0 if "good" in output else 0.0


# --- the two callers: every case runs through call() and through acall() ----------------

def _as_async(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    async def run(value: Any) -> Any:
        await asyncio.sleep(SLOW_S if fn is slow else 0)  # a coroutine waits without a thread
        return f"late: {value}" if fn is slow else fn(value)
    return run


def _sync_call(client: RolloutClient, **kw: Any) -> Any:
    return client.call(FLAG, kw.pop("unit", "u1"), **kw)


def _async_call(client: RolloutClient, **kw: Any) -> Any:
    for name in ("baseline", "candidate"):
        kw[name] = _as_async(kw[name])
    if callable(kw.get("fallback")):
        kw["fallback"] = _as_async(kw["fallback"])
    return asyncio.run(client.acall(FLAG, kw.pop("unit", "u1"), **kw))


CALLERS = pytest.mark.parametrize("caller", [_sync_call, _async_call], ids=["call", "acall"])


def baseline(text: str) -> str:
    return f"baseline: {text}"


def good(text: str) -> str:
    return f"good: {text}"


def broken(_text: str) -> str:
    raise ValueError("model said no")


SLOW_S = 1.5


def slow(text: str) -> str:
    time.sleep(SLOW_S)
    return f"late: {text}"


class Flaky:
    """Fails transiently `failures` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, text: str) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("reset by peer")
        return f"good: {text}"


CASES = {
    # name: (candidate, call options, expected value, served variant, fell back, error contains)
    "candidate answers": (good, {}, "good: ticket", "new-model", False, None),
    "candidate raises": (broken, {}, "baseline: ticket", "current", True, "ValueError: model said no"),
    "candidate times out": (slow, {"timeout": 0.2}, "baseline: ticket", "current", True, "TimeoutError"),
    "fallback value": (broken, {"fallback": "Sorry, try later"}, "Sorry, try later", None, True, "ValueError"),
    "fallback callable": (broken, {"fallback": str.upper}, "TICKET", None, True, "ValueError"),
    "transient failure retried": (Flaky(1), {"retries": 2}, "good: ticket", "new-model", False, None),
    "retries run out": (Flaky(5), {"retries": 1}, "baseline: ticket", "current", True, "ConnectionError"),
}


@CALLERS
@pytest.mark.parametrize("case", list(CASES))
def test_the_user_gets_an_answer_and_the_candidate_is_credited_with_its_failure(
        engine: Engine, db_url: str, caller: Callable[..., Any], case: str) -> None:
    candidate, options, value, variant, fell_back, error = CASES[case]
    if isinstance(candidate, Flaky):
        candidate = Flaky(candidate.failures)  # a fresh count per run
    # Given a ramp stage that serves everyone the candidate
    flag_in_rollout(engine, bp=10_000)
    with _client(db_url) as client:
        # When the app calls through the client
        started = time.perf_counter()
        result = caller(client, baseline=baseline, candidate=candidate, input="ticket", **options)
        waited_ms = (time.perf_counter() - started) * 1e3
        assert client.flush(timeout=30)
    # Then the user gets the candidate's answer, or the fallback when it failed
    assert (result.value, result.variant, result.fell_back) == (value, variant, fell_back)
    assert result.exposure.variant == "new-model"
    assert (result.error is None) if error is None else (error in result.error)
    # And the outcome is the candidate exposure's: an error when it failed, and the time the user waited
    by = _outcomes(engine)
    assert list(by) == ["new-model"]
    assert by["new-model"]["error"] == [1.0 if fell_back else 0.0]
    (latency,) = by["new-model"]["latency_ms"]
    assert latency <= waited_ms
    if "timeout" in options:
        assert latency >= 200.0 and waited_ms < 1_400  # waited the timeout, not the candidate's 1.5 s


@CALLERS
def test_units_on_the_baseline_never_call_the_candidate(engine: Engine, db_url: str,
                                                        caller: Callable[..., Any]) -> None:
    # Given a stage at 0 %: everyone on the baseline
    flag_in_rollout(engine, bp=0)
    with _client(db_url) as client:
        # When the app calls with a candidate that would fail
        result = caller(client, baseline=baseline, candidate=broken, input="ticket")
        assert client.flush(timeout=30)
    # Then the baseline answered, and its outcome is the baseline's
    assert (result.value, result.variant, result.fell_back) == ("baseline: ticket", "current", False)
    assert _outcomes(engine)["current"]["error"] == [0.0]


@CALLERS
def test_an_unknown_flag_gets_the_baseline_and_records_nothing(engine: Engine, db_url: str,
                                                               caller: Callable[..., Any]) -> None:
    # Given no flag at all (a typo, or deleted)
    with _client(db_url) as client:
        # When the app calls through it
        result = client.call("no-such-flag", "u1", baseline=baseline, candidate=good, input="ticket") \
            if caller is _sync_call else asyncio.run(client.acall("no-such-flag", "u1", baseline=_as_async(baseline),
                                                                  candidate=_as_async(good), input="ticket"))
        assert client.flush(timeout=30)
    # Then the baseline answers, like assign() would serve it, and nothing is credited
    assert (result.value, result.fell_back, result.exposure.error_code) == ("baseline: ticket", False,
                                                                             "FLAG_NOT_FOUND")
    assert _outcomes(engine) == {}


@pytest.mark.parametrize("options", [{"retries": -1}, {"retries": 1.5}, {"timeout": 0}, {"timeout": "5"}])
def test_bad_options_are_refused_before_anything_runs(engine: Engine, db_url: str, options: dict) -> None:
    # Given a candidate stage, When call() gets an option it cannot honour, Then it says so (no silent fallback)
    flag_in_rollout(engine, bp=10_000)
    with _client(db_url) as client, pytest.raises(InvalidInputError):
        client.call(FLAG, "u1", baseline=baseline, candidate=good, input="ticket", **options)


HUNG_APP = """
import sys, time
from rollout import RolloutClient
client = RolloutClient(sys.argv[1], listen=False, refresh_interval=3600)
result = client.call("summarizer", "u1", baseline=str.upper, candidate=lambda text: time.sleep(120), input="ok",
                     timeout=0.2)
print(result.value, result.fell_back)
"""


def test_a_hung_candidate_does_not_keep_the_app_from_exiting(engine: Engine, db_url: str) -> None:
    # Given an app whose candidate hangs for two minutes behind a 0.2 s timeout
    flag_in_rollout(engine, bp=10_000)
    # When the app answers and exits
    done = subprocess.run([sys.executable, "-c", HUNG_APP, db_url], capture_output=True, text=True, timeout=60)
    # Then it answered with the baseline and exited at once (the worker thread is a daemon)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["OK", "True"]


def test_a_call_after_close_still_answers(engine: Engine, db_url: str) -> None:
    # Given a closed client (an app shutting down while requests finish)
    flag_in_rollout(engine, bp=10_000)
    client = _client(db_url)
    client.close()
    # When a request still calls through it, Then the user gets the answer; nothing is recorded, nothing raised
    result = client.call(FLAG, "u1", baseline=baseline, candidate=broken, input="ticket", timeout=1.0)
    assert (result.value, result.fell_back) == ("baseline: ticket", True)
    assert _outcomes(engine) == {}


def test_a_failing_baseline_raises_as_if_called_directly(engine: Engine, db_url: str) -> None:
    flag_in_rollout(engine, bp=0)
    with _client(db_url) as client, pytest.raises(ValueError, match="model said no"):
        client.call(FLAG, "u1", baseline=broken, candidate=good, input="ticket")


@CALLERS
def test_in_a_shadow_stage_call_does_what_shadow_does(engine: Engine, db_url: str,
                                                      caller: Callable[..., Any]) -> None:
    # Given a flag in shadow with every unit sampled, and sample capture on
    with transaction(engine) as s:
        store.create_flag(s, FLAG, variants=["current", "new-model"], actor="t", salt="salt")
        store.set_shadow(s, FLAG, 10_000, actor="t")
    with _client(db_url, capture_samples=True) as client:
        # When the app calls through the client (the same call site as in a ramp)
        result = caller(client, baseline=baseline, candidate=good, input="ticket")
        assert client.flush(timeout=30)
        assert client.shadow_stats.paired == 1
    # Then the user got the baseline, and the candidate's run is stored as a pair, outputs kept for eval export
    assert (result.value, result.variant, result.fell_back) == ("baseline: ticket", "current", False)
    with Session(engine) as s:
        pair_ids = set(s.scalars(select(Outcome.pair_id)))
    assert len(pair_ids) == 1 and None not in pair_ids
    samples = _samples(engine)
    assert {(x.source, x.variant, x.output) for x in samples} == {
        ("shadow", "current", "baseline: ticket"), ("shadow", "new-model", "good: ticket")}
    assert {x.pair_id for x in samples} == pair_ids and {x.input for x in samples} == {"ticket"}
    # And eval export reads them as one case: the baseline's answer as reference, the candidate's beside it
    with Session(engine) as s:
        flag_id = s.scalar(select(Flag.id).where(Flag.key == FLAG))
        (case,) = kept_answers(s, flag_id=flag_id, baseline="current", source="shadow")
    assert (case.input, case.reference, case.candidate) == ("ticket", "baseline: ticket", "good: ticket")
    assert case.scores["candidate.error"] == 0.0 and not case.candidate_error


# --- sample capture -----------------------------------------------------------------------

def _expected_kept(engine: Engine, units: list[str], share: float) -> set[str]:
    key = UnitKeys(engine).get("default")
    return {u for u in units if kept_for_judges(_unit_hash(key, u), share)}


def test_the_same_units_are_sampled_in_both_arms_and_every_stage(engine: Engine, db_url: str) -> None:
    # Given a rollout with a judge sampling 30 % of exposures, in a 50 % stage
    _, rollout_id = flag_in_rollout(engine, bp=5_000, plan=PLAN)
    units = [f"user-{i}" for i in range(120)]
    with _client(db_url, capture_samples=True) as client:
        # When every unit is served once, then again after a ramp to 100 %
        for unit in units:
            client.call(FLAG, unit, baseline=baseline, candidate=good, input=unit)
        with transaction(engine) as s:
            store.set_allocation(s, FLAG, 10_000, actor="t")
            s.execute(update(Rollout).values(stage_index=2))
        client.refresh()
        for unit in units:
            client.call(FLAG, unit, baseline=baseline, candidate=good, input=unit)
        assert client.flush(timeout=30)
    samples = _samples(engine)
    expected = _expected_kept(engine, units, 0.3)
    first = [x for x in samples if x.stage == 1]
    second = [x for x in samples if x.stage == 2]
    # Then the kept units are those the unit hash picks, the same in both stages, from both arms in the first
    assert {x.input for x in first} == expected == {x.input for x in second}
    assert {x.variant for x in first} == {"current", "new-model"}
    assert {x.variant for x in second} == {"new-model"}
    assert all(x.source == "online" and x.rollout_id == rollout_id for x in samples)
    assert 0.15 < len(expected) / len(units) < 0.45


@settings(max_examples=200, deadline=None)
@given(unit_hash=st.integers(min_value=-(2**63), max_value=2**63 - 1),
       low=st.floats(min_value=0.0001, max_value=1.0), high=st.floats(min_value=0.0001, max_value=1.0))
def test_sampling_is_deterministic_and_a_larger_share_keeps_every_smaller_ones_units(
        unit_hash: int, low: float, high: float) -> None:
    # The decision reads only the unit hash (never the arm), so both arms and every stage agree
    low, high = min(low, high), max(low, high)
    assert kept_for_judges(unit_hash, low) == kept_for_judges(unit_hash, low)
    assert not kept_for_judges(unit_hash, low) or kept_for_judges(unit_hash, high)
    assert kept_for_judges(unit_hash, 1.0)


def test_nothing_is_kept_without_opting_in_or_without_judges(engine: Engine, db_url: str) -> None:
    flag_in_rollout(engine, bp=5_000, plan={})
    with _client(db_url, capture_samples=True) as with_capture:
        for i in range(50):
            with_capture.call(FLAG, f"u{i}", baseline=baseline, candidate=good, input="t")
        assert with_capture.flush(timeout=30)
    with transaction(engine) as s:
        s.execute(update(Rollout).values(plan=PLAN))
    with _client(db_url) as without:
        for i in range(50):
            without.call(FLAG, f"u{i}", baseline=baseline, candidate=good, input="t")
        assert without.sample(without.assign(FLAG, "u1"), "t", "answer") is False
        assert without.flush(timeout=30)
    assert _samples(engine) == []


def test_samples_are_redacted_and_capped_and_unredactable_ones_dropped(engine: Engine, db_url: str) -> None:
    # Given a judge sampling every exposure, a redaction hook and a 24-character cap
    flag_in_rollout(engine, bp=10_000, plan={"online_evals": [{"name": "q", "scorer": "m:f", "sample": 1.0}]})

    def redact(text: str) -> str:
        if "poison" in text:
            raise RuntimeError("cannot redact")
        return text.replace("alice@example.com", "[email]")

    with _client(db_url, capture_samples=True, redact=redact, max_output_chars=24) as client:
        # When answers with an e-mail address, a long text, and one the hook fails on are captured
        client.call(FLAG, "u1", baseline=baseline, candidate=good, input="mail alice@example.com now")
        client.call(FLAG, "u2", baseline=baseline, candidate=good, input={"ticket": "x" * 100})
        client.call(FLAG, "u3", baseline=baseline, candidate=good, input="poison")
        assert client.flush(timeout=30)
        stats = client.stats
    # Then what is stored is redacted and capped, and what could not be redacted is not stored
    kept = {(x.input, x.output) for x in _samples(engine)}
    assert kept == {("mail [email] now", "good: mail [email] now"),
                    ('{"ticket":"' + "x" * 13, "good: {'ticket': '" + "x" * 6)}  # 24 characters each
    assert (stats.samples_kept, stats.samples_written, stats.sample_redaction_errors) == (3, 2, 1)


def test_sample_keeps_what_an_app_served_by_itself(engine: Engine, db_url: str) -> None:
    # Given a rollout whose judge samples 30 %, and an app that calls its models itself
    flag_in_rollout(engine, bp=5_000, plan=PLAN)
    units = [f"user-{i}" for i in range(60)]
    with _client(db_url, capture_samples=True) as client:
        kept = set()
        for unit in units:
            exposure = client.assign(FLAG, unit)
            token = client.exposure_token(exposure)
            # When it hands over each answer (half of them later, by token)
            if (client.sample(exposure, unit, "answer") if unit.endswith(("0", "2", "4"))
                    else client.sample(token, unit, "answer")):
                kept.add(unit)
        assert client.flush(timeout=30)
    # Then the units the hash samples are kept, the same as call() would
    assert kept == _expected_kept(engine, units, 0.3) == {x.input for x in _samples(engine)}


def test_an_online_judge_grades_what_call_captured_and_credits_each_arm(engine: Engine, db_url: str) -> None:
    # Given a 50 % stage whose judge keeps every exposure, and a candidate whose answers are "good"
    flag_id, rollout_id = flag_in_rollout(engine, bp=5_000,
                                          plan={"online_evals": [{"name": "quality", "scorer": "m:f", "sample": 1.0}]})
    with _client(db_url, capture_samples=True) as client:
        served = [client.call(FLAG, f"u{i}", baseline=baseline, candidate=good, input=f"ticket {i}")
                  for i in range(40)]
        assert client.flush(timeout=30)
    # When one grading round runs with a deterministic scorer
    spec = OnlineEval("quality", scorer="tests.sdk.test_call:quality", sample=1.0)
    result = grade_round(engine, flag_id=flag_id, rollout_id=rollout_id, spec=spec, judge=quality,
                         now=datetime.now(UTC))
    # Then every captured answer is graded, as an outcome of the arm that served it
    assert (result.graded, result.failed) == (40, 0)
    grades = _outcomes(engine)
    arms = {r.exposure.variant for r in served}
    assert arms == {"current", "new-model"}
    assert set(grades["new-model"]["quality"]) == {1.0} and set(grades["current"]["quality"]) == {0.0}
    assert len(grades["new-model"]["quality"]) + len(grades["current"]["quality"]) == 40
