"""shadow()/ashadow(): the caller gets the baseline, always; the candidate's run is paired, bounded and counted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import replace

import pytest
from sqlalchemy import Engine, select

from rollout import RolloutClient
from rollout.core import scorers as sc
from rollout.sdk import Retry
from rollout.core import CompiledFlag
from rollout.store import flags as store
from rollout.store.db import transaction
from rollout.store.models import Outcome, ShadowOutput

FLAG = "summarizer"


def _flag(engine: Engine, shadow_bp: int | None = 10_000) -> None:
    """A flag in shadow with every unit sampled (or left inactive when shadow_bp is None)."""
    with transaction(engine) as s:
        store.create_flag(s, FLAG, variants=["current", "new-model"], actor="t", salt="salt")
        if shadow_bp is not None:
            store.set_shadow(s, FLAG, shadow_bp, actor="t")


def _client(db_url: str, **kwargs: object) -> RolloutClient:
    return RolloutClient(db_url, listen=False, refresh_interval=3600, **kwargs)  # type: ignore[arg-type]


def _pairs(engine: Engine) -> dict[int, dict[str, dict[str, float]]]:
    """pair_id -> variant -> metric -> value, from the outcomes table."""
    pairs: dict[int, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    with transaction(engine) as s:
        for row in s.scalars(select(Outcome)):
            assert row.pair_id is not None
            pairs[row.pair_id][row.variant][row.metric] = row.value
    return {p: dict(v) for p, v in pairs.items()}


def _only_pair(engine: Engine) -> tuple[dict[str, float], dict[str, float]]:
    pairs = _pairs(engine)
    assert len(pairs) == 1, pairs
    (arms,) = pairs.values()
    return arms["current"], arms["new-model"]


def upper(text: str) -> str:
    return text.upper()


# --- what the caller sees -------------------------------------------------------------

def test_units_not_in_shadow_only_call_the_baseline(engine: Engine, db_url: str) -> None:
    # Given a flag in shadow with a 0% sample, and another that is not in shadow at all
    _flag(engine, shadow_bp=0)
    calls = []
    with _client(db_url) as client:
        # When shadow() is called
        results = [client.shadow(FLAG, f"u{i}", upper, calls.append, "hi") for i in range(50)]
        unknown = client.shadow("no-such-flag", "u1", upper, calls.append, "hi")
        client.flush(5)
        # Then the baseline answers, the candidate never runs, and nothing is recorded
        assert results == ["HI"] * 50 and unknown == "HI" and calls == []
        assert client.shadow_stats.sampled == 0
    assert _pairs(engine) == {}


def test_a_failing_candidate_never_reaches_the_caller_and_is_stored_as_an_error(engine: Engine,
                                                                                db_url: str) -> None:
    _flag(engine)

    def broken(text: str) -> str:
        raise ValueError("the new model fell over")

    with _client(db_url) as client:
        # When the candidate raises (not a transient error, so no retry)
        result = client.shadow(FLAG, "u1", upper, broken, "hi", attributes={"tier": "free"})
        assert client.flush(5)
        # Then the caller gets the baseline's answer, and the pair says the candidate failed
        assert result == "HI"
        stats = client.shadow_stats
        assert (stats.paired, stats.candidate_errors, stats.retries) == (1, 1, 0)
    base, cand = _only_pair(engine)
    assert base["error"] == 0.0 and base["latency_ms"] >= 0
    assert cand == {"error": 1.0}  # a failure is not fast service: no latency


def test_the_baselines_own_exception_propagates_unchanged_and_is_recorded(engine: Engine, db_url: str) -> None:
    _flag(engine)
    boom = KeyError("ticket 42")

    def baseline(text: str) -> str:
        raise boom

    with _client(db_url) as client:
        # When the baseline raises, in and out of the shadow sample
        with pytest.raises(KeyError) as raised:
            client.shadow(FLAG, "u1", baseline, upper, "hi")
        with pytest.raises(KeyError) as raised_unsampled:
            client.shadow("no-such-flag", "u1", baseline, upper, "hi")
        assert client.flush(5)
        assert client.shadow_stats.baseline_errors == 1
    # Then it is the very same exception, as if shadow() were not there
    assert raised.value is boom and raised_unsampled.value is boom
    base, cand = _only_pair(engine)
    assert (base["error"], cand["error"]) == (1.0, 0.0)


def test_a_slow_candidate_times_out_without_slowing_the_caller(engine: Engine, db_url: str) -> None:
    _flag(engine)
    release = threading.Event()

    def hangs(text: str) -> str:
        release.wait(10)
        return text

    with _client(db_url) as client:
        try:
            # When the candidate hangs well past its 0.2 s timeout
            t0 = time.perf_counter()
            result = client.shadow(FLAG, "u1", upper, hangs, "hi", timeout=0.2)
            caller_s = time.perf_counter() - t0
            # Then the caller returned at once, and the pair is recorded at the deadline,
            # while the candidate's thread is still stuck
            assert result == "HI" and caller_s < 0.05
            assert client.flush(2)
            assert not release.is_set()
            assert client.shadow_stats.candidate_timeouts == 1
        finally:
            release.set()
    base, cand = _only_pair(engine)
    # What it used from its start (a lower bound); the deadline counts from the call, a few ms earlier
    assert cand["error"] == 1.0 and 150 <= cand["latency_ms"] < 1000
    assert base["error"] == 0.0


def test_a_full_pool_skips_the_shadow_run(engine: Engine, db_url: str) -> None:
    _flag(engine)
    release = threading.Event()
    started = threading.Event()

    def blocks(text: str) -> str:
        started.set()
        release.wait(10)
        return text

    with _client(db_url, shadow_workers=1, shadow_queue=0) as client:
        try:
            # Given the only worker busy
            assert client.shadow(FLAG, "u1", upper, blocks, "a") == "A"
            assert started.wait(2)
            # When more calls come in
            t0 = time.perf_counter()
            results = [client.shadow(FLAG, f"u{i}", upper, blocks, "b") for i in range(5)]
            # Then they are answered at once and counted as skipped
            assert results == ["B"] * 5 and time.perf_counter() - t0 < 0.05
            stats = client.shadow_stats
            assert (stats.sampled, stats.started, stats.pool_full) == (6, 1, 5)
        finally:
            release.set()
        assert client.flush(5)
    assert len(_pairs(engine)) == 1


def test_the_rate_limit_stops_shadowing(engine: Engine, db_url: str) -> None:
    _flag(engine)
    calls = []
    # Given a rate limit of 1 candidate call a second (a bucket of one token)
    with _client(db_url, shadow_rate=1.0) as client:
        # When 20 requests arrive at once
        results = [client.shadow(FLAG, f"u{i}", upper, calls.append, "x") for i in range(20)]
        assert client.flush(5)
        # Then one runs the candidate, the rest are skipped as rate limited
        assert results == ["X"] * 20
        stats = client.shadow_stats
        assert (len(calls), stats.started, stats.rate_limited) == (1, 1, 19)
    assert len(_pairs(engine)) == 1


def test_the_shadow_stages_rate_limit_comes_from_the_snapshot(engine: Engine, db_url: str) -> None:
    _flag(engine)
    calls = []
    with _client(db_url) as client:
        # Given the snapshot says the shadow stage allows 2 calls a second
        compiled = client._snapshot.flags[FLAG]
        client._snapshot.flags = {FLAG: CompiledFlag(replace(compiled.state, shadow_rate=2.0))}
        # When 10 requests arrive at once, Then two (the bucket's burst) run the candidate
        for i in range(10):
            client.shadow(FLAG, f"u{i}", upper, calls.append, "x")
        assert client.flush(5)
        assert (len(calls), client.shadow_stats.rate_limited) == (2, 8)


# --- retries --------------------------------------------------------------------------

def test_transient_failures_are_retried_with_backoff(engine: Engine, db_url: str) -> None:
    _flag(engine)
    attempts: list[float] = []

    def flaky(text: str) -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("reset by peer")
        return text.upper()

    with _client(db_url, shadow_retry=Retry(attempts=3, base_delay=0.02, max_delay=0.02)) as client:
        # When the candidate fails twice with a connection error, then answers
        assert client.shadow(FLAG, "u1", upper, flaky, "hi", scorers=(sc.exact_match(),)) == "HI"
        assert client.flush(5)
        # Then the third attempt's answer is the candidate's, and the pair agrees
        assert (len(attempts), client.shadow_stats.retries, client.shadow_stats.candidate_errors) == (3, 2, 0)
    base, cand = _only_pair(engine)
    assert (cand["error"], cand["exact_match"], base["exact_match"]) == (0.0, 1.0, 1.0)


def test_retries_stop_after_the_attempts_and_never_for_non_transient_errors(engine: Engine, db_url: str) -> None:
    _flag(engine)
    counts = {"transient": 0, "fatal": 0}

    def always_down(text: str) -> str:
        counts["transient"] += 1
        raise TimeoutError("upstream timeout")  # the candidate's own timeout: transient

    def fatal(text: str) -> str:
        counts["fatal"] += 1
        raise ValueError("bad request")

    with _client(db_url, shadow_retry=Retry(attempts=4, base_delay=0.001, max_delay=0.001)) as client:
        client.shadow(FLAG, "u1", upper, always_down, "hi")
        client.shadow(FLAG, "u2", upper, fatal, "hi")
        assert client.flush(5)
        stats = client.shadow_stats
    assert counts == {"transient": 4, "fatal": 1}
    assert (stats.retries, stats.candidate_errors, stats.candidate_timeouts) == (3, 2, 0)


def test_retries_stay_within_the_timeout(engine: Engine, db_url: str) -> None:
    _flag(engine)
    attempts = []

    def always_down(text: str) -> str:
        attempts.append(1)
        raise ConnectionError("refused")

    # Given many attempts allowed but backoff that cannot fit in the timeout
    with _client(db_url, shadow_retry=Retry(attempts=1_000, base_delay=0.05, max_delay=0.1)) as client:
        t0 = time.monotonic()
        client.shadow(FLAG, "u1", upper, always_down, "hi", timeout=0.3)
        assert client.flush(5)
        # Then the run gave up before its deadline, after a handful of attempts
        assert time.monotonic() - t0 < 0.6
    assert 2 <= len(attempts) < 20


def test_backoff_is_exponential_with_full_jitter_and_respects_the_deadline() -> None:
    retry = Retry(attempts=5, base_delay=0.1, max_delay=0.5)
    err = ConnectionError()
    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5)]:
        waits = [retry.delay(attempt, err, now=0.0, deadline=100.0) for _ in range(200)]
        assert all(w is not None and 0 <= w <= cap for w in waits)
        assert max(waits) > cap * 0.8  # jitter spans the range, not a fixed delay  # type: ignore[operator]
    assert retry.delay(5, err, now=0.0, deadline=100.0) is None            # out of attempts
    assert retry.delay(1, ValueError(), now=0.0, deadline=100.0) is None   # not transient
    assert retry.delay(1, err, now=0.0, deadline=0.0) is None              # no time left
    custom = Retry(retry_on=lambda e: isinstance(e, ValueError))
    assert custom.delay(1, ValueError(), now=0.0, deadline=100.0) is not None


# --- what is stored -------------------------------------------------------------------

def test_a_pair_shares_one_pair_id_unit_and_stratum_and_carries_the_expected_metrics(engine: Engine,
                                                                                     db_url: str) -> None:
    _flag(engine)
    scorers = (sc.exact_match(), sc.similarity(), sc.json_valid(), sc.refusal(),
               sc.quality(lambda ticket, out: min(1.0, len(out) / len(ticket)), name="coverage"))

    def baseline(ticket: str) -> tuple[str, float]:
        return '{"summary": "login loop"}', 0.002      # (output, cost)

    def candidate(ticket: str) -> tuple[str, float]:
        return "I'm unable to summarize this.", 0.010

    with _client(db_url) as client:
        result = client.shadow(FLAG, "u1", baseline, candidate, "user cannot log in", attributes={"tier": "pro"},
                               scorers=scorers)
        assert client.flush(5)
        assert client.shadow_stats.scoring_errors == 0
    # The caller got exactly what the baseline returned, cost and all
    assert result == ('{"summary": "login loop"}', 0.002)
    with transaction(engine) as s:
        rows = s.scalars(select(Outcome)).all()
    assert len({r.pair_id for r in rows}) == 1 and 0 <= rows[0].pair_id < 2**63
    assert len({r.unit_hash for r in rows}) == 1 and len({r.recorded_at for r in rows}) == 1
    assert {r.variant for r in rows} == {"current", "new-model"}
    base, cand = _only_pair(engine)
    expected_similarity = sc.text_similarity('{"summary": "login loop"}', "I'm unable to summarize this.")
    assert set(base) == set(cand) == {"latency_ms", "error", "cost_usd", "exact_match", "similarity",
                                      "json_valid", "refusal", "coverage"}
    assert (base["cost_usd"], cand["cost_usd"]) == (0.002, 0.010)
    # agreement: the baseline records 1.0, the candidate its score
    assert (base["exact_match"], cand["exact_match"]) == (1.0, 0.0)
    assert base["similarity"] == 1.0 and cand["similarity"] == pytest.approx(expected_similarity)
    # per-output: each arm its own
    assert (base["json_valid"], cand["json_valid"]) == (1.0, 0.0)
    assert (base["refusal"], cand["refusal"]) == (0.0, 1.0)
    assert base["coverage"] == 1.0 and cand["coverage"] == 1.0


def test_a_cost_function_prices_each_arms_output_and_a_bad_scorer_only_loses_its_metric(engine: Engine,
                                                                                      db_url: str) -> None:
    _flag(engine)

    def flaky_judge(_input: str, output: str) -> float:
        if output == "HI":
            raise RuntimeError("judge API down")
        return 0.75

    scorers = (sc.quality(flaky_judge, name="judge"),)
    with _client(db_url) as client:
        client.shadow(FLAG, "u1", upper, lambda t: t * 3, "hi", cost=lambda out: len(out) / 1000, scorers=scorers)
        assert client.flush(5)
        assert client.shadow_stats.scoring_errors == 1
    base, cand = _only_pair(engine)
    assert (base["cost_usd"], cand["cost_usd"]) == (0.002, 0.006)
    assert "judge" not in base and cand["judge"] == 0.75


def test_outputs_are_not_stored_by_default(engine: Engine, db_url: str) -> None:
    _flag(engine)
    with _client(db_url) as client:
        client.shadow(FLAG, "u1", upper, upper, "alice@example.com")
        assert client.flush(5)
    with transaction(engine) as s:
        assert s.scalars(select(ShadowOutput)).all() == []


def test_stored_outputs_are_redacted_and_capped(engine: Engine, db_url: str) -> None:
    _flag(engine)

    def redact(text: str) -> str:
        if "CRASH" in text:
            raise ValueError("cannot parse")
        return text.replace("alice@example.com", "<email>")

    with _client(db_url, redact=redact, max_output_chars=20) as client:
        client.shadow(FLAG, "u1", lambda t: f"mail {t} now, please, today", lambda t: {"to": t}, "alice@example.com")
        # When redaction fails, the output is not stored at all (never unredacted)
        client.shadow(FLAG, "u2", lambda t: "CRASH", lambda t: "fine", "x")
        assert client.flush(5)
        assert client.shadow_stats.redaction_errors == 1
    with transaction(engine) as s:
        rows = {(r.pair_id, r.variant): r.output for r in s.scalars(select(ShadowOutput))}
    pairs = _pairs(engine)
    first = next(p for p, arms in pairs.items() if (p, "new-model") in rows and rows[(p, "new-model")] != "fine")
    assert rows[(first, "current")] == "mail <email> now, pl"       # redacted, then cut at 20
    assert rows[(first, "new-model")] == '{"to":"<email>"}'         # JSON outputs as text
    assert sorted(v for (p, v) in rows if p != first) == ["new-model"]  # the CRASH output was dropped
    assert all(len(text) <= 20 for text in rows.values())


# --- asyncio --------------------------------------------------------------------------

def test_ashadow_returns_the_baseline_and_cancels_a_slow_candidate_at_its_deadline(engine: Engine,
                                                                                  db_url: str) -> None:
    _flag(engine)
    cancelled = []

    async def baseline(text: str) -> str:
        await asyncio.sleep(0.01)
        return text.upper()

    async def slow(text: str) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return text

    async def broken(text: str) -> str:
        raise ValueError("nope")

    async def main(client: RolloutClient) -> list[str]:
        results = [await client.ashadow(FLAG, "u1", baseline, slow, "hi", timeout=0.1),
                   await client.ashadow(FLAG, "u2", baseline, broken, "ho", scorers=(sc.similarity(),)),
                   await client.ashadow(FLAG, "u3", baseline, baseline, "ok", scorers=(sc.similarity(),))]
        await asyncio.sleep(0.3)  # an app's loop keeps running; let the candidate tasks end
        return results

    with _client(db_url) as client:
        t0 = time.perf_counter()
        results = asyncio.run(main(client))
        assert time.perf_counter() - t0 < 2
        assert client.flush(5)
        stats = client.shadow_stats
    assert results == ["HI", "HO", "OK"] and cancelled == [True]
    assert (stats.paired, stats.candidate_timeouts, stats.candidate_errors) == (3, 1, 1)
    by_candidate = sorted((arms["new-model"]["error"], arms["new-model"].get("similarity", -1.0))
                          for arms in _pairs(engine).values())
    # fine: agrees; timed out without a similarity scorer: none; failed: agreement 0
    assert by_candidate == [(0.0, 1.0), (1.0, -1.0), (1.0, 0.0)]


def test_ashadow_baseline_exceptions_propagate(engine: Engine, db_url: str) -> None:
    _flag(engine)

    async def baseline(text: str) -> str:
        raise LookupError("no such ticket")

    async def candidate(text: str) -> str:
        return text

    async def main(client: RolloutClient) -> None:
        with pytest.raises(LookupError, match="no such ticket"):
            await client.ashadow(FLAG, "u1", baseline, candidate, "hi")
        await asyncio.sleep(0.05)

    with _client(db_url) as client:
        asyncio.run(main(client))
        assert client.flush(5)
    base, cand = _only_pair(engine)
    assert (base["error"], cand["error"]) == (1.0, 0.0)


def test_an_invalid_scorer_list_costs_the_scores_not_the_pair(engine: Engine, db_url: str) -> None:
    _flag(engine)
    with _client(db_url) as client:
        # Given two scorers with one name (a mistake only noticed off the caller's path)
        assert client.shadow(FLAG, "u1", upper, upper, "hi", scorers=(sc.similarity(), sc.similarity())) == "HI"
        assert client.flush(5)
        assert (client.shadow_stats.paired, client.shadow_stats.scoring_errors) == (1, 1)
    base, cand = _only_pair(engine)
    assert set(base) == set(cand) == {"latency_ms", "error"}


def test_a_candidate_raising_system_exit_neither_kills_the_worker_nor_stalls_flush(engine: Engine,
                                                                                  db_url: str) -> None:
    _flag(engine)

    def exits(text: str) -> str:
        raise SystemExit(3)

    with _client(db_url, shadow_workers=1) as client:
        # When a candidate raises a BaseException, and then another run comes along
        assert client.shadow(FLAG, "u1", upper, exits, "a") == "A"
        assert client.shadow(FLAG, "u2", upper, upper, "b") == "B"
        # Then both pairs are stored promptly: the first as a candidate error, the second normally
        assert client.flush(3)
        assert client.shadow_stats.paired == 2
    errors = sorted(arms["new-model"]["error"] for arms in _pairs(engine).values())
    assert errors == [0.0, 1.0]
