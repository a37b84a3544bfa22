"""Scorers: turn one shadow pair's outputs into metrics the judge can compare.

A scorer has a `name` (the metric it records, an identifier) and is one of
two kinds:

* **per-output** (`compares=False`): `fn(input, output) -> float` is called
  for each arm's own output, so each arm gets its own value. JSON validity,
  schema agreement, refusal detection and any user quality score
  (an LLM-as-judge, say) are per-output.
* **agreement** (`compares=True`): `fn(baseline_output, candidate_output) ->
  float` compares the candidate's answer with the baseline's answer to the
  same input. The candidate records the score and the baseline records 1.0
  (the baseline always agrees with itself), so the pair's difference is
  `agreement - 1` and a plan can require "agreement >= 1 - margin" with the
  ordinary paired non-inferiority test on that metric, with no special case
  in the judge. When the candidate failed, it records 0.0 (a failed answer
  agrees with nothing; leaving the pair out would hide failures on exactly
  the hard inputs); when the baseline failed there is nothing to agree with
  and neither arm records the metric.

Every score is a float in [0, 1]; a scorer that returns anything else, or
raises, is counted as a scoring error by the shadow runner and its metric is
left out for that arm. Any plain callable `(input, output) -> float` passed
where a scorer is expected becomes a per-output scorer named after the
function.

Everything here is pure: no I/O, no clock, safe to call from any thread.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RESERVED_METRICS = frozenset({"latency_ms", "error", "cost_usd"})
"""Metrics the shadow runner records itself; a scorer may not take these names."""

from rollout.core.policy import METRIC_NAME as _METRIC_NAME  # noqa: E402 - one name rule


@dataclass(frozen=True, slots=True)
class Scorer:
    """One named score. See the module docstring for the two kinds."""

    name: str
    fn: Callable[[Any, Any], float]
    compares: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _METRIC_NAME.match(self.name):
            raise ValueError(f"scorer name {self.name!r} must be a metric name (letters, digits, _; at most 64)")
        if self.name in RESERVED_METRICS:
            raise ValueError(f"scorer name {self.name!r} is recorded by the shadow runner itself; pick another")
        if not callable(self.fn):
            raise TypeError(f"scorer {self.name!r} needs a callable, got {type(self.fn).__name__}")

    def __call__(self, a: Any, b: Any) -> float:
        """The score, checked: a float in [0, 1], or ValueError."""
        value = self.fn(a, b)
        if isinstance(value, bool):
            value = 1.0 if value else 0.0
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"scorer {self.name!r} returned {value!r}; scores must be numbers in [0, 1]")
        return float(value)


def as_scorer(item: Scorer | Callable[[Any, Any], float]) -> Scorer:
    """A Scorer as is; a plain callable as a per-output scorer named after it."""
    if isinstance(item, Scorer):
        return item
    if not callable(item):
        raise TypeError(f"a scorer must be a Scorer or a callable (input, output) -> float, got {item!r}")
    name = getattr(item, "__name__", None)
    if not isinstance(name, str) or not _METRIC_NAME.match(name) or name == "<lambda>":
        raise ValueError("a plain callable used as a scorer needs a usable __name__; wrap it in "
                         "rollout.core.scorers.quality(fn, name=...)")
    return Scorer(name, item)


def as_scorers(items: Iterable[Scorer | Callable[[Any, Any], float]]) -> tuple[Scorer, ...]:
    scorers = tuple(as_scorer(item) for item in items)
    names = [s.name for s in scorers]
    if len(set(names)) != len(names):
        raise ValueError(f"scorer names must be unique, got {names}")
    return scorers


# --- text helpers ------------------------------------------------------------------

def as_text(output: Any) -> str:
    """An output as text: strings as they are, bytes decoded, anything else as compact JSON (or repr)."""
    if isinstance(output, str):
        return output
    if isinstance(output, (bytes, bytearray)):
        return bytes(output).decode("utf-8", errors="replace")
    try:
        return json.dumps(output, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(output)


_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Case-folded, whitespace collapsed and trimmed: the differences no reader would call a different answer."""
    return _SPACE.sub(" ", text).strip().casefold()


def text_similarity(a: Any, b: Any) -> float:
    """difflib's ratio (2·matches / total length) of the two normalized texts, in [0, 1]; two empty texts are 1.0."""
    x, y = normalize_text(as_text(a)), normalize_text(as_text(b))
    if x == y:
        return 1.0
    # autojunk off: its heuristic treats frequent characters as noise, which
    # makes the ratio of two long texts depend on their length, not their content.
    return difflib.SequenceMatcher(None, x, y, autojunk=False).ratio()


# --- JSON ---------------------------------------------------------------------------

def parse_json(output: Any) -> tuple[bool, Any]:
    """(True, value) if the output is JSON (text that parses, or a value that serializes), else (False, None)."""
    if isinstance(output, (str, bytes, bytearray)):
        try:
            return True, json.loads(output)
        except (ValueError, UnicodeDecodeError):
            return False, None
    try:
        json.dumps(output, allow_nan=False)
    except (TypeError, ValueError):
        return False, None
    return True, output


