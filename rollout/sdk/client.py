"""`RolloutClient`: what an application holds to ask for variants and report outcomes."""

from __future__ import annotations

import asyncio
import atexit
import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Engine

from rollout.sdk.buffer import CloseResult, OutcomeBuffer
from rollout.sdk.exposures import (
    DEFAULT_HORIZON, ExposureCounts, ExposureKeys, Served, cell_entry, served_entry, served_of,
)
from rollout.sdk.outcomes import _unit_hash, outcome_entry
from rollout.sdk.samples import ONLINE, SampleCapture
from rollout.sdk.shadow import Retry, ShadowRunner, ShadowStats
from rollout.sdk.snapshot import DEFAULT_REFRESH_TIMEOUT, Refresher, Snapshot
from rollout.core.online_eval import kept_for_judges
from rollout.core.outcome import kept_text, validate_unit
from rollout.core import Assignment, CompiledFlag, ErrorCode, Exposure, Phase, Reason, bind
from rollout.core.assignment import error_assignment
from rollout.errors import (
    ClientClosedError, FlagNotFoundError, InvalidExposureError, InvalidInputError, InvalidOutcomeError,
)
from rollout.store.comments import insert_comment
from rollout.store.db import make_engine
from rollout.store.exposures import upsert_exposures
from rollout.store.outcomes import OutcomeEntry, insert_outcomes
from rollout.store.retry import aretrying, retrying
from rollout.store.secrets import UnitKeys

log = logging.getLogger("rollout.client")


@dataclass(frozen=True, slots=True)
class ClientStats:
    """Counters an operator watches: is the client fresh, is anything being lost?"""

    loaded: bool
    stale: bool
    flags: int
    refreshes: int
    refresh_errors: int
    notifications: int
    outcomes_accepted: int
    outcomes_written: int
    outcomes_buffered: int
    outcomes_dropped: int
    write_errors: int
    outcomes_unstored_at_close: int
    last_error: str | None
    exposure_rows_written: int = 0
    exposure_rows_buffered: int = 0
    exposures_dropped: int = 0
    calls_fell_back: int = 0        # call()/acall() answers that came from the fallback: the candidate failed
    samples_kept: int = 0           # samples handed to the capture buffer (capture_samples=True)
    samples_written: int = 0
    samples_dropped: int = 0        # buffer full or unstored at close
    sample_redaction_errors: int = 0


class CallResult(NamedTuple):
    """What `call()` / `acall()` answered, and how.

    `value` is what the user gets. `variant` is whose code produced it: the
    assigned variant, the baseline when the candidate failed and the baseline
    answered instead, None when it came from a fallback value or callable.
    `fell_back` says the candidate failed (raised, or ran past `timeout`) and
    `error` what it failed with. `exposure` is what `assign()` served: keep
    `client.exposure_token(result.exposure)` for feedback that comes later.

    A named tuple (frozen, read by name) rather than a frozen dataclass, for
    the reason `Exposure` is one: it is built on every call, and a tuple is
    built in C (measured: about 1 µs less per call).
    """

    value: Any
    exposure: Exposure
    variant: str | None
    fell_back: bool = False
    error: str | None = None


