"""Exposures: who was served what, counted in memory and written as counts; and exposure tokens.

Counting. `assign()` adds one to `counts[exposure]` (the (answer, unit) tuple it
returns, hashed in C): a dictionary increment,
no clock read, no lock. The outcome flusher's thread calls `write_pending()`
every tick: it swaps in a fresh dictionary, turns the old one into one row per
(flag, rollout, stage, variant, stratum, unit hash) with its count, and upserts
them (`rollout.store.exposures`). `first_at`/`last_at` are the edges of the
window a count was gathered in (one flush interval), which is all the judge
needs and saves a clock read per call. Rows are written in batches numbered
per counter (source, seq), in order; a batch, once numbered, is retried
unchanged until it is stored, so a retry after a lost commit reply is
recognised by the store and adds nothing. If the database is down that batch
waits and newer counts are merged into the rows not yet batched (so an outage
grows them by units, not requests); past `capacity` rows, new units are
dropped and counted.

An increment that races the swap (a thread paused between reading the old
dictionary and writing to it) lands in a dictionary already retired; the
flusher waits `_GRACE` before reading a retired dictionary, which covers any
pause shorter than that. A longer pause loses that one increment; exposures
are a denominator for completion and SRM, which a count off by one does not move.

Tokens. An exposure token is what an app keeps for outcomes that arrive late
(feedback, a judge's score, a reopened ticket): flag id, rollout, stage,
variant, stratum, unit hash and issued-at, packed in binary, signed with
HMAC-SHA256 under the namespace's EXPOSURE secret (its version travels in the
token, so keys can rotate), base64url: about 80 characters. The standard
library's hmac does the cryptography; only the packing is ours, because a
generic signed-JSON format would be twice as long and carry no key version.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from rollout.core import Cell, Exposure
from rollout.core.outcome import validate_metrics
from rollout.errors import ExposureExpiredError, InvalidExposureError
from rollout.store.exposures import ExposureKey, ExposureRow
from rollout.store.outcomes import OutcomeEntry, new_source
from rollout.store.secrets import EXPOSURE, all_secrets, current_secret

log = logging.getLogger("rollout.client")

UnitHash = Callable[[str, str], int]
_GRACE = 0.02  # seconds a retired dictionary is left alone before it is read (see the module docstring)
DEFAULT_HORIZON = 7 * 24 * 3600.0
FUTURE_SLACK = 300.0  # another process's clock may run ahead by this much


# --- counting ---------------------------------------------------------------------

class ExposureCounts:
    """The SDK's exposure buffer: counts per (cell, unit), written as upserts by the flusher's thread.

    `write(source, seq, rows)` stores one numbered batch (`upsert_exposures`).
    The HTTP service keeps one of these per namespace, fed by its evaluations.
    """

    def __init__(self, write: Callable[[int, int, Sequence[ExposureRow]], int],
                 flag_ids: Callable[[], Mapping[str, int]],
                 unit_hash: UnitHash, *, capacity: int = 200_000, batch_size: int = 5_000) -> None:
        self.counts: dict[Exposure, int] = {}
        self._write = write
        self._flag_ids = flag_ids
        self._unit_hash = unit_hash
        self._capacity = capacity
        self._batch_size = batch_size
        self._pending: dict[ExposureKey, list] = {}  # key -> [count, first_at, last_at]: not numbered yet
        self.source = new_source()
        self._seq = 0
        self._batch: tuple[int, list[ExposureRow]] | None = None  # numbered, not stored yet: retried as it is
        self._since = time.time()
        self._lock = threading.Lock()  # one writer at a time: the flusher's tick or a caller's flush()
        self.written = 0       # rows upserted
        self.exposures = 0     # assignments counted into written rows
        self.dropped = 0       # units dropped because the pending rows were full
        self.write_errors = 0
        self.last_error: str | None = None

    def __len__(self) -> int:
        batch = self._batch
        return len(self.counts) + len(self._pending) + (len(batch[1]) if batch is not None else 0)

    def write_pending(self) -> bool:
        """Move what was counted into rows and try once to store them. Never raises; True if nothing is left."""
        with self._lock:
            self._gather()
            return self._store()

    def flush(self, timeout: float | None = None) -> bool:
        """Store every exposure counted so far, retrying until `timeout`. False if it ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.05
        while not self.write_pending():
            if deadline is not None and time.monotonic() + delay > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        return True

    def _gather(self) -> None:
        retired, self.counts = self.counts, {}
        start, end = self._since, time.time()
        self._since = end
        if not retired:
            return
        time.sleep(_GRACE)
        ids, unit_hash, pending = self._flag_ids(), self._unit_hash, self._pending
        hashes: dict[tuple[str, str], int] = {}
        for (answer, unit), n in retired.items():
            cell = answer.cell
            flag_id = ids.get(cell.flag)
            if flag_id is None:  # the flag was deleted since: nothing left to credit
                continue
            text = unit if type(unit) is str else str(unit)
            h = hashes.get((cell.salt, text))
            if h is None:
                h = hashes[(cell.salt, text)] = unit_hash(cell.salt, text)
            key = (flag_id, cell.rollout_id, cell.stage, cell.variant, cell.stratum, h)
            row = pending.get(key)
            if row is not None:
                row[0] += n
                row[2] = end
            elif len(pending) < self._capacity:
                pending[key] = [n, start, end]
            else:
                self.dropped += n

    def _store(self) -> bool:
        pending = self._pending
        while self._batch is not None or pending:
            if self._batch is None:
                keys = list(pending)[: self._batch_size]
                self._seq += 1
                self._batch = (self._seq, [(k, *pending.pop(k)) for k in keys])  # type: ignore[misc]
            seq, rows = self._batch
            try:
                self._write(self.source, seq, rows)
            except Exception as exc:  # noqa: BLE001 - any database fault: keep the batch as it is, retry next tick
                self.write_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("rollout: storing %d exposure rows failed, retrying: %s", len(self), self.last_error)
                return False
            self._batch = None
            # A replay the store recognised (it returns 0) was counted when it was first stored: count it here once.
            self.written += len(rows)
            self.exposures += sum(r[1] for r in rows)
        return True


