"""Sample capture: inputs and answers kept for online judges and eval export, off the caller's thread.

When the flag's rollout has online judges (`online_evals` in its plan; the
share travels in the snapshot as `FlagState.online_sample`), the SDK keeps the
input and answer of that share of exposures, chosen by the stored unit hash
(`rollout.core.online_eval.kept_for_judges`): the same units in both arms and
every stage, whatever the allocation. `client.call()` does this by itself;
`client.sample()` is the same for apps that call their models themselves, and
`shadow()` keeps its pairs as `source="shadow"` samples for `rollout eval
export --from-shadow`.

Capture is opt-in (`RolloutClient(capture_samples=True)`): inputs and answers
can hold personal data. The caller's thread only appends the raw values to a
bounded buffer; the buffer's writer thread turns them into text, runs the
`redact` hook (the same hook and `max_output_chars` cap as shadow outputs),
and inserts them in batches. A hook that raises or returns no text drops that
sample: what could not be redacted is never stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from rollout.core.outcome import kept_text as redacted_and_capped
from rollout.core.scorers import as_text
from rollout.sdk.buffer import Keyed, OutcomeBuffer
from rollout.sdk.exposures import Served
from rollout.store.samples import insert_samples

log = logging.getLogger("rollout.client")

ONLINE = "online"
SHADOW = "shadow"


def kept_text(value: Any, redact: Callable[[str], str] | None, max_chars: int) -> str | None:
    """Any answer or input as the text to store: as text (JSON for structures), then the one redact-and-cap rule."""
    return redacted_and_capped(as_text(value), redact=redact, max_chars=max_chars)


class SampleCapture:
    """The bounded buffer of kept samples and its writer (an `OutcomeBuffer`, so the same retry and close rules)."""

    def __init__(self, engine: Engine, *, redact: Callable[[str], str] | None, max_chars: int,
                 capacity: int = 10_000, batch_size: int = 500, flush_interval: float = 0.5) -> None:
        self._redact = redact
        self._max_chars = max_chars
        self.redaction_errors = 0
        self.kept = 0  # samples handed to the buffer
        # Samples need no idempotency key: the buffer's (source, seq) is not used for them.
        self.written = 0  # samples stored (kept, redacted, inserted)
        self._buffer = OutcomeBuffer(lambda _source, batch: self._write(engine, batch),
                                     capacity=capacity, batch_size=batch_size, flush_interval=flush_interval)

    def add(self, served: Served, source: str, input: Any, output: Any, *, at: float,
            pair_id: int | None = None, category: str | None = None) -> None:
        """Keep one sample of what `served` says was served. Raises ClientClosedError after close()."""
        # A list, not a tuple: the writer replaces the raw values with their kept text once (see _rows).
        self._buffer.add([served, source, input, output, at, pair_id, category, False])
        self.kept += 1

    def _rows(self, batch: Sequence[Keyed]) -> list[dict[str, Any]]:
        rows = []
        for _seq, entry in batch:
            if not entry[7]:
                # Redacted once, in place: a batch retried after a database fault does not run the hook
                # (or count its failures) again.
                entry[2] = kept_text(entry[2], self._redact, self._max_chars)
                entry[3] = kept_text(entry[3], self._redact, self._max_chars)
                entry[7] = True
                if entry[2] is None or entry[3] is None:
                    self.redaction_errors += 1
            served, source, kept_input, kept_output, at, pair_id, category, _ = entry
            if kept_input is None or kept_output is None:
                continue
            rows.append({"flag_id": served.flag_id, "rollout_id": served.rollout_id, "stage": served.stage,
                         "variant": served.variant, "stratum": served.stratum, "unit_hash": served.unit_hash,
                         "source": source, "pair_id": pair_id,
                         "category": category[:100] if isinstance(category, str) else None,
                         "input": kept_input, "output": kept_output, "created_at": datetime.fromtimestamp(at, UTC)})
        return rows

    def _write(self, engine: Engine, batch: Sequence[Keyed]) -> None:
        self.written += insert_samples(engine, self._rows(batch))

    @property
    def dropped(self) -> int:
        return self._buffer.dropped

    def flush(self, timeout: float | None = None) -> bool:
        return self._buffer.flush(timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        result = self._buffer.close(timeout)
        if result.unstored:
            log.warning("rollout: %d samples could not be stored before close", result.unstored)


__all__ = ["ONLINE", "SHADOW", "SampleCapture", "kept_text"]
