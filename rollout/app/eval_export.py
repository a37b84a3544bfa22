"""Eval cases from production: what the rollout saw, turned into a case file an eval stage runs.

    rollout eval export ticket-summarizer --from-shadow --sample 200 --stratify-by category --out cases.jsonl

Each case is a kept input with the baseline's answer as its reference (`expected`),
its category (or stratum), and the scores seen for it. Inputs are deduplicated
(by their normalised text), the sample is spread evenly over the groups named by
`--stratify-by`, and hard cases (the candidate failed, a judge graded low, the
candidate disagreed with the baseline) are over-represented up to `hard_share`
of each group's quota. The file loads with `rollout.app.evals.load_cases`
unchanged; `matches_reference` below is a ready scorer for it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rollout.core.scorers import normalize_text, text_similarity
from rollout.errors import InvalidInputError
from rollout.store.samples import KeptAnswer

HARD_GRADE = 0.5          # a judge's grade below this makes a case hard
DISAGREEMENT = 0.8        # a candidate answer less similar than this to the reference disagrees
REFERENCE_MATCH = 0.8     # matches_reference: similarity that counts as the same answer


@dataclass(frozen=True, slots=True)
class ExportedCase:
    id: str
    category: str
    input: Any
    expected: Any
    scores: Mapping[str, float]
    hard: str | None          # why the case is hard, or None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "category": self.category, "input": self.input, "expected": self.expected,
                "scores": dict(self.scores), "hard": self.hard}


def hardness(answer: KeptAnswer) -> str | None:
    """Why a kept answer makes a hard case: the candidate failed, a grade was low, or the arms disagreed."""
    if answer.candidate_error:
        return "candidate failed"
    low = sorted(name for name, score in answer.scores.items()
                 if not name.startswith(("baseline.", "candidate.")) and score < HARD_GRADE)
    if low:
        return f"low grade: {', '.join(low)}"
    if answer.candidate is not None and text_similarity(answer.reference, answer.candidate) < DISAGREEMENT:
        return "candidate disagreed with the baseline"
    return None


def select_cases(answers: Sequence[KeptAnswer], *, source: str, sample: int,
                 stratify_by: Literal["category", "stratum"] = "category", hard_share: float = 0.5,
                 seed: int = 0) -> list[ExportedCase]:
    """At most `sample` cases, deduplicated, spread over the groups, hard cases first up to `hard_share`."""
    if sample < 1:
        raise InvalidInputError("--sample must be at least 1")
    if not 0.0 <= hard_share <= 1.0:
        raise InvalidInputError("--hard-share must be between 0 and 1")
    rng = random.Random(seed)
    seen: set[str] = set()
    groups: dict[str, list[tuple[KeptAnswer, str | None]]] = {}
    for answer in answers:
        key = normalize_text(answer.input)
        if key in seen:
            continue
        seen.add(key)
        group = (answer.category if stratify_by == "category" else answer.stratum) or "all"
        groups.setdefault(group, []).append((answer, hardness(answer)))
    picked: list[ExportedCase] = []
    # Even quotas; what a small group cannot fill goes to the others, round by round.
    quotas = _quotas({g: len(items) for g, items in groups.items()}, sample)
    for group in sorted(groups):
        items = groups[group]
        hard = [i for i in items if i[1] is not None]
        easy = [i for i in items if i[1] is None]
        rng.shuffle(hard)
        rng.shuffle(easy)
        quota = quotas[group]
        take_hard = min(len(hard), max(round(quota * hard_share), quota - len(easy)))
        chosen = hard[:take_hard] + easy[:quota - take_hard]
        picked.extend(_case(answer, why, group, source) for answer, why in chosen)
    return picked


def write_cases(cases: Sequence[ExportedCase], out: Path) -> None:
    out.write_text("".join(json.dumps(c.to_json(), ensure_ascii=False, sort_keys=True) + "\n" for c in cases),
                   encoding="utf-8")


def matches_reference(case: Mapping[str, Any], output: Any) -> float:
    """An eval scorer for exported cases: 1.0 when the output says what the baseline said (similarity >= 0.8)."""
    return 1.0 if text_similarity(case["expected"], output) >= REFERENCE_MATCH else 0.0


def _quotas(sizes: Mapping[str, int], sample: int) -> dict[str, int]:
    quotas = {g: 0 for g in sizes}
    left = min(sample, sum(sizes.values()))
    while left > 0:
        open_groups = [g for g in sorted(sizes) if quotas[g] < sizes[g]]
        share = max(1, left // len(open_groups))
        for g in open_groups:
            add = min(share, sizes[g] - quotas[g], left)
            quotas[g] += add
            left -= add
            if left == 0:
                break
    return quotas


def _case(answer: KeptAnswer, why: str | None, group: str, source: str) -> ExportedCase:
    return ExportedCase(id=f"{source}-{answer.sample_id}", category=group, input=_json_or_text(answer.input),
                        expected=_json_or_text(answer.reference), scores=answer.scores, hard=why)


def _json_or_text(text: str) -> Any:
    """Kept text back as the JSON it was, when it was JSON (the SDK keeps structured inputs as JSON)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (dict, list)) else text


__all__ = ["ExportedCase", "hardness", "matches_reference", "select_cases", "write_cases"]