def _validator(schema: Mapping[str, Any]) -> Any:
    """A jsonschema validator for `schema` (its `$schema` dialect, else the newest); ValueError if the schema is bad."""
    # Imported on first use: it is a tenth of `import rollout.sdk` (0.35-0.4 s of 4 s measured with
    # -X importtime on the shared machine), and most apps never score against a schema.
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
    return cls(schema)


def schema_errors(instance: Any, schema: Mapping[str, Any] | Any) -> list[str]:
    """Where `instance` disagrees with a JSON Schema, as readable `path: problem` lines; empty when it agrees.

    The whole of JSON Schema, checked by the `jsonschema` package. `schema`
    is a schema document or a validator `schema_valid` built from one.
    """
    validator = schema if hasattr(schema, "iter_errors") else _validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (e.json_path, e.message))
    return [f"{e.json_path}: {_problem(e)}" for e in errors]


def _problem(error: Any) -> str:
    if error.validator == "type":
        expected = error.validator_value
        names = [expected] if isinstance(expected, str) else list(expected)
        return f"expected {'/'.join(names)}, got {_json_type(error.instance)}"
    return str(error.message)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# --- refusals -----------------------------------------------------------------------

REFUSAL_PHRASES: tuple[str, ...] = (
    "i can't help with",
    "i cannot help with",
    "i can't assist with",
    "i cannot assist with",
    "i'm unable to",
    "i am unable to",
    "i'm not able to",
    "i am not able to",
    "i won't be able to",
    "i can't provide",
    "i cannot provide",
    "i can't comply",
    "i cannot comply",
    "i must decline",
    "i have to decline",
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "as an ai language model",
    "as an ai, i",
    "i'm not allowed to",
    "i am not allowed to",
    "it would not be appropriate for me",
)
"""Phrases that mark an answer as a refusal, matched case-insensitively anywhere in the
normalized text (curly apostrophes count as straight ones). Pass your own list to `refusal()`
for another language or a model with its own wording."""


def is_refusal(output: Any, phrases: Sequence[str] = REFUSAL_PHRASES) -> bool:
    text = normalize_text(as_text(output)).replace("\u2019", "'")
    return any(p in text for p in phrases)


# --- the scorers --------------------------------------------------------------------

def exact_match(*, name: str = "exact_match", normalize: bool = False) -> Scorer:
    """Agreement: 1.0 when the candidate's output equals the baseline's (after `normalize_text` if asked)."""
    if normalize:
        return Scorer(name, lambda b, c: float(normalize_text(as_text(b)) == normalize_text(as_text(c))), True)
    return Scorer(name, lambda b, c: float(b == c), True)


def similarity(*, name: str = "similarity") -> Scorer:
    """Agreement: `text_similarity` of the candidate's output to the baseline's."""
    return Scorer(name, text_similarity, True)


def json_valid(*, name: str = "json_valid") -> Scorer:
    """Per output: 1.0 when the output is JSON."""
    return Scorer(name, lambda _input, out: float(parse_json(out)[0]))


def schema_valid(schema: Mapping[str, Any], *, name: str = "schema_valid") -> Scorer:
    """Per output: 1.0 when the output is JSON that agrees with `schema` (any JSON Schema); 0.0 otherwise.

    The schema is checked here, once: a bad one is a ValueError now, not a zero score on every pair.
    """
    validator = _validator(schema)

    def score(_input: Any, out: Any) -> float:
        ok, value = parse_json(out)
        return float(ok and validator.is_valid(value))
    return Scorer(name, score)


def refusal(*, name: str = "refusal", phrases: Sequence[str] = REFUSAL_PHRASES) -> Scorer:
    """Per output: 1.0 when the output reads as a refusal (lower is better: use a margin on the increase)."""
    folded = tuple(normalize_text(p) for p in phrases)
    return Scorer(name, lambda _input, out: float(is_refusal(out, folded)))


def quality(fn: Callable[[Any, Any], float], *, name: str) -> Scorer:
    """Per output: any callable `(input, output) -> float in [0, 1]`, an LLM-as-judge for instance."""
    return Scorer(name, fn)


def agreement(fn: Callable[[Any, Any], float], *, name: str) -> Scorer:
    """Agreement: any callable `(baseline_output, candidate_output) -> float in [0, 1]`."""
    return Scorer(name, fn, True)


__all__ = [
    "REFUSAL_PHRASES",
    "Scorer",
    "agreement",
    "as_scorer",
    "as_scorers",
    "as_text",
    "exact_match",
    "is_refusal",
    "json_valid",
    "normalize_text",
    "parse_json",
    "quality",
    "refusal",
    "schema_errors",
    "schema_valid",
    "similarity",
    "text_similarity",
]
