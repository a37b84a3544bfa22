"""Text kept for later (feedback comments): redacted by the app's hook, then capped; never kept unredacted."""

from __future__ import annotations

import pytest

from rollout.core.outcome import kept_text


def _fails(_text: str) -> str:
    raise ValueError("cannot parse")


@pytest.mark.parametrize(("text", "redact", "cap", "kept"), [
    ("short", None, 10, "short"),
    ("a long comment", None, 6, "a long"),
    ("mail a@b.c now", lambda t: t.replace("a@b.c", "[email]"), 100, "mail [email] now"),
    ("1234567890", lambda t: "x" * len(t), 4, "xxxx"),        # capped after redaction
    ("secret", _fails, 100, None),                           # the hook failed: nothing is kept
    ("secret", lambda t: None, 100, None),                    # nor when it returns no text
])
def test_text_is_redacted_then_capped(text, redact, cap, kept) -> None:  # type: ignore[no-untyped-def]
    assert kept_text(text, redact=redact, max_chars=cap) == kept
