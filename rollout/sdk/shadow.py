"""Shadow runs: the candidate answers the same request as the baseline, and nobody waits for it.

`RolloutClient.shadow()` calls the baseline on the caller's thread and hands
the candidate to a small pool of worker threads (`ashadow()`: to a task on
the caller's event loop). When both arms are done, the pair is scored off the
caller's path and stored as two outcomes with one random 63-bit `pair_id`,
which is how the judge joins them.

What never reaches the caller: the candidate's exceptions, its slowness
(a deadline per run, `timeout` seconds from the call), a full pool, the rate
limit, a failing scorer, a failing database. Each of those is counted in
`ShadowStats`; a candidate that failed or ran out of time is also stored as an
outcome with `error = 1`, so the judge sees candidate errors as evidence
rather than as missing data.

Per arm and pair the runner records:

* `latency_ms`: the baseline's call; the candidate's attempts including
  retries and backoff (what a user would have waited with this retry
  policy). A candidate that ran out of time records the time it had used, a
  lower bound: dropping it would make a slow candidate look fast. An arm that
  raised records no latency (a fast failure is not fast service).
* `error`: 0 or 1.
* `cost_usd`: when known, from a callable that returns `(output, cost)` or
  from the `cost=` function applied to each arm's output.
* one metric per scorer (see `rollout.core.scorers` for per-output and agreement
  scorers).

Threads cannot be killed in Python: a candidate that hangs keeps its worker
until it returns. The pool is bounded, so hung candidates at worst fill it and
later runs are skipped as `pool_full`; the caller is never slowed. A
CPU-bound candidate written in Python competes with the caller for the GIL;
shadowed calls to models over the network (the intended use) release it while
they wait.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from rollout.sdk.buffer import OutcomeBuffer
from rollout.sdk.exposures import Served
from rollout.sdk.outcomes import _unit_hash, outcome_entry
from rollout.sdk.samples import SHADOW, SampleCapture, kept_text
from rollout.core.outcome import validate_unit
from rollout.core import CompiledFlag
from rollout.core.ratelimit import TokenBucket
from rollout.core.scorers import Scorer, as_scorers
from rollout.store.shadow_outputs import insert_shadow_outputs

log = logging.getLogger("rollout.client")


def is_transient(exc: BaseException) -> bool:
    """The default retry predicate: timeouts and connection or OS-level failures."""
    return isinstance(exc, (TimeoutError, ConnectionError, OSError))


@dataclass(frozen=True, slots=True)
class Retry:
    """How a candidate call that failed transiently is tried again.

    Up to `attempts` calls in all, waiting a random time in
    [0, min(max_delay, base_delay · 2^(n-1))] before the n-th retry ("full
    jitter", so many processes that failed together do not retry together).
    A retry that could not start and finish its backoff before the run's
    deadline is not made: attempts and total time are both bounded.
    """

    attempts: int = 3
    base_delay: float = 0.05
    max_delay: float = 1.0
    retry_on: Callable[[BaseException], bool] = is_transient

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts must be a whole number >= 1, got {self.attempts!r}")
        if not (self.base_delay >= 0 and self.max_delay >= 0):
            raise ValueError("base_delay and max_delay must be >= 0")

    def delay(self, attempt: int, exc: BaseException, now: float, deadline: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up."""
        if attempt >= self.attempts:
            return None
        try:
            transient = bool(self.retry_on(exc))
        except Exception:  # noqa: BLE001 - a broken predicate means: do not retry
            transient = False
        if not transient:
            return None
        wait = random.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        return wait if now + wait < deadline else None


@dataclass(frozen=True, slots=True)
class ShadowStats:
    """What happened to shadow runs since the client started. Every skipped or failed run is in one counter."""

    sampled: int            # calls whose unit was sampled into shadow
    started: int            # candidate runs handed to the pool (or event loop)
    paired: int             # pairs stored (both arms, one pair_id)
    rate_limited: int       # skipped: the token bucket was empty
    pool_full: int          # skipped: every worker busy and the queue full
    expired: int            # skipped: waited in the queue past its deadline
    abandoned: int          # not stored: the caller was interrupted (KeyboardInterrupt, task cancelled)
    candidate_errors: int   # candidate raised (after retries); stored with error = 1
    candidate_timeouts: int  # candidate ran past its deadline; stored with error = 1
    retries: int            # candidate attempts made after a transient failure
    baseline_errors: int    # the baseline raised (re-raised to the caller; stored with error = 1)
    scoring_errors: int     # a scorer or cost function raised or returned a bad value; that metric left out
    record_errors: int      # a pair could not be turned into outcomes (bad unit id, say); pair dropped
    outputs_stored: int     # outputs handed to the shadow_outputs writer
    redaction_errors: int   # the redaction hook raised or did not return text; that output not stored
    in_flight: int          # pairs started and not yet stored or dropped


@dataclass(slots=True)
class _Arm:
    """How one arm of a pair went."""

    ok: bool = False
    result: Any = None           # what the callable returned, untouched
    error: str | None = None
    latency_ms: float | None = None
    timed_out: bool = False
    skipped: bool = False        # never ran (expired, abandoned): the pair is not stored


_SKIPPED = _Arm(skipped=True)


@dataclass(slots=True, eq=False)
class _Pair:
    compiled: CompiledFlag
    flag_id: int
    unit_id: Any
    attributes: Mapping[str, Any] | None
    candidate: Callable[..., Any]
    args: tuple
    kwargs: dict
    cost: Callable[[Any], float] | None
    scorers: Sequence[Any]
    at: float                    # Unix time of the call: both outcomes carry it
    deadline: float              # time.monotonic() by which the candidate must be done
    pair_id: int
    started: float = 0.0         # time.monotonic() when the candidate's first attempt began
    baseline_arm: _Arm | None = None
    candidate_arm: _Arm | None = None


class ShadowRunner:
    """The worker pool, rate limits, deadlines and scoring behind `shadow()` and `ashadow()`."""

    def __init__(
        self,
        add_outcome: Callable[[Any], None],
        *,
        unit_key: Callable[[], bytes] = lambda: b"",
        engine: Engine | None = None,
        workers: int = 4,
        queue_size: int = 16,
        rate: float | None = None,
        retry: Retry = Retry(),  # frozen, so one shared default is safe
        store_outputs: bool = False,
        redact: Callable[[str], str] | None = None,
        max_output_chars: int = 2_000,
        samples: SampleCapture | None = None,
    ) -> None:
        if workers < 1 or queue_size < 0:
            raise ValueError("shadow workers must be >= 1 and the queue >= 0")
        if rate is not None and not rate > 0:
            raise ValueError(f"shadow rate must be > 0 calls per second, got {rate!r}")
        self._add_outcome = add_outcome
        self._unit_key = unit_key  # the namespace's UNIT secret for stored unit hashes (see client._unit_hash)
        self._workers = workers
        self._rate = rate
        self.retry = retry
        # One slot per worker plus the queue: a run that finds none free is skipped, never queued without bound.
        self._slots = threading.BoundedSemaphore(workers + queue_size)
        self._async_slots = threading.BoundedSemaphore(workers + queue_size)
        self._jobs: queue.SimpleQueue[_Pair | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closing = False
        self._lock = threading.Lock()                 # pair resolution and counters
        self._idle = threading.Condition(self._lock)  # flush() waits here for in-flight pairs
        self._running: dict[int, _Pair] = {}          # worker index -> its pair, for the deadline watcher
        self._watch = threading.Condition()
        self._buckets: dict[str, TokenBucket] = {}
        self._finisher: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()   # the event loop keeps only weak references
        self._scorer_cache: dict[int, tuple[Sequence[Any], tuple[Scorer, ...]]] = {}
        self._counts: dict[str, int] = dict.fromkeys(
            ("sampled", "started", "paired", "rate_limited", "pool_full", "expired", "abandoned",
             "candidate_errors", "candidate_timeouts", "retries", "baseline_errors", "scoring_errors",
             "record_errors", "outputs_stored", "redaction_errors"), 0)
        self._in_flight = 0
        # Outputs are stored only when the plan owner opts in: they can hold personal data.
        self._store_outputs = store_outputs or redact is not None
        self._redact = redact
        self._max_output_chars = max_output_chars
        self._outputs: OutcomeBuffer | None = None
        self._samples = samples  # the client's sample capture, when it keeps samples
        if self._store_outputs:
            if engine is None:
                raise ValueError("storing shadow outputs needs a database engine")
            # Outputs need no idempotency key: the buffer's (source, seq) is not used for them.
            self._outputs = OutcomeBuffer(lambda _source, batch: insert_shadow_outputs(engine, [e for _, e in batch]),
                                          capacity=10_000, batch_size=500, flush_interval=0.5)

    # --- the caller's side ---------------------------------------------------------------

    def run(
        self, compiled: CompiledFlag, flag_id: int, unit_id: Any, attributes: Mapping[str, Any] | None,
        baseline: Callable[..., Any], candidate: Callable[..., Any], args: tuple, kwargs: dict,
        cost: Callable[[Any], float] | None, scorers: Sequence[Any], timeout: float,
    ) -> Any:
        """A sampled call: start the candidate in the pool, run the baseline here, return its result."""
        pair = self._admit(compiled, flag_id, unit_id, attributes, candidate, args, kwargs, cost, scorers,
                           timeout, self._slots)
        if pair is None:
            return baseline(*args, **kwargs)
        if not self._started:
            self._start()
        self._jobs.put(pair)
        t0 = time.perf_counter()
        try:
            result = baseline(*args, **kwargs)
        except Exception as exc:
            self._resolve_baseline(pair, _Arm(error=_describe(exc)))
            raise
        except BaseException:
            self._count("abandoned")
            self._resolve_baseline(pair, _SKIPPED)
            raise
        self._resolve_baseline(pair, _Arm(ok=True, result=result, latency_ms=(time.perf_counter() - t0) * 1e3))
        return result

    async def run_async(
        self, compiled: CompiledFlag, flag_id: int, unit_id: Any, attributes: Mapping[str, Any] | None,
        baseline: Callable[..., Any], candidate: Callable[..., Any], args: tuple, kwargs: dict,
        cost: Callable[[Any], float] | None, scorers: Sequence[Any], timeout: float,
    ) -> Any:
        """`run` for asyncio: the candidate is a task on this loop, cancelled at its deadline."""
        pair = self._admit(compiled, flag_id, unit_id, attributes, candidate, args, kwargs, cost, scorers,
                           timeout, self._async_slots)
        if pair is None:
            return await baseline(*args, **kwargs)
        task = asyncio.get_running_loop().create_task(self._candidate_task(pair))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        t0 = time.perf_counter()
        try:
            result = await baseline(*args, **kwargs)
        except Exception as exc:
            self._resolve_baseline(pair, _Arm(error=_describe(exc)))
            raise
        except BaseException:
            self._count("abandoned")
            self._resolve_baseline(pair, _SKIPPED)
            raise
        self._resolve_baseline(pair, _Arm(ok=True, result=result, latency_ms=(time.perf_counter() - t0) * 1e3))
        return result

    def _admit(
        self, compiled: CompiledFlag, flag_id: int, unit_id: Any, attributes: Mapping[str, Any] | None,
        candidate: Callable[..., Any], args: tuple, kwargs: dict, cost: Callable[[Any], float] | None,
        scorers: Sequence[Any], timeout: float, slots: threading.BoundedSemaphore,
    ) -> _Pair | None:
        """A new pair if the rate limit and the pool both have room, else None (and the reason counted)."""
        skipped = None
        rate = self._rate if self._rate is not None else compiled.state.shadow_rate
        if self._closing:
            skipped = "pool_full"
        elif rate is not None:
            bucket = self._buckets.get(compiled.key)
            if bucket is None or bucket.rate != rate:
                bucket = self._buckets[compiled.key] = TokenBucket(rate)
            if bucket.take() > 0:
                skipped = "rate_limited"
        if skipped is None and not slots.acquire(blocking=False):
            skipped = "pool_full"
        counts = self._counts
        with self._lock:
            counts["sampled"] += 1
            if skipped is not None:
                counts[skipped] += 1
                return None
            self._in_flight += 1
            counts["started"] += 1
        return _Pair(compiled, flag_id, unit_id, attributes, candidate, args, kwargs, cost, scorers,
                     time.time(), time.monotonic() + timeout, random.getrandbits(63))

    # --- the candidate's side: threads ---------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            for i in range(self._workers):
                t = threading.Thread(target=self._work, args=(i,), name=f"rollout-shadow-{i}", daemon=True)
                t.start()
                self._threads.append(t)
            watcher = threading.Thread(target=self._watch_deadlines, name="rollout-shadow-deadlines", daemon=True)
            watcher.start()
            self._threads.append(watcher)
            self._started = True

    def _work(self, index: int) -> None:
        while True:
            pair = self._jobs.get()
            if pair is None:
                return
            try:
                self._run_candidate(index, pair)
            except BaseException as exc:  # noqa: BLE001 - SystemExit from a candidate, or a bug of ours:
                # keep the worker alive and close the pair, or flush() would wait for it forever.
                log.warning("rollout: shadow run of %r failed outside the candidate call: %s",
                            pair.compiled.key, _describe(exc))
                self._resolve_candidate(pair, _Arm(error=_describe(exc)), inline=True)
            finally:
                self._slots.release()

    def _run_candidate(self, index: int, pair: _Pair) -> None:
        now = time.monotonic()
        if now >= pair.deadline:
            self._count("expired")
            self._resolve_candidate(pair, _SKIPPED, inline=True)
            return
        pair.started = now
        with self._watch:
            self._running[index] = pair
            self._watch.notify()
        try:
            arm = self._attempt(pair)
        finally:
            with self._watch:
                if self._running.get(index) is pair:
                    del self._running[index]
        self._resolve_candidate(pair, arm, inline=True)

    def _attempt(self, pair: _Pair) -> _Arm:
        t0 = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = pair.candidate(*pair.args, **pair.kwargs)
            except Exception as exc:  # noqa: BLE001 - whatever the candidate raises stays here
                now = time.monotonic()
                if now >= pair.deadline:
                    return _timeout_arm(t0)
                wait = self.retry.delay(attempt, exc, now, pair.deadline)
                if wait is None:
                    return _Arm(error=_describe(exc), latency_ms=None)
                self._count("retries")
                time.sleep(wait)
                continue
            if time.monotonic() >= pair.deadline:
                return _timeout_arm(t0)  # it answered, but later than it was allowed to
            return _Arm(ok=True, result=result, latency_ms=(time.perf_counter() - t0) * 1e3)

    def _watch_deadlines(self) -> None:
        """Declare a candidate timed out at its deadline, even if its thread is still stuck in the call."""
        while True:
            overdue: list[_Pair] = []
            with self._watch:
                while not self._running and not self._closing:
                    self._watch.wait()
                if self._closing and not self._running:
                    return
                now = time.monotonic()
                nearest = math.inf
                for index, pair in list(self._running.items()):
                    if now >= pair.deadline:
                        del self._running[index]
                        overdue.append(pair)
                    else:
                        nearest = min(nearest, pair.deadline)
                if not overdue:
                    # A new run only ever has a later deadline than `nearest`, unless the
                    # timeout differs per call: wake on every registration to be safe.
                    self._watch.wait(None if nearest == math.inf else nearest - now + 0.001)
            for pair in overdue:
                self._resolve_candidate(pair, _timeout_arm_since(pair.started), inline=False)

    # --- the candidate's side: asyncio ---------------------------------------------------

    async def _candidate_task(self, pair: _Pair) -> None:
        arm = _SKIPPED
        try:
            pair.started = time.monotonic()
            arm = await self._attempt_async(pair)
        except BaseException:  # cancelled (the loop is shutting down): nothing to compare
            self._count("abandoned")
            arm = _SKIPPED
            raise
        finally:
            self._async_slots.release()
            self._resolve_candidate(pair, arm, inline=False)

    async def _attempt_async(self, pair: _Pair) -> _Arm:
        t0 = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            remaining = pair.deadline - time.monotonic()
            if remaining <= 0:
                return _timeout_arm(t0)
            deadline = asyncio.timeout(remaining)
            try:
                async with deadline:
                    result = await pair.candidate(*pair.args, **pair.kwargs)
            except Exception as exc:  # noqa: BLE001 - whatever the candidate raises stays here
                now = time.monotonic()
                # expired() tells our deadline from a TimeoutError the candidate raised itself,
                # which is transient and retried; the loop may fire a timer a clock tick early.
                if deadline.expired() or now >= pair.deadline:
                    return _timeout_arm(t0)
                wait = self.retry.delay(attempt, exc, now, pair.deadline)
                if wait is None:
                    return _Arm(error=_describe(exc))
                self._count("retries")
                await asyncio.sleep(wait)
                continue
            return _Arm(ok=True, result=result, latency_ms=(time.perf_counter() - t0) * 1e3)

    # --- pairing -------------------------------------------------------------------------

    def _resolve_baseline(self, pair: _Pair, arm: _Arm) -> None:
        with self._lock:
            pair.baseline_arm = arm
            done = pair.candidate_arm is not None
        if done:
            # Scorers can be slow (an LLM judge): never on the caller's thread.
            self._finish_later(pair)

    def _resolve_candidate(self, pair: _Pair, arm: _Arm, *, inline: bool) -> None:
        with self._lock:
            if pair.candidate_arm is not None:
                return  # the deadline watcher got there first; this late answer is ignored
            pair.candidate_arm = arm
            done = pair.baseline_arm is not None
        if done:
            if inline:
                self._finish(pair)
            else:
                self._finish_later(pair)

    def _finish_later(self, pair: _Pair) -> None:
        finisher = self._finisher
        if finisher is None:
            with self._lock:
                if self._finisher is None:
                    self._finisher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rollout-shadow-score")
                finisher = self._finisher
        try:
            finisher.submit(self._finish, pair)
        except RuntimeError:  # shut down already (interpreter exit): score here rather than lose the pair
            self._finish(pair)

    def _finish(self, pair: _Pair) -> None:
        """Score the pair and hand both outcomes to the buffer; counts every way it can fall short."""
        try:
            self._store_pair(pair)
        except Exception as exc:  # noqa: BLE001 - a bad unit id, say: drop the pair, keep serving
            self._count("record_errors")
            log.warning("rollout: a shadow pair of %r could not be recorded: %s", pair.compiled.key, exc)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _store_pair(self, pair: _Pair) -> None:
        base, cand = pair.baseline_arm, pair.candidate_arm
        assert base is not None and cand is not None
        if base.skipped or cand.skipped:
            return  # counted where it was skipped (expired, abandoned)
        if not base.ok:
            self._count("baseline_errors")
        if cand.timed_out:
            self._count("candidate_timeouts")
        elif not cand.ok:
            self._count("candidate_errors")
        base_out, base_metrics = self._arm_metrics(pair, base)
        cand_out, cand_metrics = self._arm_metrics(pair, cand)
        try:
            scorers = self._scorers(pair.scorers)
        except (TypeError, ValueError) as exc:  # a bad scorer list costs the scores, not the pair
            self._count("scoring_errors")
            log.warning("rollout: shadow scorers for %r are invalid: %s", pair.compiled.key, exc)
            scorers = ()
        subject = _scorer_input(pair.args, pair.kwargs)
        for scorer in scorers:
            if scorer.compares:
                if not base.ok:
                    continue  # nothing to agree with
                value = self._score(scorer, base_out, cand_out) if cand.ok else 0.0
                if value is not None:
                    cand_metrics[scorer.name] = value
                    base_metrics[scorer.name] = 1.0
                continue
            for arm, out, metrics in ((base, base_out, base_metrics), (cand, cand_out, cand_metrics)):
                if arm.ok:
                    value = self._score(scorer, subject, out)
                    if value is not None:
                        metrics[scorer.name] = value
        state = pair.compiled.state
        entries = [
            outcome_entry(pair.compiled, pair.flag_id, pair.unit_id, metrics, unit_key=self._unit_key(), variant=variant,
                          attributes=pair.attributes, at=pair.at, pair_id=pair.pair_id)
            for variant, metrics in ((state.baseline, base_metrics), (state.candidate, cand_metrics))
        ]
        # Both built before either is added: a pair is stored whole or not at all.
        for entry in entries:
            self._add_outcome(entry)
        self._count("paired")
        arms = ((state.baseline, base, base_out), (state.candidate, cand, cand_out))
        if self._outputs is not None:
            for variant, arm, out in arms:
                if arm.ok:
                    self._store_output(pair, variant, out)
        if self._samples is not None:
            try:
                self._keep_samples(pair, arms)
            except Exception as exc:  # noqa: BLE001 - closing, say: the pair is stored, its samples are not
                log.debug("rollout: shadow samples of %r not kept: %s", pair.compiled.key, exc)

    def _arm_metrics(self, pair: _Pair, arm: _Arm) -> tuple[Any, dict[str, float]]:
        """(the arm's output, its latency/error/cost metrics)."""
        metrics: dict[str, float] = {"error": 0.0 if arm.ok else 1.0}
        if arm.latency_ms is not None:
            metrics["latency_ms"] = arm.latency_ms
        if not arm.ok:
            return None, metrics
        output, cost = arm.result, None
        try:
            if pair.cost is not None:
                cost = pair.cost(output)
            elif (type(output) is tuple and len(output) == 2 and isinstance(output[1], (int, float))
                  and not isinstance(output[1], bool)):
                output, cost = output
        except Exception:  # noqa: BLE001 - a broken cost function costs the metric, not the pair
            self._count("scoring_errors")
            cost = None
        if cost is not None:
            if isinstance(cost, (int, float)) and not isinstance(cost, bool) and math.isfinite(cost) and cost >= 0:
                metrics["cost_usd"] = float(cost)
            else:
                self._count("scoring_errors")
        return output, metrics

    def _score(self, scorer: Scorer, a: Any, b: Any) -> float | None:
        try:
            return scorer(a, b)
        except Exception as exc:  # noqa: BLE001 - a scorer's fault leaves its metric out, nothing more
            self._count("scoring_errors")
            log.debug("rollout: scorer %r failed: %s", scorer.name, exc)
            return None

    def _scorers(self, items: Sequence[Any]) -> tuple[Scorer, ...]:
        """Checked scorers, cached per sequence object: call sites pass the same tuple every time."""
        if not items:
            return ()
        cached = self._scorer_cache.get(id(items))
        if cached is not None and cached[0] is items:
            return cached[1]
        scorers = as_scorers(items)
        if len(self._scorer_cache) < 1_000:
            self._scorer_cache[id(items)] = (items, scorers)  # holding `items` keeps its id from being reused
        return scorers

    def _store_output(self, pair: _Pair, variant: str, output: Any) -> None:
        text = kept_text(output, self._redact, self._max_output_chars)
        if text is None:
            self._count("redaction_errors")
            return
        assert self._outputs is not None
        self._outputs.add((pair.pair_id, pair.flag_id, variant, text, pair.at))
        self._count("outputs_stored")

    def _keep_samples(self, pair: _Pair, arms: Iterable[tuple[str, _Arm, Any]]) -> None:
        """Both arms' input and answer as shadow samples (what `rollout eval export --from-shadow` reads)."""
        assert self._samples is not None
        state = pair.compiled.state
        unit_hash = _unit_hash(self._unit_key(), validate_unit(pair.unit_id))
        stratum = pair.compiled.stratum_of(pair.attributes)
        subject = _scorer_input(pair.args, pair.kwargs)
        for variant, arm, out in arms:
            if arm.ok:
                served = Served(pair.flag_id, state.rollout_id or 0, state.stage, variant, stratum, unit_hash,
                                int(pair.at))
                self._samples.add(served, SHADOW, subject, out, at=pair.at, pair_id=pair.pair_id)

    # --- lifecycle -----------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    @property
    def stats(self) -> ShadowStats:
        with self._lock:
            return ShadowStats(**self._counts, in_flight=self._in_flight)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every shadow pair started so far is stored in the buffer (or dropped)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(0.05 if remaining is None else min(0.05, remaining))
        if self._outputs is not None:
            return self._outputs.flush(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return True

    def close(self, timeout: float | None = 30.0) -> None:
        """Let pairs in flight finish (up to `timeout`), then stop the workers."""
        self.wait_idle(timeout)
        self._closing = True
        for _ in range(self._workers):
            self._jobs.put(None)
        with self._watch:
            self._watch.notify_all()
        if self._finisher is not None:
            self._finisher.shutdown(wait=False)
        if self._outputs is not None:
            self._outputs.close(5.0)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _timeout_arm(t0: float) -> _Arm:
    return _Arm(error="TimeoutError", latency_ms=(time.perf_counter() - t0) * 1e3, timed_out=True)


def _timeout_arm_since(started: float) -> _Arm:
    return _Arm(error="TimeoutError", latency_ms=(time.monotonic() - started) * 1e3, timed_out=True)


def _scorer_input(args: tuple, kwargs: dict) -> Any:
    """What per-output scorers see as the input: the one argument, or (args, kwargs) when there were several."""
    if len(args) == 1 and not kwargs:
        return args[0]
    if not args and len(kwargs) == 1:
        return next(iter(kwargs.values()))
    return (args, kwargs)


__all__ = ["Retry", "ShadowRunner", "ShadowStats", "is_transient"]
