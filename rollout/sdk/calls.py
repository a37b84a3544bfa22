"""`RolloutClient.call()` and `acall()`: run what the assignment says, never letting a candidate's failure reach the user.

Kept apart from rollout.sdk.client so that module stays about assigning and
recording. `GuardedCalls` is a mixin of RolloutClient and reads the client's
parts by their names (`assign`, `shadow`/`ashadow`, `unit_key`, `_served`,
`_snapshot`, `_buffer`, `_samples`, `_shadow`, `_call_pool`, `_call_lock`,
`_call_workers`, `_closed`, `_fell_back`); it is not meant to be used alone.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, NamedTuple

from rollout.core import CompiledFlag, Exposure, Phase
from rollout.core.online_eval import kept_for_judges
from rollout.core.outcome import validate_unit
from rollout.errors import ClientClosedError, InvalidInputError
from rollout.sdk.exposures import Served, cell_entry, served_of
from rollout.sdk.outcomes import _unit_hash
from rollout.sdk.samples import ONLINE
from rollout.store.retry import aretrying, retrying

log = logging.getLogger("rollout.client")

_SHADOW = Phase.SHADOW
_FAILED = (("error", 1.0),)  # a call whose baseline raised: no answer, so no latency and no sample


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


class GuardedCalls:
    """`call()`, `acall()` and `sample()` of RolloutClient (see the module's docstring)."""

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


__all__ = ["CallResult", "CallWorkers", "GuardedCalls"]
