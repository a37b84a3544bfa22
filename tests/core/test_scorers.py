"""Scorers: each kind against hand-worked cases, and the checks that keep a bad score out of the evidence."""

from __future__ import annotations

import math

import pytest

from rollout.core import scorers as sc

SCHEMA = {
    "type": "object",
    "required": ["summary", "priority"],
    "additionalProperties": False,
    "properties": {
        "summary": {"type": "string", "minLength": 1},
        "priority": {"enum": ["low", "medium", "high"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
}


@pytest.mark.parametrize(("scorer", "a", "b", "expected"), [
    # agreement scorers: (baseline output, candidate output)
    (sc.exact_match(), "Reset your password.", "Reset your password.", 1.0),
    (sc.exact_match(), "Reset your password.", "reset  your password.", 0.0),
    (sc.exact_match(normalize=True), "Reset your password.", " reset\n your PASSWORD. ", 1.0),
    (sc.exact_match(), {"a": 1}, {"a": 1}, 1.0),
    (sc.similarity(), "hi", "hi!", 0.8),                   # 2·2 matches / 5 characters
    (sc.similarity(), "Hello  World", "hello world", 1.0),  # case and whitespace do not count
    (sc.similarity(), "abc", "xyz", 0.0),
    (sc.similarity(), "", "", 1.0),
    # per-output scorers: (input, output)
    (sc.json_valid(), "q", '{"a": [1, 2]}', 1.0),
    (sc.json_valid(), "q", '{"a": [1, 2]', 0.0),
    (sc.json_valid(), "q", {"already": "parsed"}, 1.0),
    (sc.json_valid(), "q", {"not", "json"}, 0.0),
    (sc.json_valid(), "q", float("nan"), 0.0),
    (sc.schema_valid(SCHEMA), "q", '{"summary": "Login loop", "priority": "high", "tags": ["auth"]}', 1.0),
    (sc.schema_valid(SCHEMA), "q", '{"summary": "Login loop"}', 0.0),                       # required
    (sc.schema_valid(SCHEMA), "q", '{"summary": "x", "priority": "urgent"}', 0.0),          # enum
    (sc.schema_valid(SCHEMA), "q", '{"summary": "x", "priority": "low", "extra": 1}', 0.0),  # additional
    (sc.schema_valid(SCHEMA), "q", '{"summary": "x", "priority": "low", "tags": [1]}', 0.0),  # items
    (sc.schema_valid(SCHEMA), "q", '{"summary": "", "priority": "low"}', 0.0),              # minLength
    (sc.schema_valid(SCHEMA), "q", '{"summary": "x", "priority": "low", "confidence": 1.5}', 0.0),
    (sc.schema_valid(SCHEMA), "q", "not json", 0.0),
    (sc.schema_valid({"type": "integer"}), "q", "true", 0.0),   # JSON true is not a number
    (sc.schema_valid({"type": "integer"}), "q", "3.0", 1.0),    # but 3.0 is an integer
    (sc.refusal(), "q", "I'm sorry, but I can't help with that request.", 1.0),
    (sc.refusal(), "q", "I\u2019M UNABLE TO share account details.", 1.0),  # curly apostrophe, capitals
    (sc.refusal(), "q", "The customer cannot log in; reset the session.", 0.0),
    (sc.refusal(phrases=("ich kann nicht",)), "q", "Ich kann nicht helfen.", 1.0),
    (sc.quality(lambda inp, out: len(out) / len(inp), name="ratio"), "abcd", "ab", 0.5),
])
def test_scorer_values(scorer: sc.Scorer, a: object, b: object, expected: float) -> None:
    # Given a scorer and two values, When scored, Then the hand-worked value
    assert scorer(a, b) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, math.inf, "0.5", None])
def test_a_score_outside_0_1_is_refused_not_clamped(bad: object) -> None:
    # Given a user scorer (an LLM judge, say) that returns something that is not a score
    judge = sc.quality(lambda _i, _o: bad, name="judge")
    # When it is called, Then it raises, so the runner leaves the metric out instead of storing garbage
    with pytest.raises(ValueError, match="judge"):
        judge("input", "output")


def test_booleans_count_as_0_and_1() -> None:
    assert sc.quality(lambda _i, o: o == "yes", name="said_yes")("q", "yes") == 1.0


@pytest.mark.parametrize(("name", "message"), [
    ("latency_ms", "recorded by the shadow runner"),
    ("error", "recorded by the shadow runner"),
    ("cost_usd", "recorded by the shadow runner"),
    ("has space", "metric name"),
    ("", "metric name"),
])
def test_scorer_names_are_metric_names_and_not_reserved(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sc.quality(lambda _i, _o: 1.0, name=name)


def test_a_plain_function_becomes_a_per_output_scorer_named_after_it() -> None:
    def politeness(_input: object, output: str) -> float:
        return 1.0 if "please" in output else 0.0

    scorer = sc.as_scorer(politeness)
    assert (scorer.name, scorer.compares, scorer("q", "please wait")) == ("politeness", False, 1.0)


def test_a_lambda_needs_a_name_and_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="__name__"):
        sc.as_scorer(lambda _i, _o: 1.0)
    with pytest.raises(ValueError, match="unique"):
        sc.as_scorers([sc.similarity(), sc.similarity()])


def test_schema_errors_say_where() -> None:
    errors = sc.schema_errors({"summary": 3, "priority": "low", "tags": ["a", 2]}, SCHEMA)
    assert errors == ["$.summary: expected string, got integer", "$.tags[1]: expected string, got integer"]


def test_similarity_of_long_texts_depends_on_content_not_length() -> None:
    # difflib's autojunk would treat frequent characters as junk in texts over 200 characters
    a = "the cat sat on the mat. " * 20
    assert sc.text_similarity(a, a.replace("cat", "dog", 1)) > 0.99


@pytest.mark.parametrize(("schema", "output", "expected"), [
    # keywords past the old hand-written subset: the whole of JSON Schema is checked now
    ({"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"}, '"ABC-12"', 1.0),
    ({"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"}, '"abc-12"', 0.0),
    ({"oneOf": [{"type": "integer"}, {"type": "string"}]}, "3", 1.0),
    ({"oneOf": [{"type": "integer"}, {"type": "string"}]}, "[3]", 0.0),
    ({"type": "object", "properties": {"n": {"$ref": "#/$defs/small"}}, "$defs": {"small": {"maximum": 9}}},
     '{"n": 12}', 0.0),
])
def test_schema_valid_checks_all_of_json_schema(schema: dict, output: str, expected: float) -> None:
    assert sc.schema_valid(schema)("q", output) == expected


def test_a_bad_schema_is_refused_when_the_scorer_is_made() -> None:
    # Given a schema with an impossible type, When a scorer is made from it, Then it says so at once
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        sc.schema_valid({"type": "strnig"})
