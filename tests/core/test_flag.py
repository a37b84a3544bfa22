"""Flag definitions are validated once, with messages a person can act on."""

from __future__ import annotations

import pytest

from rollout.core import FlagState, Stratum, percent_to_bp
from rollout.core.flag import check_payload
from rollout.errors import InvalidFlagError


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"name": "default", "match": {"attribute": "a", "equals": "b"}}, "'default' is the stratum"),
        ({"name": "9lives", "match": {"attribute": "a", "equals": "b"}}, "must start with a letter"),
        ({"name": "s", "match": []}, "at least one condition"),
        ({"name": "s", "match": {"attribute": "a", "like": "b"}}, "unknown operator"),
        ({"name": "s", "match": {"attribute": "a", "in": "b"}}, "needs a list"),
        ({"name": "s", "match": {"attribute": "a", "exists": "yes"}}, "true or false"),
        ({"name": "s", "match": {"attribute": "a", "equals": {"x": 1}}}, "strings, numbers or booleans"),
        ({"name": "s", "match": {"attribute": "a", "equals": 1, "in": [1]}}, "exactly one operator"),
        ({"name": "s"}, "needs 'name' and 'match'"),
    ],
)
def test_bad_strata_are_refused_with_a_reason(definition: dict, message: str) -> None:
    with pytest.raises(InvalidFlagError, match=message):
        Stratum.from_json(definition)


def test_a_flag_lists_every_problem_at_once() -> None:
    with pytest.raises(InvalidFlagError) as info:
        FlagState(key="bad key!", salt="s", baseline="a", candidate="a", allocations={"nope": 20_000})
    text = str(info.value)
    for fragment in ("flag key", "must be different", "unknown stratum 'nope'", "0..10000"):
        assert fragment in text


@pytest.mark.parametrize(("percent", "bp"), [(0, 0), (0.01, 1), (5, 500), (12.5, 1250), (100, 10_000)])
def test_percent_to_basis_points(percent: float, bp: int) -> None:
    assert percent_to_bp(percent) == bp


@pytest.mark.parametrize("percent", [-1, 100.5, 0.001, float("nan"), True, "5"])
def test_impossible_percentages_are_refused(percent: object) -> None:
    with pytest.raises(InvalidFlagError):
        percent_to_bp(percent)  # type: ignore[arg-type]


@pytest.mark.parametrize(("payload", "ok"), [
    (None, True), ("text", True), (3, True), (0.5, True), (False, True), ({"max_tokens": 256}, True),
    ({"items": [1, 2]}, True),
    ([1, 2], False), ((1, 2), False), ({1: "x"}, False), ({1, 2}, False),
])
def test_a_variant_payload_is_an_openfeature_value_never_an_array(payload: object, ok: bool) -> None:
    # Given a payload, When it is checked, Then text, numbers, booleans, objects pass and arrays are refused
    if ok:
        check_payload("v", payload)
    else:
        with pytest.raises(InvalidFlagError):
            check_payload("v", payload)
