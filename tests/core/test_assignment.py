"""Assignment properties that must hold for every flag, unit and allocation."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout.core import CompiledFlag, ErrorCode, FlagState, Phase, Reason, Stratum, bucket
from tests.spec.murmur3 import reference_bucket

unit_ids = st.text(min_size=1, max_size=40)
basis_points = st.integers(min_value=0, max_value=10_000)


def ramping(allocation: int, salt: str = "salt", strata: tuple[Stratum, ...] = ()) -> CompiledFlag:
    names = [s.name for s in strata] + ["default"]
    return CompiledFlag(FlagState(key="f", salt=salt, baseline="base", candidate="cand", phase=Phase.RAMPING,
                                  strata=strata, allocations={n: allocation for n in names}))


@given(unit=unit_ids, salt=st.text(max_size=20))
def test_bucket_matches_the_independent_reference_hash(unit: str, salt: str) -> None:
    # Given any unit and salt, When bucketed, Then our bucket equals the plain-Python murmur3 reference.
    assert bucket(salt, unit) == reference_bucket(salt, unit)


@given(unit=unit_ids, low=basis_points, high=basis_points)
def test_raising_an_allocation_never_moves_a_unit_out_of_the_candidate_arm(unit: str, low: int, high: int) -> None:
    # Given a unit in the candidate arm at some allocation
    low, high = min(low, high), max(low, high)
    before = ramping(low).evaluate(unit)
    # When the allocation rises
    after = ramping(high).evaluate(unit)
    # Then the unit is still on the candidate
    if before.is_candidate:
        assert after.is_candidate


@given(unit=unit_ids, bp=basis_points)
def test_a_unit_is_candidate_exactly_when_its_bucket_is_below_the_allocation(unit: str, bp: int) -> None:
    assert ramping(bp).evaluate(unit).is_candidate == (bucket("salt", unit) < bp)


@pytest.mark.parametrize("bp", [1, 500, 2_500, 5_000, 9_999])
def test_the_split_of_100000_units_is_within_binomial_bounds(bp: int) -> None:
    # Given 100,000 distinct units and an allocation of bp basis points
    flag = ramping(bp, salt="split-check")
    n = 100_000
    # When each is assigned
    hits = sum(flag.evaluate(f"user-{i}").is_candidate for i in range(n))
    # Then the share on the candidate is within 4.5 standard deviations of bp/10000
    # (a false alarm about once in 150,000 runs, per allocation).
    p = bp / 10_000
    assert abs(hits - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)) + 1


def test_two_flags_assign_independently() -> None:
    # Given two flags at 50 % with different salts
    a, b = ramping(5_000, salt="flag-a"), ramping(5_000, salt="flag-b")
    n = 40_000
    both = sum(a.evaluate(f"u{i}").is_candidate and b.evaluate(f"u{i}").is_candidate for i in range(n))
    only_a = sum(a.evaluate(f"u{i}").is_candidate for i in range(n))
    only_b = sum(b.evaluate(f"u{i}").is_candidate for i in range(n))
    # Then P(a and b) matches P(a) * P(b): a chi-square-like bound on the joint count
    expected = only_a * only_b / n
    assert abs(both - expected) <= 4.5 * math.sqrt(expected * (1 - expected / n))


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(attributes=st.dictionaries(st.text(max_size=8), st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))),
    unit=st.one_of(st.none(), st.text(max_size=10), st.integers(), st.floats(), st.binary(max_size=4)))
def test_evaluation_never_raises_whatever_the_input(attributes: dict, unit: object) -> None:
    strata = (
        Stratum.from_json({"name": "s1", "match": {"attribute": "tier", "in": ["free", 3, True]}}),
        Stratum.from_json({"name": "s2", "match": [{"attribute": "x", "exists": True},
                                                   {"attribute": "y", "not_in": ["a"]}]}),
    )
    result = ramping(5_000, strata=strata).evaluate(unit, attributes)  # type: ignore[arg-type]
    assert result.variant in ("base", "cand")


def test_non_mapping_attributes_answer_the_baseline_with_an_error() -> None:
    strata = (Stratum.from_json({"name": "s1", "match": {"attribute": "tier", "equals": "free"}}),)
    result = ramping(10_000, strata=strata).evaluate("u1", ["not", "a", "mapping"])  # type: ignore[arg-type]
    assert (result.variant, result.reason, result.error_code) == ("base", Reason.ERROR, ErrorCode.INVALID_CONTEXT)


@pytest.mark.parametrize(
    ("phase", "shadow_bp", "expected_reason", "expected_variant"),
    [
        (Phase.INACTIVE, 0, Reason.DEFAULT, "base"),
        (Phase.ROLLED_BACK, 0, Reason.DISABLED, "base"),
        (Phase.PROMOTED, 0, Reason.STATIC, "cand"),
        (Phase.SHADOW, 10_000, Reason.SPLIT, "base"),
    ],
)
def test_each_phase_serves_its_arm(phase: Phase, shadow_bp: int, expected_reason: Reason, expected_variant: str) -> None:
    flag = CompiledFlag(FlagState(key="f", salt="s", baseline="base", candidate="cand", phase=phase,
                                  shadow_bp=shadow_bp, allocations={"default": 5_000}))
    result = flag.evaluate("u1")
    assert (result.reason, result.variant) == (expected_reason, expected_variant)
    assert result.in_shadow == (phase is Phase.SHADOW)


def test_a_stale_flag_answers_the_same_variant_with_reason_stale() -> None:
    fresh = ramping(5_000)
    stale = fresh.as_stale()
    for i in range(200):
        f, s = fresh.evaluate(f"u{i}"), stale.evaluate(f"u{i}")
        assert (s.variant, s.reason) == (f.variant, Reason.STALE)
