"""Sufficient statistics: golden numbers, merging, histograms."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollout.core.stats import BINS_PER_LN, ArmStats, LogHistogram, histogram_bin, merge

values = st.lists(st.floats(min_value=0.001, max_value=1e4, allow_nan=False), max_size=30)


def test_given_four_values_when_summarised_then_moments_match_hand_computation():
    # Given 1, 2, 3, 4
    stats = ArmStats.from_values([1, 2, 3, 4])
    # Then n = 4, sum = 10, sum of squares = 1 + 4 + 9 + 16 = 30,
    # mean = 2.5, variance = (30 - 10**2 / 4) / 3 = 5 / 3
    assert (stats.n, stats.sum, stats.sum_sq) == (4, 10, 30)
    assert stats.mean == 2.5
    assert stats.variance == pytest.approx(5 / 3)
    # and on the log scale: ln 1 + ln 2 + ln 3 + ln 4 = ln 24
    assert stats.log_n == 4
    assert stats.log_sum == pytest.approx(math.log(24))


def test_given_nonpositive_values_then_they_count_on_linear_scale_only():
    stats = ArmStats.from_values([0.0, -1.0, math.e])
    assert stats.n == 3 and stats.log_n == 1
    assert stats.moments("log") == (1, pytest.approx(1.0), stats.moments("log")[2])
    assert math.isnan(stats.moments("log")[2])  # one value has no spread


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], (0, math.nan, math.nan)),
        ([5.0], (1, 5.0, math.nan)),
        ([2.0, 2.0, 2.0], (3, 2.0, 0.0)),
    ],
)
def test_degenerate_arms_give_nan_not_errors(values, expected):
    n, mean, var = ArmStats.from_values(values).moments()
    assert n == expected[0]
    for got, want in ((mean, expected[1]), (var, expected[2])):
        assert (math.isnan(got) and math.isnan(want)) or got == want


@given(values, values)
def test_merging_equals_summarising_the_union(a, b):
    merged = ArmStats.from_values(a) + ArmStats.from_values(b)
    whole = ArmStats.from_values(a + b)
    assert merged.n == whole.n and merged.log_n == whole.log_n
    assert merged.sum == pytest.approx(whole.sum, rel=1e-9, abs=1e-6)
    assert merged.sum_sq == pytest.approx(whole.sum_sq, rel=1e-9, abs=1e-6)
    assert merged.log_sum == pytest.approx(whole.log_sum, rel=1e-9, abs=1e-6)
    assert merged.histogram == whole.histogram


@given(values, values, values)
def test_merge_is_associative_and_empty_is_neutral(a, b, c):
    x, y, z = (ArmStats.from_values(v) for v in (a, b, c))
    assert ((x + y) + z).histogram == (x + (y + z)).histogram
    assert merge([x, ArmStats()]) == x + ArmStats()
    assert (x + ArmStats()).n == x.n


def test_histogram_bins_are_twenty_per_unit_of_ln():
    # e**1 lies at ln = 1.0 -> bin floor(1.0 * 20) = 20; 1.0 at bin 0; 0.5 at floor(-0.693 * 20) = -14
    assert BINS_PER_LN == 20
    assert [histogram_bin(v) for v in (math.exp(1.0001), 1.0, 0.5)] == [20, 0, -14]


def test_histogram_quantile_lands_within_its_bin():
    # Given 1..100: the p95 is 95, whose bin is floor(ln 95 * 20) = floor(91.08) = 91,
    # reported as the bin's geometric middle exp(91.5 / 20) = 97.0 (within the 5 % bin).
    hist = LogHistogram.from_values(range(1, 101))
    assert hist.total == 100
    assert hist.quantile_bin(0.95) == 91
    assert hist.quantile(0.95) == pytest.approx(math.exp(91.5 / 20))
    # bin 92 starts at exp(92 / 20) = exp(4.6) = 99.48, so only the value 100 lies at or above it
    assert hist.count_at_or_above(92) == 1


def test_empty_histogram_has_no_quantile():
    assert LogHistogram().quantile(0.95) is None


def test_evidence_from_two_windows_merges_cell_by_cell():
    from rollout.core.stats import Evidence

    # Given Monday's and Tuesday's evidence for the same cell, and a new cell on Tuesday
    monday = Evidence({("error", "candidate", "eu", 0): ArmStats.from_values([0, 1])},
                      units={("candidate", "eu", 0): 2}, allocation_bp={("eu", 0): 100})  # fmt: skip
    tuesday = Evidence({("error", "candidate", "eu", 0): ArmStats.from_values([1]),
                        ("error", "baseline", "eu", 0): ArmStats.from_values([0])},
                       units={("candidate", "eu", 0): 1}, allocation_bp={("eu", 0): 500})  # fmt: skip
    # When merged
    both = monday + tuesday
    # Then counts add up and the later allocation wins
    assert both.arm("error", "candidate", "eu", 0).n == 3
    assert both.arm("error", "candidate", "eu", 0).sum == 2
    assert both.units[("candidate", "eu", 0)] == 3
    assert both.allocation_bp[("eu", 0)] == 500
    assert both.cells("error") == [("eu", 0)]
    # and evidence is read-only
    with pytest.raises(TypeError):
        both.arms[("error", "baseline", "eu", 1)] = ArmStats()  # type: ignore[index]


def test_evidence_and_stats_survive_pickling():
    import pickle

    from rollout.core.stats import Evidence

    ev = Evidence({("latency_ms", "candidate", "eu", 0): ArmStats.from_values([1.0, 2.0, 40.0])},
                  units={("candidate", "eu", 0): 3}, allocation_bp={("eu", 0): 100})  # fmt: skip
    back = pickle.loads(pickle.dumps(ev))
    assert back == ev
    assert back.cells("latency_ms") == [("eu", 0)]
    assert back.arm("latency_ms", "candidate", "eu", 0).histogram.quantile(0.5) is not None