# --- tokens -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Served:
    """What one unit was served, as an exposure token says: where its late outcomes are credited."""

    flag_id: int
    rollout_id: int  # 0: the flag had no rollout
    stage: int
    variant: str
    stratum: str
    unit_hash: int
    issued_at: int  # Unix seconds


_FORMAT = 1
_HEAD = struct.Struct(">BHIIHIq")  # format, key version, flag id, rollout id, stage, issued at, unit hash
_MAC = 16  # bytes of HMAC-SHA256 kept: 128 bits, far past guessing


class ExposureKeys:
    """One namespace's EXPOSURE keys: signs with the newest, verifies with any unretired version.

    Keys are read from (and on first use created in) the database by `load()`;
    until that has worked, `sign()` answers None. A token signed with a version
    this process has not seen makes `verify()` reload once, so a rotation done
    elsewhere is picked up.
    """

    def __init__(self, engine: Engine, namespace: str) -> None:
        self._engine = engine
        self.namespace = namespace
        self._current: tuple[int, bytes] | None = None
        self._all: dict[int, bytes] = {}
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def load(self) -> bool:
        """Read (creating if needed) the keys. Never raises; False if the database did not answer."""
        try:
            with self._lock, Session(self._engine) as session:
                current = current_secret(session, self.namespace, EXPOSURE)
                keys = all_secrets(session, self.namespace, EXPOSURE)
                session.commit()
        except Exception as exc:  # noqa: BLE001 - tokens wait for the database; assignment does not
            log.warning("rollout: exposure-token keys not loaded yet: %s", exc)
            return False
        self._all, self._current = keys, current
        return True

    def sign(self, served: Served) -> str | None:
        current = self._current
        if current is None:
            return None
        version, key = current
        variant, stratum = served.variant.encode(), served.stratum.encode()
        body = (_HEAD.pack(_FORMAT, version, served.flag_id, served.rollout_id, served.stage, served.issued_at,
                           served.unit_hash)
                + bytes((len(variant),)) + variant + bytes((len(stratum),)) + stratum)
        mac = hmac.new(key, body, hashlib.sha256).digest()[:_MAC]
        return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode()

    def verify(self, token: object, *, horizon: float, now: float | None = None) -> Served:
        """What the token says was served, or InvalidExposureError (ExposureExpiredError past the horizon)."""
        if not isinstance(token, str) or not 40 <= len(token) <= 400:
            raise InvalidExposureError("not an exposure token (expected the string assign()'s token gave)")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            fmt, version, flag_id, rollout_id, stage, issued_at, unit_hash = _HEAD.unpack_from(raw)
            at = _HEAD.size
            variant = raw[at + 1: at + 1 + raw[at]]
            at += 1 + raw[at]
            stratum = raw[at + 1: at + 1 + raw[at]]
            at += 1 + raw[at]
            body, mac = raw[:at], raw[at:]
        except (ValueError, IndexError, struct.error):
            raise InvalidExposureError("not an exposure token (it does not decode)") from None
        if fmt != _FORMAT or len(mac) != _MAC:
            raise InvalidExposureError("not an exposure token (unknown format)")
        key = self._all.get(version)
        if key is None and self.load():
            key = self._all.get(version)
        if key is None or not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest()[:_MAC], mac):
            # One message for a forged token, another namespace's and a retired key: a forger learns nothing.
            raise InvalidExposureError(f"the exposure token's signature is not valid in namespace {self.namespace!r}")
        now = time.time() if now is None else now
        age = now - issued_at
        if age > horizon:
            raise ExposureExpiredError(
                f"the exposure token was issued {age / 86400:.1f} days ago; outcomes are credited to what was "
                f"served only within {horizon / 86400:g} days (the client's exposure_horizon)")
        if age < -FUTURE_SLACK:
            raise InvalidExposureError("the exposure token was issued in the future (check the clocks)")
        try:
            return Served(flag_id, rollout_id, stage, variant.decode(), stratum.decode(), unit_hash, issued_at)
        except UnicodeDecodeError:
            raise InvalidExposureError("not an exposure token (bad text)") from None


