"""Eval cases from production: deduplicated, spread over groups, hard cases over-represented."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.app.eval_export import hardness, matches_reference, select_cases
from rollout.store.samples import KeptAnswer


def answer(i: int, category: str = "billing", *, grade: float = 0.9, candidate: str | None = None,
           failed: bool = False, text: str | None = None) -> KeptAnswer:
    return KeptAnswer(sample_id=i, category=category, stratum="free", input=text or f"ticket {i}",
                      reference=f"summary {i}", candidate=candidate, scores={"faithfulness": grade},
                      candidate_error=failed)


def test_hard_cases_say_why() -> None:
    cases = [
        (answer(1, failed=True), "candidate failed"),
        (answer(2, grade=0.2), "low grade: faithfulness"),
        (answer(3, candidate="something else entirely"), "candidate disagreed with the baseline"),
        (answer(4, candidate="summary 4"), None),
        (answer(5), None),
    ]
    for kept, why in cases:
        assert hardness(kept) == why


def test_hard_cases_are_over_represented_in_every_group() -> None:
    # Given 100 answers in two categories, 10 % of them graded low
    answers = [answer(i, "billing" if i % 2 else "login", grade=0.1 if i % 10 == 0 else 0.9) for i in range(100)]
    # When 20 cases are asked for, half of each group's share hard when possible
    cases = select_cases(answers, source="online", sample=20, hard_share=0.5)
    # Then both groups get 10, and all 10 hard answers are in (5 per group would be asked; only login has them)
    assert len(cases) == 20
    assert {c.category for c in cases} == {"billing", "login"}
    assert sum(1 for c in cases if c.hard) == 5
    assert all(c.expected.startswith("summary") for c in cases)


def test_repeated_inputs_become_one_case() -> None:
    answers = [answer(i, text="My invoice is wrong") for i in range(5)] + [answer(9)]
    cases = select_cases(answers, source="shadow", sample=10)
    assert len(cases) == 2


def test_structured_inputs_come_back_as_json() -> None:
    kept = KeptAnswer(1, "billing", "free", '{"subject": "Billing", "body": "charged twice"}', "Charged twice.",
                      None, {})
    (case,) = select_cases([kept], source="online", sample=1)
    assert case.input == {"subject": "Billing", "body": "charged twice"}
    assert case.to_json()["expected"] == "Charged twice."


def test_the_reference_scorer_passes_the_baselines_own_answer() -> None:
    assert matches_reference({"expected": "Customer was charged twice."}, "customer was  charged twice.") == 1.0
    assert matches_reference({"expected": "Customer was charged twice."}, "Please reset your password.") == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["a", "b", "c"]), st.floats(0, 1)), max_size=60),
       st.integers(1, 40), st.floats(0, 1))
def test_never_more_than_asked_never_a_duplicate(rows, sample: int, hard_share: float) -> None:  # type: ignore[no-untyped-def]
    answers = [answer(i, cat, grade=g, text=f"input {n}") for i, (n, cat, g) in enumerate(rows)]
    cases = select_cases(answers, source="online", sample=sample, hard_share=hard_share)
    assert len(cases) == min(sample, len({a.input for a in answers}))
    assert len({str(c.input) for c in cases}) == len(cases)
