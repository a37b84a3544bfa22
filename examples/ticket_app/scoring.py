"""Scorers of the example: the eval gate's (two thirds of the key facts kept) and the online judge's (the share kept)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from examples.ticket_app.models import REFUSAL


def keeps_key_facts(case: Mapping[str, Any], output: str) -> float:
    """Share of expected key facts found in the summary, as 1.0 (pass) or 0.0 (fail) at two thirds."""
    if not isinstance(output, str) or output == REFUSAL:
        return 0.0
    facts = list(case["expected"]["facts"])
    found = sum(1 for f in facts if f.lower() in output.lower())
    return 1.0 if facts and found / len(facts) >= 2 / 3 else 0.0


# --- the online judge ------------------------------------------------------------------------------

def key_fact_coverage(ticket: Any, summary: Any) -> float:
    """Share of the ticket's key facts the summary keeps, in [0, 1]; a refusal keeps none.

    Takes what the SDK keeps for online judges, as text: the ticket as JSON and
    the answer, which the example's models give as `(summary, cost)` (kept as a
    JSON list); plain values work too (eval cases, tests).
    """
    ticket, summary = _parsed(ticket), _parsed(summary)
    if isinstance(summary, list) and summary:
        summary = summary[0]
    facts = list(ticket.get("facts", [])) if isinstance(ticket, Mapping) else []
    if not facts or not isinstance(summary, str) or summary == REFUSAL:
        return 0.0
    return sum(1 for f in facts if f.lower() in summary.lower()) / len(facts)


def covers_ticket_facts(case: Mapping[str, Any], output: Any) -> float:
    """Eval scorer for cases exported from production: the ticket's own key facts, whatever the reference said."""
    return key_fact_coverage(case["input"], output)


@dataclass(frozen=True, slots=True)
class KeyFactGrade:
    score: float
    cost_usd: float


@dataclass(frozen=True)
class KeyFactJudge:
    """A deterministic stand-in for an LLM judge (same `grade(input, output)` shape as `LlmJudge`), with a
    fixed price per grade so the plan's budget is metered and can run out as a paid judge's would."""

    cost_per_grade: float = 0.0002

    def grade(self, ticket: Any, summary: Any) -> KeyFactGrade:
        return KeyFactGrade(key_fact_coverage(ticket, summary), self.cost_per_grade)

    def __call__(self, ticket: Any, summary: Any) -> float:  # a plan's scorer must be callable; grade() is preferred
        return self.grade(ticket, summary).score


# What the plans name: `scorer: examples.ticket_app.scoring:key_facts_judge`.
key_facts_judge = KeyFactJudge()


def _parsed(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
