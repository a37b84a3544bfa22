"""`RolloutClient`: what an application holds to ask for variants and report outcomes."""

from __future__ import annotations

import atexit
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from rollout.client.buffer import OutcomeBuffer
from rollout.client.snapshot import Refresher, Snapshot
from rollout.client.validate import validate_metrics, validate_unit
from rollout.domain import Assignment, CompiledFlag, ErrorCode, Reason
from rollout.domain.assignment import error_assignment
from rollout.errors import FlagNotFoundError, InvalidOutcomeError
from rollout.store.db import make_engine
from rollout.store.outcomes import OutcomeEntry, insert_outcomes


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
    ) -> None:
        self._owns_engine = engine is None
        self._engine = engine if engine is not None else make_engine(database_url)
        self._namespace = namespace
        self._snapshot = Snapshot(self._engine, namespace)
        self._snapshot.refresh(force=True)
        self._refresher = Refresher(self._snapshot, self._engine, interval=refresh_interval, listen=listen)
        self._buffer = OutcomeBuffer(
            lambda rows: insert_outcomes(self._engine, rows),
            capacity=buffer_size, batch_size=batch_size, flush_interval=flush_interval,
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
    ) -> None:
        """Report what happened for this unit. Bad input raises InvalidInputError at once and stores nothing.

        `variant` defaults to the unit's current assignment; pass it when the
        outcome is for another arm (a candidate's shadow run, say).
        """
        compiled = self._snapshot.flags.get(flag) if isinstance(flag, str) else None
        if compiled is None:
            detail = "" if self._snapshot.loaded else "the flag snapshot has never loaded"
            raise FlagNotFoundError(str(flag), detail)
        self._buffer.add(outcome_entry(compiled, self._snapshot.ids[flag], unit_id, metrics,
                                       variant=variant, attributes=attributes, at=time.time()))

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every outcome recorded so far is stored. False if `timeout` ran out first."""
        return self._buffer.flush(timeout)

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
            last_error=buf.last_error or snap.last_error,
        )

    def close(self, timeout: float | None = 30.0) -> None:
        """Store what is buffered (waiting up to `timeout`), then stop the background threads."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._buffer.close(timeout)
        self._refresher.stop()
        if self._owns_engine:
            self._engine.dispose()

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
    variant: Any = None,
    attributes: Any = None,
    at: float,
    pair_id: int | None = None,
) -> OutcomeEntry:
    """One outcome, validated and ready to store, or InvalidOutcomeError.

    The one validation of an outcome: `record()` and the HTTP service's
    `POST /v1/outcomes` both call it, so both refuse exactly the same input.
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
    prefix = (flag_id, state.rollout_id, state.stage, variant, stratum, _unit_hash(state.salt, unit))
    if pair_id is not None:
        # Shadow runs pair a baseline and a candidate outcome of one request (see rollout.store.outcomes).
        prefix = (*prefix, pair_id)
    return (prefix, values, at)


def _unit_hash(salt: str, unit_id: str) -> int:
    """A keyed 64-bit hash: enough to pair a unit's outcomes, not enough to read its id back."""
    digest = hashlib.blake2b(unit_id.encode(), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big", signed=True)


__all__ = ["Assignment", "ClientStats", "Reason", "RolloutClient", "outcome_entry"]