class RolloutClient:
    """Evaluates flags locally from an in-memory snapshot and buffers outcomes.

    `assign()` never raises and never touches the database. The snapshot is
    refreshed in the background: a version query every `refresh_interval`
    seconds, and on PostgreSQL a LISTEN/NOTIFY wake-up as soon as a change
    commits. A refresh that fails, or does not answer within `refresh_timeout`
    seconds, marks the snapshot stale (`stats.stale`; answers carry reason
    STALE) until the database answers again. Outcomes go to a bounded buffer written in batches by a
    background thread; `flush()` waits for them, `close()` flushes and stops.

        with RolloutClient("sqlite:///rollout.db") as client:
            a = client.assign("ticket-summarizer", user.id, {"tier": user.tier})
            model = a.value or a.variant
            client.record(a, {"latency_ms": 812, "error": 0})
            token = client.exposure_token(a)   # keep it for feedback that comes later
            ...
            client.record(token, {"thumbs_up": 0})

    While the flag has a rollout, `assign()` also counts the exposure (this
    unit was served this variant in this stage and stratum), which the judge
    needs for completion and sample-ratio checks; see `rollout.sdk.exposures`.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        refresh_interval: float = 1.0,
        namespace: str = "default",
        listen: bool = True,
        refresh_timeout: float = DEFAULT_REFRESH_TIMEOUT,
        buffer_size: int = 100_000,
        batch_size: int = 5_000,
        flush_interval: float = 0.5,
        engine: Engine | None = None,
        shadow_workers: int = 4,
        shadow_queue: int = 16,
        shadow_rate: float | None = None,
        shadow_retry: Retry = Retry(),  # noqa: B008 - frozen, so one shared default is safe
        store_outputs: bool = False,
        redact: Callable[[str], str] | None = None,
        max_output_chars: int = 2_000,
        exposures: bool = True,
        exposure_horizon: float = DEFAULT_HORIZON,
        capture_samples: bool = False,
        call_workers: int = 8,
    ) -> None:
        """`shadow_*`, `store_outputs`, `redact` and `max_output_chars` configure `shadow()`; see its docstring.

        `exposures=False` stops counting exposures (the judge then cannot check
        completion). `exposure_horizon` (seconds, default 7 days) is how late an
        outcome recorded with an exposure token is still credited.

        `capture_samples=True` keeps the input and answer of the share of
        exposures the rollout's online judges grade (see `call()`, `sample()`),
        and shadow pairs as eval-export samples; redacted by `redact` and cut
        to `max_output_chars` like shadow outputs. `call_workers` threads run
        candidates of `call(..., timeout=...)` so the caller can stop waiting.
        """
        if not exposure_horizon > 0:
            raise InvalidOutcomeError(f"exposure_horizon must be a positive number of seconds, got {exposure_horizon!r}")
        self._owns_engine = engine is None
        self._engine = engine if engine is not None else make_engine(database_url)
        self._namespace = namespace
        self._snapshot = Snapshot(self._engine, namespace)
        self._snapshot.refresh(force=True)
        self._unit_keys = UnitKeys(self._engine)
        self._unit_key: bytes | None = None
        self._load_unit_key()
        self._refresher = Refresher(self._snapshot, interval=refresh_interval, listen=listen, timeout=refresh_timeout)
        self._count_exposures = exposures
        self._horizon = float(exposure_horizon)
        self._keys = ExposureKeys(self._engine, namespace)
        self._keys.load()
        self._keys_tried = time.monotonic()
        # Exposure rows are keyed with the namespace's UNIT secret, like outcomes, so the judge joins them.
        self._exposures = ExposureCounts(lambda source, seq, rows: upsert_exposures(self._engine, source, seq, rows),
                                         lambda: self._snapshot.ids,
                                         lambda _salt, unit: _unit_hash(self.unit_key(), unit),
                                         capacity=buffer_size * 2, batch_size=batch_size)
        self._buffer = OutcomeBuffer(
            lambda source, batch: insert_outcomes(self._engine, source, batch),
            capacity=buffer_size, batch_size=batch_size, flush_interval=flush_interval,
            tick=self._background_tick,
        )
        self._samples = (SampleCapture(self._engine, redact=redact, max_chars=max_output_chars)
                         if capture_samples else None)
        self._shadow = ShadowRunner(
            self._buffer.add, unit_key=self.unit_key, engine=self._engine, workers=shadow_workers, queue_size=shadow_queue,
            rate=shadow_rate, retry=shadow_retry, store_outputs=store_outputs, redact=redact,
            max_output_chars=max_output_chars, samples=self._samples,
        )
        if call_workers < 1:
            raise ValueError(f"call_workers must be >= 1, got {call_workers!r}")
        self._call_workers = call_workers
        self._call_pool: CallWorkers | None = None  # started by the first call() with a timeout
        self._call_lock = threading.Lock()
        self._fell_back = 0
        self._closed = False
        atexit.register(self.close)

    # --- evaluation -------------------------------------------------------------

    def assign(
        self, flag: str, unit_id: str, attributes: Mapping[str, Any] | None = None, *, default: str | None = None
    ) -> Exposure:
        """Which variant this unit gets. Never raises: on any fault, the baseline (or `default`) with a reason.

        The answer reads like an `Assignment` (variant, value, stratum, reason,
        ...) and remembers the unit: pass it back to `record(answer, metrics)`,
        or keep `exposure_token(answer)` for outcomes that come later.
        """
        try:
            compiled = self._snapshot.flags.get(flag)
        except Exception:  # noqa: BLE001 - an unhashable flag key, say
            return bind(error_assignment(str(flag), ErrorCode.GENERAL, default), None)
        if compiled is None:
            code = ErrorCode.FLAG_NOT_FOUND if self._snapshot.loaded else ErrorCode.PROVIDER_NOT_READY
            return bind(error_assignment(flag, code, default), None)
        a = compiled.evaluate(unit_id, attributes)
        cell = a.cell
        if cell is None:
            return bind(a, None)
        exposure = _new_tuple(Exposure, (a, unit_id))  # bind(), inlined: this is the hot path
        # Counted only while the flag has a rollout: the judge is what reads exposures, and outside a
        # rollout everyone gets one variant, so counting would add a row per unit per flag that no
        # question needs (an app with many settled flags would write for nothing on every request).
        if cell.rollout_id and self._count_exposures:
            counts = self._exposures.counts
            counts[exposure] = counts.get(exposure, 0) + 1
        return exposure

    def exposure_token(self, exposure: Exposure) -> str | None:
        """A short signed token of what `assign()` served, for outcomes recorded later: `record(token, metrics)`.

        It names the flag, rollout, stage, variant, stratum and (hashed) unit,
        and when it was issued; it is valid in this namespace for
        `exposure_horizon`. None when there is nothing to credit (an error
        answer) or the signing key has not been read from the database yet
        (it has been unreachable since this client started). Never raises.
        """
        try:
            return self._keys.sign(self._served(exposure))
        except Exception:  # noqa: BLE001 - issuing a token is part of serving: it must not fail the request
            return None

    # --- outcomes ----------------------------------------------------------------

    def record(
        self,
        flag: str | Exposure,
        unit_id: str | Mapping[str, float],
        metrics: Mapping[str, float] | None = None,
        *,
        variant: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        pair_id: int | None = None,
    ) -> None:
        """Report what happened for this unit. Bad input raises InvalidInputError at once and stores nothing.

        Three forms:

        * `record(exposure, metrics)`: `exposure` is what `assign()` returned;
          credited to the variant, stratum and stage it served.
        * `record(token, metrics)`: `token` from `exposure_token()`, for an
          outcome that arrives later (in another process, after a ramp): also
          credited to what was served, if the token verifies and is younger
          than `exposure_horizon` (else InvalidExposureError /
          ExposureExpiredError).
        * `record(flag, unit_id, metrics)`: credited to the unit's *current*
          assignment, evaluated now; after the allocation moved, that may not
          be what the unit was served. Prefer the two forms above.

        After `close()` has begun it raises ClientClosedError: nothing is taken
        that close() could no longer store or report.

        In the third form `variant` defaults to the unit's current assignment; pass it when the
        outcome is for another arm (a candidate's shadow run, say). `pair_id`
        (a positive 63-bit number) joins a baseline and a candidate outcome of
        the same request, for apps that run their own shadow pairs; `shadow()`
        does this by itself.
        """
        if self._buffer.closed:
            raise ClientClosedError("record() after close(): this client stores nothing more")
        if metrics is None and isinstance(unit_id, Mapping):
            if variant is not None or attributes is not None:
                raise InvalidOutcomeError("an exposure fixes the variant and stratum: pass variant= or attributes= "
                                          "only with record(flag, unit_id, metrics)")
            _check_pair_id(pair_id)
            self._buffer.add(served_entry(self._served(flag), unit_id, at=time.time(), pair_id=pair_id))
            return
        compiled = self._snapshot.flags.get(flag) if isinstance(flag, str) else None
        if compiled is None:
            detail = "" if self._snapshot.loaded else "the flag snapshot has never loaded"
            raise FlagNotFoundError(str(flag), detail)
        _check_pair_id(pair_id)
        self._buffer.add(outcome_entry(compiled, self._snapshot.ids[flag], unit_id, metrics, unit_key=self.unit_key(),
                                       variant=variant, attributes=attributes, at=time.time(), pair_id=pair_id))

    def feedback(self, exposure: Exposure | str, *, thumbs_up: bool | None = None,
                 rating: float | None = None, comment: str | None = None) -> None:
        """A user's feedback on what they were served: stored as outcomes of that exposure.

        `exposure` is what `assign()` returned or its token (feedback often
        comes minutes later, from another process). `thumbs_up` is stored as
        the metric `thumbs_up` (1 or 0), `rating` as `rating`; judge either in
        the plan like any metric. Refused like `record(token, ...)`: forged,
        foreign or expired tokens raise InvalidExposureError.

        `comment` (text) is kept only when this client keeps outputs
        (`store_outputs=True` or a `redact` hook), redacted and capped at
        `max_output_chars` like shadow outputs, and credited to the same
        exposure; otherwise it is dropped. It is written at once (feedback is
        rare); a database fault loses the comment, never the app's call.
        """
        if comment is not None and not isinstance(comment, str):
            raise InvalidOutcomeError(f"comment must be text, got {type(comment).__name__}")
        if comment is None or thumbs_up is not None or rating is not None:
            self.record(exposure, feedback_metrics(thumbs_up, rating))
        shadow = self._shadow
        if comment is None or not getattr(shadow, "_store_outputs", False):
            return
        served = self._served(exposure)
        kept = kept_text(comment, redact=getattr(shadow, "_redact", None),
                         max_chars=getattr(shadow, "_max_output_chars", 2_000))
        if kept is None:
            log.warning("feedback comment not kept: the redact hook failed on it")
            return
        try:
            insert_comment(self._engine, flag_id=served.flag_id, rollout_id=served.rollout_id, stage=served.stage,
                           variant=served.variant, stratum=served.stratum, unit_hash=served.unit_hash,
                           comment=kept, at=time.time())
        except Exception as exc:  # noqa: BLE001 - a lost comment must not fail the app's request
            log.warning("feedback comment not stored: %s", exc)

    def unit_key(self) -> bytes:
        """This namespace's UNIT key (what stored unit hashes are keyed with), read once and kept.

        Raises the database's error only while it has never been readable (the
        snapshot has then never loaded either, so record() refuses anyway).
        """
        key = self._unit_key
        return key if key is not None else self._load_unit_key(raise_errors=True)

    def _load_unit_key(self, *, raise_errors: bool = False) -> bytes:
        try:
            self._unit_key = self._unit_keys.get(self._namespace)
        except Exception:
            if raise_errors:
                raise
            return b""
        return self._unit_key

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every outcome recorded so far is stored. False if `timeout` ran out first.

        Shadow pairs still running count as recorded: flush waits for them
        too, which takes at most their `timeout`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._shadow.wait_idle(timeout):
            return False
        if not self._buffer.flush(None if deadline is None else max(0.0, deadline - time.monotonic())):
            return False
        if self._samples is not None and not self._samples.flush(
                None if deadline is None else max(0.0, deadline - time.monotonic())):
            return False
        return self._exposures.flush(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # --- exposures -----------------------------------------------------------------

    def _served(self, what: Exposure | str) -> Served:
        """What was served, from assign()'s answer or a token; InvalidExposureError when there is nothing."""
        if isinstance(what, str):
            served = self._keys.verify(what, horizon=self._horizon)
            if served.flag_id not in self._snapshot.ids.values():
                raise FlagNotFoundError(f"id {served.flag_id}", "the exposure token names a flag that is gone")
            return served
        cell = what.cell if isinstance(what, Exposure) else None
        if cell is None:
            if isinstance(what, Exposure):
                raise InvalidExposureError(f"nothing was served to credit: the assignment of {what.flag!r} was "
                                           f"an error answer ({what.error_code})")
            raise InvalidExposureError(f"expected what assign() returned or an exposure token, got {type(what).__name__}")
        flag_id = self._snapshot.ids.get(cell.flag)
        if flag_id is None:
            raise FlagNotFoundError(cell.flag, "deleted since it was assigned")
        return served_of(cell, flag_id, _unit_hash(self.unit_key(), validate_unit(what.unit_id)), time.time())

    def _count_served(self, answer: Assignment, unit_id: str) -> None:
        """Count one exposure of what was served, as assign() does inline (shadow() serves the baseline's answer)."""
        cell = answer.cell
        if cell is not None and cell.rollout_id and self._count_exposures:
            exposure = _new_tuple(Exposure, (answer, unit_id))
            counts = self._exposures.counts
            counts[exposure] = counts.get(exposure, 0) + 1

    def _background_tick(self) -> None:
        """Runs on the outcome flusher's thread every round: exposure counts out, signing keys in."""
        if not self._keys.loaded and time.monotonic() - self._keys_tried > 5.0:
            self._keys_tried = time.monotonic()
            self._keys.load()
        self._exposures.write_pending()

    # --- shadow runs ---------------------------------------------------------------

    def shadow(
        self,
        flag: str,
        unit_id: str,
        baseline: Callable[..., Any],
        candidate: Callable[..., Any],
        /,
        *args: Any,
        attributes: Mapping[str, Any] | None = None,
        cost: Callable[[Any], float] | None = None,
        scorers: Sequence[Any] = (),
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> Any:
        """Call `baseline(*args, **kwargs)` and return what it returns; in shadow, also run the candidate on the side.

        Exactly as if `baseline` were called directly: its result is returned
        and its exceptions propagate unchanged. When the flag is in its shadow
        phase and this unit is in the shadow sample, `candidate(*args,
        **kwargs)` runs at the same time on a worker thread, with `timeout`
        seconds from this call, transient failures retried (`shadow_retry`),
        and at most `shadow_rate` (or the shadow stage's `rate_limit`) calls a
        second. Nothing about the candidate reaches the caller: failures,
        timeouts, a full pool or the rate limit are counted in
        `shadow_stats`, and failures and timeouts are stored as candidate
        outcomes with `error = 1`.

        Both arms are stored as outcomes with one `pair_id`: `latency_ms`,
        `error`, `cost_usd` when known (a callable may return `(output,
        cost)`, or pass `cost=` a function of the output), and one metric per
        scorer (see `rollout.core.scorers`). Per-output scorers score each arm's
        own output; agreement scorers (exact match, similarity) give the
        candidate its score and the baseline 1.0, so "agreement >= 1 - margin"
        is an ordinary paired non-inferiority test. Pass the same `scorers`
        tuple on every call (it is checked once and cached by identity).
        Outputs are stored only with `store_outputs=True` or a `redact` hook.

        `attributes`, `cost`, `scorers` and `timeout` are taken by shadow();
        every other keyword goes to both callables.

            summary = client.shadow("ticket-summarizer", user.id, current_model, new_model, ticket,
                                    attributes={"tier": user.tier}, scorers=SCORERS, timeout=20)
        """
        try:
            compiled = self._snapshot.flags.get(flag)
            sampled = False
            if compiled is not None:
                answer = compiled.evaluate(unit_id, attributes)
                self._count_served(answer, unit_id)
                sampled = compiled.state.phase is _SHADOW and answer.in_shadow
        except Exception:  # noqa: BLE001 - like assign(): a fault here means no shadow run, never an error
            sampled = False
        if not sampled:
            return baseline(*args, **kwargs)
        flag_id = self._snapshot.ids.get(flag)
        if flag_id is None:
            return baseline(*args, **kwargs)
        return self._shadow.run(compiled, flag_id, unit_id, attributes, baseline, candidate, args, kwargs,
                                cost, scorers, timeout)

    async def ashadow(
        self,
        flag: str,
        unit_id: str,
        baseline: Callable[..., Any],
        candidate: Callable[..., Any],
        /,
        *args: Any,
        attributes: Mapping[str, Any] | None = None,
        cost: Callable[[Any], float] | None = None,
        scorers: Sequence[Any] = (),
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> Any:
        """`shadow()` for asyncio: `baseline` and `candidate` are async functions.

        The candidate runs as a task on the running loop and is cancelled at
        its deadline; scoring runs on a background thread, never on the loop.
        """
        try:
            compiled = self._snapshot.flags.get(flag)
            sampled = False
            if compiled is not None:
                answer = compiled.evaluate(unit_id, attributes)
                self._count_served(answer, unit_id)
                sampled = compiled.state.phase is _SHADOW and answer.in_shadow
        except Exception:  # noqa: BLE001 - see shadow()
            sampled = False
        if not sampled:
            return await baseline(*args, **kwargs)
        flag_id = self._snapshot.ids.get(flag)
        if flag_id is None:
            return await baseline(*args, **kwargs)
        return await self._shadow.run_async(compiled, flag_id, unit_id, attributes, baseline, candidate, args,
                                            kwargs, cost, scorers, timeout)

    @property
    def shadow_stats(self) -> ShadowStats:
        """What happened to shadow runs: how many were paired, skipped (and why), failed or timed out."""
        return self._shadow.stats

    # --- guarded calls and samples -------------------------------------------------

    def call(
        self,
        flag: str,
        unit_id: str,
        *,
        baseline: Callable[[Any], Any],
        candidate: Callable[[Any], Any],
        input: Any,  # noqa: A002 - the model's input; the name the docs and the plan use
        timeout: float | None = None,
        retries: int = 0,
        fallback: Any = "baseline",
        attributes: Mapping[str, Any] | None = None,
        category: str | None = None,
        scorers: Sequence[Any] = (),
    ) -> CallResult:
        """Run what the assignment says on `input`, and never let the candidate's failure reach the user.

        * Assigned the baseline: `baseline(input)`.
        * Assigned the candidate: `candidate(input)`, tried `1 + retries`
          times on transient faults (the `shadow_retry` predicate and backoff,
          under the one retry policy), within `timeout` seconds in all (None:
          no limit, and no thread hand-off). If it raises or runs out of time
          the user gets `fallback`: "baseline" calls `baseline(input)`, a
          callable is called with `input`, anything else is the answer.
        * In a shadow stage: exactly `shadow(flag, unit_id, baseline,
          candidate, input)` (the user gets the baseline; the candidate runs on
          the side and the pair is stored), so one call site serves the whole
          rollout. `timeout` is the shadow run's deadline there, and `scorers`
          score the pair there as they do for `shadow()` (elsewhere they are
          not used: a ramp's quality is the online judges' and the app's).

        While the flag has a rollout, each call records `latency_ms` (what the
        user waited, fallback included) and `error` (1 when the candidate
        failed) as outcomes of this exposure: a failed candidate is evidence
        against the candidate, not a gap. With `capture_samples=True` and
        online judges in the plan, the input and the answer the user got are
        kept for the sampled share of units, both arms alike.

        The baseline's own exceptions propagate unchanged (there is nothing
        left to fall back to), as they would if it were called directly.

            result = client.call("ticket-summarizer", user.id, baseline=small_model, candidate=large_model,
                                 input=ticket, timeout=5, retries=1, attributes={"tier": user.tier})
            show(result.value)
        """
        exposure, compiled, in_shadow_stage = self._route(flag, unit_id, attributes, timeout, retries)
        if in_shadow_stage:
            value = self.shadow(flag, unit_id, baseline, candidate, input, attributes=attributes, scorers=scorers,
                                timeout=10.0 if timeout is None else timeout)
            return CallResult(value, exposure, exposure.variant)
        t0 = time.perf_counter()
        if compiled is None or not exposure.is_candidate:
            try:
                value = baseline(input)
            except Exception:
                self._after_call(compiled, exposure, None, _FAILED, None, category)
                raise
            result = CallResult(value, exposure, exposure.variant)
        else:
            try:
                value = self._guarded(candidate, input, timeout, retries)
                result = CallResult(value, exposure, exposure.variant)
            except Exception as exc:  # noqa: BLE001 - the candidate's failure stays here
                try:
                    result = self._fall_back(compiled, exposure, fallback, baseline, input, exc, timeout)
                except Exception:
                    self._after_call(compiled, exposure, None, _FAILED, None, category)
                    raise
        self._after_call(compiled, exposure, input, (("latency_ms", (time.perf_counter() - t0) * 1e3),
                                                     ("error", 1.0 if result[3] else 0.0)), result[0], category)
        return result

    async def acall(
        self,
        flag: str,
        unit_id: str,
        *,
        baseline: Callable[[Any], Any],
        candidate: Callable[[Any], Any],
        input: Any,  # noqa: A002
        timeout: float | None = None,
        retries: int = 0,
        fallback: Any = "baseline",
        attributes: Mapping[str, Any] | None = None,
        category: str | None = None,
        scorers: Sequence[Any] = (),
    ) -> CallResult:
        """`call()` for asyncio: `baseline` and `candidate` are async functions (a fallback callable may be either).

        The candidate is cancelled at its `timeout`; in a shadow stage this is `ashadow()`.
        """
        exposure, compiled, in_shadow_stage = self._route(flag, unit_id, attributes, timeout, retries)
        if in_shadow_stage:
            value = await self.ashadow(flag, unit_id, baseline, candidate, input, attributes=attributes,
                                       scorers=scorers, timeout=10.0 if timeout is None else timeout)
            return CallResult(value, exposure, exposure.variant)
        t0 = time.perf_counter()
        if compiled is None or not exposure.is_candidate:
            try:
                value = await baseline(input)
            except Exception:
                self._after_call(compiled, exposure, None, _FAILED, None, category)
                raise
            result = CallResult(value, exposure, exposure.variant)
        else:
            try:
                value = await self._aguarded(candidate, input, timeout, retries)
                result = CallResult(value, exposure, exposure.variant)
            except Exception as exc:  # noqa: BLE001 - the candidate's failure stays here
                try:
                    result = self._fall_back(compiled, exposure, fallback, baseline, input, exc, timeout)
                    if inspect.isawaitable(result.value):
                        result = CallResult(await result.value, exposure, result.variant, True, result.error)
                except Exception:
                    self._after_call(compiled, exposure, None, _FAILED, None, category)
                    raise
        self._after_call(compiled, exposure, input, (("latency_ms", (time.perf_counter() - t0) * 1e3),
                                                     ("error", 1.0 if result[3] else 0.0)), result[0], category)
        return result

    def _route(self, flag: str, unit_id: str, attributes: Mapping[str, Any] | None, timeout: float | None,
               retries: int) -> tuple[Exposure, CompiledFlag | None, bool]:
        """(what assign() serves, the flag it served from or None on an error answer, whether this is shadow).

        Bad options raise InvalidInputError here, before anything runs: inside the
        guard they would read as a failing candidate and fall back silently.
        """
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise InvalidInputError(f"retries must be a whole number >= 0, got {retries!r}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout > 0):
            raise InvalidInputError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")
        exposure = self.assign(flag, unit_id, attributes)
        compiled = self._snapshot.flags.get(flag) if exposure.cell is not None else None
        return exposure, compiled, compiled is not None and compiled.state.phase is _SHADOW

    def sample(self, exposure: Exposure | str, input: Any, output: Any, *,  # noqa: A002
               category: str | None = None) -> bool:
        """Keep this input and answer for the online judges, if the unit is in their sample. True if kept.

        For apps that call their models themselves (`call()` does this by
        itself). `exposure` is what `assign()` returned or its token. Kept
        only with `capture_samples=True`, while the flag's rollout has online
        judges and is the rollout that served it, for the share of units
        their plan samples (the same units in both arms). Bad exposures raise
        like `record()`; the rest never does.
        """
        if self._samples is None:
            return False
        served = self._served(exposure)
        if isinstance(exposure, Exposure) and exposure.cell is not None:
            key: str | None = exposure.cell.flag
        else:
            key = next((k for k, i in self._snapshot.ids.items() if i == served.flag_id), None)
        compiled = self._snapshot.flags.get(key) if key is not None else None
        return compiled is not None and self._keep_sample(compiled, served, input, output, category)

    def _keep_sample(self, compiled: CompiledFlag, served: Served, input: Any, output: Any,  # noqa: A002
                     category: str | None) -> bool:
        state = compiled.state
        share = state.online_sample
        if (share is None or not served.rollout_id or served.rollout_id != state.rollout_id
                or not kept_for_judges(served.unit_hash, share)):
            return False
        assert self._samples is not None
        self._samples.add(served, ONLINE, input, output, at=time.time(), category=category)
        return True

    def _after_call(self, compiled: CompiledFlag | None, exposure: Exposure, input: Any,  # noqa: A002
                    values: tuple[tuple[str, float], ...], output: Any, category: str | None) -> None:
        """The call's outcomes and sample, while the flag has a rollout. Never raises: the user has the answer."""
        cell = exposure.cell
        if compiled is None or cell is None or not cell.rollout_id:
            return
        try:
            flag_id = self._snapshot.ids.get(cell.flag)
            if flag_id is None:
                return  # deleted since it was assigned: nothing to credit
            unit_hash = _unit_hash(self.unit_key(), validate_unit(exposure.unit_id))
            at = time.time()
            # Our own metrics, finite and non-negative by construction: no validation needed.
            self._buffer.add(cell_entry(cell, flag_id, unit_hash, values, at=at))
            share = compiled.state.online_sample
            if (self._samples is not None and share is not None and values is not _FAILED
                    and kept_for_judges(unit_hash, share)):
                self._samples.add(served_of(cell, flag_id, unit_hash, at), ONLINE, input, output, at=at,
                                  category=category)
        except Exception as exc:  # noqa: BLE001 - closed, say: the user has the answer, nothing else matters
            log.debug("rollout: call() outcome of %r not recorded: %s", cell.flag, exc)

    def _retrying(self, retries: int, timeout: float | None, *, aio: bool = False) -> Any:
        policy = self._shadow.retry  # the candidate's transient faults and backoff, as shadow runs judge them
        make = aretrying if aio else retrying
        return make(attempts=retries + 1, deadline=timeout, retry_on=policy.retry_on, initial=policy.base_delay,
                    maximum=policy.max_delay, jitter=policy.base_delay)

    def _guarded(self, candidate: Callable[[Any], Any], input: Any, timeout: float | None,  # noqa: A002
                 retries: int) -> Any:
        """The candidate's answer, or its exception; TimeoutError once `timeout` has passed."""
        if timeout is None and retries == 0:
            return candidate(input)  # nothing to guard but exceptions: no policy object, no thread
        retry = self._retrying(retries, timeout)
        if timeout is None:
            return retry(candidate, input)
        pool = self._call_pool
        if pool is None:
            with self._call_lock:  # two first calls at once start one set of workers
                if self._closed:
                    raise ClientClosedError("call() with a timeout after close(): the candidate is not run")
                if self._call_pool is None:
                    self._call_pool = CallWorkers(self._call_workers)
                pool = self._call_pool
        # On a worker so the caller can stop waiting; a candidate that hangs keeps only that thread.
        return pool.submit(retry, candidate, input).result(timeout)

    async def _aguarded(self, candidate: Callable[[Any], Any], input: Any, timeout: float | None,  # noqa: A002
                        retries: int) -> Any:
        retry = self._retrying(retries, timeout, aio=True)
        async with asyncio.timeout(timeout):
            async for attempt in retry:
                with attempt:
                    return await candidate(input)
        raise AssertionError("unreachable: the retry policy re-raises the last error")

    def _fall_back(self, compiled: CompiledFlag, exposure: Exposure, fallback: Any, baseline: Callable[[Any], Any], input: Any,  # noqa: A002
                   exc: Exception, timeout: float | None) -> CallResult:
        """The answer the user gets instead of the candidate's (an awaitable, from acall's callables)."""
        self._fell_back += 1
        if isinstance(exc, TimeoutError) and timeout is not None:
            error = f"TimeoutError: no answer within {timeout:g}s"
        else:
            error = f"{type(exc).__name__}: {exc}"[:500]
        log.debug("rollout: candidate of %r failed, falling back: %s", exposure.flag, error)
        if isinstance(fallback, str) and fallback == "baseline":
            return CallResult(baseline(input), exposure, compiled.state.baseline, True, error)
        if callable(fallback):
            return CallResult(fallback(input), exposure, None, True, error)
        return CallResult(fallback, exposure, None, True, error)

    # --- state ---------------------------------------------------------------------

    def refresh(self) -> bool:
        """Reload the snapshot now if anything changed (the background threads do this by themselves)."""
        return self._snapshot.refresh()

    def flag_versions(self) -> dict[str, int]:
        """Each flag's version in the current snapshot: what a watcher compares to see which flags changed."""
        return {key: compiled.state.version for key, compiled in self._snapshot.flags.items()}

    @property
    def stats(self) -> ClientStats:
        snap, buf = self._snapshot, self._buffer
        return ClientStats(
            loaded=snap.loaded, stale=snap.stale, flags=len(snap.flags), refreshes=snap.refreshes,
            refresh_errors=snap.refresh_errors, notifications=self._refresher.notifications,
            outcomes_accepted=buf.accepted, outcomes_written=buf.written, outcomes_buffered=len(buf),
            outcomes_dropped=buf.dropped, write_errors=buf.write_errors + self._exposures.write_errors,
            outcomes_unstored_at_close=buf.unstored_at_close,
            last_error=buf.last_error or self._exposures.last_error or snap.last_error,
            exposure_rows_written=self._exposures.written, exposure_rows_buffered=len(self._exposures),
            exposures_dropped=self._exposures.dropped, calls_fell_back=self._fell_back,
            samples_kept=self._samples.kept if self._samples else 0,
            samples_written=self._samples.written if self._samples else 0,
            samples_dropped=self._samples.dropped if self._samples else 0,
            sample_redaction_errors=self._samples.redaction_errors if self._samples else 0,
        )

    def close(self, timeout: float | None = 30.0) -> CloseResult:
        """Stop taking outcomes, store what was recorded (waiting up to `timeout`), stop the background threads.

        Returns what happened to every outcome recorded before close(): `stored`,
        and `unstored` (the database could not take them in time). Unstored ones
        are also counted in `stats.outcomes_dropped` and
        `stats.outcomes_unstored_at_close`, and logged. A write already on the wire
        when the timeout runs out is waited for (bounded by the engine's timeouts),
        so the count is exact. Calling close() again returns the first result.
        """
        if self._closed:
            return self._buffer.close(0)
        self._closed = True
        atexit.unregister(self.close)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._shadow.close(timeout)
        with self._call_lock:  # a first call() racing close() either starts workers seen here, or none
            calls = self._call_pool
        if calls is not None:
            calls.stop()
        if self._samples is not None:
            self._samples.close(None if deadline is None else max(0.0, deadline - time.monotonic()))
        result = self._buffer.close(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if not self._exposures.flush(None if deadline is None else max(0.0, deadline - time.monotonic())):
            log.warning("rollout: %d exposure rows could not be stored before close: %s",
                        len(self._exposures), self._exposures.last_error)
        self._refresher.stop()
        if self._owns_engine:
            self._engine.dispose()
        return result

    def __enter__(self) -> RolloutClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CallWorkers:
    """Daemon threads that run `call()`'s candidates when a timeout is given, so the caller can stop waiting.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so a
    candidate that hangs would keep the app from exiting. These are daemons,
    like the shadow workers; a hung candidate holds one until it returns, and
    later calls queue behind the others and fall back at their own timeout.
    """

    def __init__(self, workers: int) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple] | None] = queue.SimpleQueue()
        self._workers = workers
        self._closed = False
        for i in range(workers):
            threading.Thread(target=self._work, name=f"rollout-call-{i}", daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        if self._closed:
            raise ClientClosedError("the client is closed; the candidate is not run")
        future: Future[Any] = Future()
        self._jobs.put((future, fn, args))
        return future

    def stop(self) -> None:
        """Workers finish what they run and exit; queued calls still run first (their callers fall back anyway)."""
        self._closed = True
        for _ in range(self._workers):
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except Exception as exc:  # noqa: BLE001 - handed to the caller, who falls back
                future.set_exception(exc)
            except BaseException as exc:  # noqa: BLE001 - SystemExit from a candidate: a failure like any other,
                # never an exit of the caller's thread (it would reach the user), and this worker lives on.
                future.set_exception(RuntimeError(f"the candidate raised {type(exc).__name__}: {exc}"))


_SHADOW = Phase.SHADOW
_FAILED = (("error", 1.0),)  # a call whose baseline raised: no answer, so no latency and no sample
_new_tuple = tuple.__new__


def feedback_metrics(thumbs_up: Any, rating: Any) -> dict[str, float]:
    """The metrics of one piece of feedback, or InvalidOutcomeError: the SDK and POST /v1/feedback share it."""
    metrics: dict[str, float] = {}
    if thumbs_up is not None:
        if not isinstance(thumbs_up, bool):
            raise InvalidOutcomeError(f"thumbs_up must be true or false, got {thumbs_up!r}")
        metrics["thumbs_up"] = float(thumbs_up)
    if rating is not None:
        metrics["rating"] = rating  # validated with every other metric value
    if not metrics:
        raise InvalidOutcomeError("feedback needs thumbs_up or rating")
    return metrics


def _check_pair_id(pair_id: Any) -> None:
    if pair_id is not None and (isinstance(pair_id, bool) or not isinstance(pair_id, int)
                                or not 0 < pair_id < 2**63):
        raise InvalidOutcomeError(f"pair_id must be a positive 63-bit integer, got {pair_id!r}")


__all__ = ["Assignment", "CallResult", "ClientStats", "Exposure", "Reason", "Retry", "RolloutClient", "ShadowStats", "outcome_entry"]
