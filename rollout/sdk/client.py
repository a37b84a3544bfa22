"""`RolloutClient`: what an application holds to ask for variants and report outcomes."""

from __future__ import annotations

import atexit
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from rollout.sdk.buffer import CloseResult, OutcomeBuffer
from rollout.sdk.shadow import Retry, ShadowRunner, ShadowStats
from rollout.sdk.snapshot import Refresher, Snapshot
from rollout.core.outcome import validate_metrics, validate_unit
from rollout.core import Assignment, CompiledFlag, ErrorCode, Phase, Reason
from rollout.core.assignment import error_assignment
from rollout.errors import ClientClosedError, FlagNotFoundError, InvalidOutcomeError
from rollout.store.db import make_engine
from rollout.store.outcomes import OutcomeEntry, insert_outcomes
from rollout.store.secrets import UnitKeys


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


class RolloutClient:
    """Evaluates flags locally from an in-memory snapshot and buffers outcomes.

    `assign()` never raises and never touches the database. The snapshot is
    refreshed in the background: a version query every `refresh_interval`
    seconds, and on PostgreSQL a LISTEN/NOTIFY wake-up as soon as a change
    commits. Outcomes go to a bounded buffer written in batches by a
    background thread; `flush()` waits for them, `close()` flushes and stops.

        with RolloutClient("sqlite:///rollout.db") as client:
            a = client.assign("ticket-summarizer", user.id, {"tier": user.tier})
            model = a.value or a.variant
            client.record("ticket-summarizer", user.id, {"latency_ms": 812, "error": 0})
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        refresh_interval: float = 1.0,
        namespace: str = "default",
        listen: bool = True,
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
    ) -> None:
        """`shadow_*`, `store_outputs`, `redact` and `max_output_chars` configure `shadow()`; see its docstring."""
        self._owns_engine = engine is None
        self._engine = engine if engine is not None else make_engine(database_url)
        self._namespace = namespace
        self._snapshot = Snapshot(self._engine, namespace)
        self._snapshot.refresh(force=True)
        self._unit_keys = UnitKeys(self._engine)
        self._unit_key: bytes | None = None
        self._load_unit_key()
        self._refresher = Refresher(self._snapshot, self._engine, interval=refresh_interval, listen=listen)
        self._buffer = OutcomeBuffer(
            lambda source, batch: insert_outcomes(self._engine, source, batch),
            capacity=buffer_size, batch_size=batch_size, flush_interval=flush_interval,
        )
        self._shadow = ShadowRunner(
            self._buffer.add, unit_key=self.unit_key, engine=self._engine, workers=shadow_workers, queue_size=shadow_queue,
            rate=shadow_rate, retry=shadow_retry, store_outputs=store_outputs, redact=redact,
            max_output_chars=max_output_chars,
        )
        self._closed = False
        atexit.register(self.close)

    # --- evaluation -------------------------------------------------------------

    def assign(
        self, flag: str, unit_id: str, attributes: Mapping[str, Any] | None = None, *, default: str | None = None
    ) -> Assignment:
        """Which variant this unit gets. Never raises: on any fault, the baseline (or `default`) with a reason."""
        try:
            compiled = self._snapshot.flags.get(flag)
        except Exception:  # noqa: BLE001 - an unhashable flag key, say
            return error_assignment(str(flag), ErrorCode.GENERAL, default)
        if compiled is None:
            code = ErrorCode.FLAG_NOT_FOUND if self._snapshot.loaded else ErrorCode.PROVIDER_NOT_READY
            return error_assignment(flag, code, default)
        return compiled.evaluate(unit_id, attributes)

    # --- outcomes ----------------------------------------------------------------

    def record(
        self,
        flag: str,
        unit_id: str,
        metrics: Mapping[str, float],
        *,
        variant: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        pair_id: int | None = None,
    ) -> None:
        """Report what happened for this unit. Bad input raises InvalidInputError at once and stores nothing.

        After `close()` has begun it raises ClientClosedError: nothing is taken
        that close() could no longer store or report.

        `variant` defaults to the unit's current assignment; pass it when the
        outcome is for another arm (a candidate's shadow run, say). `pair_id`
        (a positive 63-bit number) joins a baseline and a candidate outcome of
        the same request, for apps that run their own shadow pairs; `shadow()`
        does this by itself.
        """
        if self._buffer.closed:
            raise ClientClosedError("record() after close(): this client stores nothing more")
        compiled = self._snapshot.flags.get(flag) if isinstance(flag, str) else None
        if compiled is None:
            detail = "" if self._snapshot.loaded else "the flag snapshot has never loaded"
            raise FlagNotFoundError(str(flag), detail)
        if pair_id is not None and (isinstance(pair_id, bool) or not isinstance(pair_id, int)
                                    or not 0 < pair_id < 2**63):
            raise InvalidOutcomeError(f"pair_id must be a positive 63-bit integer, got {pair_id!r}")
        self._buffer.add(outcome_entry(compiled, self._snapshot.ids[flag], unit_id, metrics, unit_key=self.unit_key(),
                                       variant=variant, attributes=attributes, at=time.time(), pair_id=pair_id))

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
        return self._buffer.flush(None if deadline is None else max(0.0, deadline - time.monotonic()))

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
            sampled = (compiled is not None and compiled.state.phase is _SHADOW
                       and compiled.evaluate(unit_id, attributes).in_shadow)
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
            sampled = (compiled is not None and compiled.state.phase is _SHADOW
                       and compiled.evaluate(unit_id, attributes).in_shadow)
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

    # --- state ---------------------------------------------------------------------

    def refresh(self) -> bool:
        """Reload the snapshot now if anything changed (the background threads do this by themselves)."""
        return self._snapshot.refresh()

    @property
    def stats(self) -> ClientStats:
        snap, buf = self._snapshot, self._buffer
        return ClientStats(
            loaded=snap.loaded, stale=snap.stale, flags=len(snap.flags), refreshes=snap.refreshes,
            refresh_errors=snap.refresh_errors, notifications=self._refresher.notifications,
            outcomes_accepted=buf.accepted, outcomes_written=buf.written, outcomes_buffered=len(buf),
            outcomes_dropped=buf.dropped, write_errors=buf.write_errors,
            outcomes_unstored_at_close=buf.unstored_at_close,
            last_error=buf.last_error or snap.last_error,
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
        result = self._buffer.close(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._refresher.stop()
        if self._owns_engine:
            self._engine.dispose()
        return result

    def __enter__(self) -> RolloutClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def outcome_entry(
    compiled: CompiledFlag,
    flag_id: int,
    unit_id: Any,
    metrics: Any,
    *,
    unit_key: bytes,
    variant: Any = None,
    attributes: Any = None,
    at: float,
    pair_id: int | None = None,
) -> OutcomeEntry:
    """One outcome, validated and ready to store, or InvalidOutcomeError.

    The one validation of an outcome: `record()` and the HTTP service's
    `POST /v1/outcomes` both call it, so both refuse exactly the same input.
    `unit_key` is the namespace's UNIT secret (see `_unit_hash`).
    """
    unit = validate_unit(unit_id)
    values = validate_metrics(metrics)
    if attributes is not None and not isinstance(attributes, Mapping):
        raise InvalidOutcomeError(f"attributes must be a mapping, got {type(attributes).__name__}")
    state = compiled.state
    if variant is None:
        assignment = compiled.evaluate(unit, attributes)
        variant, stratum = assignment.variant, assignment.stratum
    elif not isinstance(variant, str) or variant not in (state.baseline, state.candidate):
        raise InvalidOutcomeError(
            f"variant {variant!r} is not an arm of {state.key!r} ({state.baseline!r} or {state.candidate!r})"
        )
    else:
        stratum = compiled.stratum_of(attributes)
    prefix = (flag_id, state.rollout_id, state.stage, variant, stratum, _unit_hash(unit_key, unit))
    if pair_id is not None:
        # Shadow runs pair a baseline and a candidate outcome of one request (see rollout.store.outcomes).
        prefix = (*prefix, pair_id)
    return (prefix, values, at)


_SHADOW = Phase.SHADOW


def _unit_hash(key: bytes, unit_id: str) -> int:
    """The stored unit hash: keyed BLAKE2b, 64 bits, enough to pair a unit's outcomes, not to read its id back.

    `key` is the namespace's UNIT secret (rollout.store.secrets), which no API
    returns, never the flag's bucketing salt (GET /v1/flags serves salts, so a
    salt-keyed hash could be reversed by hashing candidate ids). Bucketing
    itself (murmur3 of salt:unit) is unchanged.
    """
    digest = hashlib.blake2b(unit_id.encode(), digest_size=8, key=key).digest()
    return int.from_bytes(digest, "big", signed=True)


__all__ = ["Assignment", "ClientStats", "Reason", "Retry", "RolloutClient", "ShadowStats", "outcome_entry"]
