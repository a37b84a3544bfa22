"""eval_gate(): Tango's paired score test against hand-computed values, categories, Bonferroni, size."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from rollout.core.stats import EvalGateResult, GateVerdict, eval_gate, tango_score


def cases(category: str, *, both: int = 0, improved: int = 0, regressed: int = 0, neither: int = 0):
    """Cases of one category by their 2x2 cell: improved = only the candidate passes, regressed = only the baseline."""
    return (
        [(category, True, True)] * both
        + [(category, False, True)] * improved
        + [(category, True, False)] * regressed
        + [(category, False, False)] * neither
    )


@pytest.mark.parametrize(
    ("n", "improved", "regressed", "margin", "z"),
    [
        # n = 200, 10 improved, 6 regressed, delta0 = -0.05:
        #   A = 2n = 400; B = -(10 + 6) + (400 - 10 + 6)(-0.05) = -16 - 19.8 = -35.8
        #   C = -6 (-0.05)(1.05) = 0.315; B^2 - 4AC = 1281.64 - 504 = 777.64, sqrt = 27.8863
        #   q = (27.8863 + 35.8) / 800 = 0.079608
        #   Z = (10 - 6 + 200 * 0.05) / sqrt(200 (2 * 0.079608 - 0.05 * 1.05)) = 14 / sqrt(21.3432) = 3.0304
        (200, 10, 6, 0.05, 3.0304),
        # 10 improved, 14 regressed: B = -24 + 404 (-0.05) = -44.2, C = 0.735, B^2 - 4AC = 1953.64 - 1176 = 777.64
        #   q = (27.8863 + 44.2) / 800 = 0.090108; Z = 6 / sqrt(200 (0.180216 - 0.0525)) = 6 / 5.0541 = 1.1872
        (200, 10, 14, 0.05, 1.1872),
        # no discordant case: q = margin, Z = sqrt(n m / (1 - m)) = sqrt(100 * 0.05 / 0.95) = 2.2942
        (100, 0, 0, 0.05, 2.2942),
        # ... and with half the cases: sqrt(50 * 0.05 / 0.95) = 1.6222, just short of z(0.95) = 1.6449
        (50, 0, 0, 0.05, 1.6222),
    ],
)
def test_tango_score_golden(n, improved, regressed, margin, z):
    assert float(tango_score(n, improved, regressed, -margin)) == pytest.approx(z, abs=1e-4)


def test_score_uses_the_restricted_maximum_likelihood():
    # Given a table, When the likelihood under p_c - p_b = delta0 is maximised by brute force over
    # q = P(regressed), Then Tango's closed-form q gives the same variance, hence the same Z
    n, improved, regressed, delta0 = 150, 9, 17, -0.04
    q = np.linspace(max(0.0, -delta0) + 1e-9, (1 - delta0) / 2 - 1e-9, 200_001)
    loglik = improved * np.log(q + delta0) + regressed * np.log(q) + (n - improved - regressed) * np.log(1 - 2 * q - delta0)
    q_hat = q[np.argmax(loglik)]
    brute = (improved - regressed - n * delta0) / math.sqrt(n * (2 * q_hat + delta0 * (1 - delta0)))
    assert float(tango_score(n, improved, regressed, delta0)) == pytest.approx(brute, abs=1e-4)


@pytest.mark.parametrize(
    ("table", "margin", "passed"),
    [
        (dict(both=170, improved=10, regressed=6, neither=14), 0.05, True),  # Z 3.03 > 1.645
        (dict(both=170, improved=10, regressed=14, neither=6), 0.05, False),  # Z 1.19
        (dict(both=90, neither=10), 0.05, True),  # identical answers, Z 2.29
        (dict(both=45, neither=5), 0.05, False),  # identical answers but too few: Z 1.62
        (dict(both=45, neither=5), 0.0, False),  # margin 0 needs the candidate to be better
    ],
)
def test_single_category_gate_golden(table, margin, passed):
    # Given one category large enough to gate, tested at alpha / 1
    result = eval_gate(cases("tickets", **table), margin=margin, alpha=0.05, min_cases=30)
    # Then the gate follows the hand-computed score test, overall and in the category
    assert result.passed is passed
    assert result.overall.verdict is (GateVerdict.NON_INFERIOR if passed else GateVerdict.NOT_SHOWN)
    row = result.categories[0]
    assert (row.n, row.improved, row.regressed) == (sum(table.values()), table.get("improved", 0),
                                                    table.get("regressed", 0))  # fmt: skip
    assert row.difference == pytest.approx(row.candidate_rate - row.baseline_rate)
    # and the reported bound is the score test inverted: Z(lower) = z(1 - alpha), beyond the margin iff passed
    assert float(tango_score(row.n, row.improved, row.regressed, row.lower)) == pytest.approx(norm.isf(0.05), abs=1e-6)
    assert (row.lower > -margin) is passed
    assert result.reason.startswith("Pass" if passed else "Fail")


def test_a_regression_in_one_category_fails_the_gate_even_when_overall_is_fine():
    # Given 5 categories of 60 cases; the candidate matches the baseline except on billing,
    # where it fails 15 cases the baseline passes
    data = []
    for category in ("account", "billing", "bug", "feature", "refund"):
        regressed = 15 if category == "billing" else 0
        data += cases(category, both=50 - regressed, regressed=regressed, neither=10)
    # When gated with a 10-point margin
    result = eval_gate(data, margin=0.10, alpha=0.05, min_cases=30)
    # Then overall is non-inferior (-5 points over 300 cases) but billing (-25 points) fails the gate
    assert result.overall.verdict is GateVerdict.NON_INFERIOR
    verdicts = {r.category: r.verdict for r in result.categories}
    assert verdicts == {"account": GateVerdict.NON_INFERIOR, "billing": GateVerdict.NOT_SHOWN,
                        "bug": GateVerdict.NON_INFERIOR, "feature": GateVerdict.NON_INFERIOR,
                        "refund": GateVerdict.NON_INFERIOR}  # fmt: skip
    assert not result.passed
    assert "billing" in result.reason and "-25.0 points" in result.reason
    # and every category is held to alpha / 5 (Bonferroni over the 5 categories tested)
    assert all(r.alpha == pytest.approx(0.01) for r in result.categories)
    assert result.overall.alpha == 0.05


def test_small_categories_are_reported_but_do_not_gate():
    # Given a large clean category and a 10-case category where the candidate fails 4 of them
    data = cases("common", both=180, neither=20) + cases("rare", both=6, regressed=4)
    result = eval_gate(data, margin=0.05, alpha=0.05, min_cases=30)
    rare = next(r for r in result.categories if r.category == "rare")
    # Then the rare category is shown with its numbers, not gated, and the others decide
    assert rare.verdict is GateVerdict.NOT_GATED and not rare.gated
    assert rare.difference == pytest.approx(-0.4)
    assert "fewer than 30 cases" in rare.reason
    # (the Bonferroni family is the one category tested, so it is held to the full alpha)
    assert next(r for r in result.categories if r.category == "common").alpha == 0.05
    assert result.passed, result.reason


def test_gate_keeps_its_level_when_the_candidate_is_exactly_at_the_margin():
    # Given 20,000 seeded case files of 200 cases where the candidate is worse by exactly the
    # margin (5 % improved, 10 % regressed cases: p_c - p_b = -0.05)
    rng = np.random.default_rng(11)
    x = rng.multinomial(200, [0.05, 0.10, 0.85], size=20_000)
    # When each is tested at the margin, Then it passes in no more than alpha of them, up to the
    # score test's approximation (measured: 0.047; 0.053-0.055 at 40-60 cases)
    passed = tango_score(200, x[:, 0], x[:, 1], -0.05) > norm.isf(0.05)
    assert passed.mean() <= 0.055


@pytest.mark.parametrize(
    "kwargs", [dict(margin=-0.01), dict(margin=1.0), dict(margin=math.nan), dict(alpha=0), dict(alpha=0.5),
               dict(min_cases=0)],
)  # fmt: skip
def test_programmer_misuse_raises_value_error(kwargs):
    with pytest.raises(ValueError):
        eval_gate(cases("a", both=10), **kwargs)


@pytest.mark.parametrize(
    "data",
    [[], cases("a", both=40), cases("a", neither=40), cases("a", regressed=40), cases("a", improved=40),
     cases("a", both=1)],
)  # fmt: skip
def test_degenerate_case_files_give_a_result_never_an_exception(data):
    result = eval_gate(data, margin=0.05)
    assert isinstance(result, EvalGateResult) and result.reason
    result.to_json()
    if not data:
        assert not result.passed and "no cases" in result.reason


def test_result_serialises_to_plain_json():
    result = eval_gate(cases("a", both=40, regressed=1) + cases("b", both=3), margin=0.05)
    doc = result.to_json()
    assert doc["overall"]["verdict"] == result.overall.verdict.value
    assert [r["category"] for r in doc["categories"]] == ["a", "b"]
    assert doc["categories"][1]["verdict"] == "not_gated"
