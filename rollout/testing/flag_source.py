"""An in-memory `rollout.ports.FlagSource`: flags in a dict, and a switch to fail or hang like a database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

from rollout.core import FlagState
from rollout.ports import Fingerprint

Health = Literal["up", "refuse", "hang"]


class InMemoryFlagSource:
    """Flags held here; `health` makes reads answer, fail at once ("refuse") or block ("hang").

    A hung read blocks until `health` leaves "hang" (as a partition's bytes
    arrive once it heals), then answers or fails like the new health says.
    """

    def __init__(self, states: Sequence[FlagState] = ()) -> None:
        self._states: dict[tuple[str, str], tuple[FlagState, int]] = {}
        self._next_id = 1
        self._changed = threading.Condition()
        self._health: Health = "up"
        self.reads = 0
        for state in states:
            self.put(state)

    @property
    def health(self) -> Health:
        return self._health

    @health.setter
    def health(self, value: Health) -> None:
        with self._changed:
            self._health = value
            self._changed.notify_all()

    def put(self, state: FlagState) -> None:
        """Add a flag, or replace it with its version raised (as every stored change does)."""
        with self._changed:
            key = (state.namespace, state.key)
            old = self._states.get(key)
            if old is not None:
                state = replace(state, version=max(state.version, old[0].version + 1))
                self._states[key] = (state, old[1])
            else:
                self._states[key] = (state, self._next_id)
                self._next_id += 1
            self._changed.notify_all()

    def _answer(self) -> None:
        with self._changed:
            self.reads += 1
            self._changed.wait_for(lambda: self._health != "hang")
            if self._health == "refuse":
                raise ConnectionRefusedError("the fake database refuses connections")

    def _rows(self, namespace: str | None) -> list[tuple[FlagState, int]]:
        return [row for (ns, _), row in sorted(self._states.items()) if namespace is None or ns == namespace]

    def fingerprint(self, namespace: str | None) -> Fingerprint:
        self._answer()
        rows = self._rows(namespace)
        return len(rows), sum(s.version for s, _ in rows), 0

    def load(self, namespace: str | None) -> tuple[Fingerprint, Sequence[tuple[FlagState, int]]]:
        self._answer()
        rows = self._rows(namespace)
        return (len(rows), sum(s.version for s, _ in rows), 0), rows

    def listen(self, wake: Callable[[], None], stop: threading.Event) -> None:
        return  # announces nothing: the refresher polls


__all__ = ["Health", "InMemoryFlagSource"]
