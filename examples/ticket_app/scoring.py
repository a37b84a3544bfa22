"""The eval scorer: a summary passes when it keeps at least two thirds of the ticket's key facts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from examples.ticket_app.models import REFUSAL


def keeps_key_facts(case: Mapping[str, Any], output: str) -> float:
    """Share of expected key facts found in the summary, as 1.0 (pass) or 0.0 (fail) at two thirds."""
    if not isinstance(output, str) or output == REFUSAL:
        return 0.0
    facts = list(case["expected"]["facts"])
    found = sum(1 for f in facts if f.lower() in output.lower())
    return 1.0 if facts and found / len(facts) >= 2 / 3 else 0.0
