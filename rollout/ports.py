"""Protocols for every outside dependency; `rollout.testing` ships an in-memory fake of each."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from rollout.core import FlagState

# --- snapshot source (the SDK's and the service's flag snapshot; rollout.sdk.snapshot) -------------

Fingerprint = tuple[int, int, int]
"""Changes whenever a flag or an active rollout's stage changes (rollout.store.flags.fingerprint)."""


class FlagSource(Protocol):
    """Where a flag snapshot is read from. Either call may raise or hang: the snapshot copes."""

    def fingerprint(self, namespace: str | None) -> Fingerprint:
        """One cheap read that changes whenever the flags of `namespace` (None: every namespace) change."""
        ...

    def load(self, namespace: str | None) -> tuple[Fingerprint, Sequence[tuple[FlagState, int]]]:
        """The fingerprint and every flag of `namespace` (None: all) with its database id, read together."""
        ...

    def listen(self, wake: Callable[[], None], stop: threading.Event) -> None:
        """Call `wake` whenever a change is announced, until `stop` is set; return at once if nothing is."""
        ...
