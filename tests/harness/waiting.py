"""Waiting for a condition in tests that watch background threads or servers."""

from __future__ import annotations

import time
from collections.abc import Callable


def seconds_until(condition: Callable[[], bool], within: float = 5.0, poll: float = 0.01) -> float:
    """Seconds until `condition()` held; fails the test past `within` seconds."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < within, f"not within {within} s"
        time.sleep(poll)
    return time.monotonic() - start