def served_of(cell: Cell, flag_id: int, unit_hash: int, issued_at: float) -> Served:
    return Served(flag_id, cell.rollout_id, cell.stage, cell.variant, cell.stratum, unit_hash, int(issued_at))


def served_entry(served: Served, metrics: object, *, at: float, pair_id: int | None = None) -> OutcomeEntry:
    """An outcome credited to what was served, validated like every other outcome."""
    return _entry(served.flag_id, served.rollout_id, served.stage, served.variant, served.stratum, served.unit_hash,
                  validate_metrics(metrics), at, pair_id)


def cell_entry(cell: Cell, flag_id: int, unit_hash: int, values: tuple[tuple[str, float], ...], *,
               at: float) -> OutcomeEntry:
    """An outcome of the exposure `assign()` just served, with valid values: `call()`'s hot path, no `Served`."""
    return _entry(flag_id, cell.rollout_id, cell.stage, cell.variant, cell.stratum, unit_hash, values, at, None)


def _entry(flag_id: int, rollout_id: int, stage: int, variant: str, stratum: str, unit_hash: int,
           values: tuple[tuple[str, float], ...], at: float, pair_id: int | None) -> OutcomeEntry:
    # Outcomes keep NULL for "no rollout"; the exposures table (and the token) use 0.
    prefix: tuple = (flag_id, rollout_id or None, stage, variant, stratum, unit_hash)
    if pair_id is not None:
        prefix = (*prefix, pair_id)
    return (prefix, values, at)


__all__ = ["DEFAULT_HORIZON", "ExposureCounts", "ExposureKeys", "Served", "cell_entry", "served_entry",
           "served_of"]
