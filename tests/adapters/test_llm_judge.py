"""The LLM-as-judge scorer against a chat endpoint on a real local socket."""

from __future__ import annotations

import pytest

from rollout.adapters.llm_judge import JudgeError, LlmJudge
from rollout.testing.chat_endpoint import FakeChatEndpoint


@pytest.mark.parametrize(("reply", "scale", "expected"), [
    ("4", (1, 5), 0.75),
    ("Score: 5/5, faithful", (1, 5), 1.0),
    ('{"score": 0.3, "why": "misses a fact"}', (0, 1), 0.3),
    ("1", (1, 5), 0.0),
])
def test_the_reply_becomes_a_score_on_zero_to_one(reply: str, scale: tuple[int, int], expected: float) -> None:
    # Given an endpoint that answers with `reply`
    with FakeChatEndpoint(grade=lambda _prompt: reply) as endpoint:
        judge = LlmJudge(base_url=endpoint.base_url, model="grader", rubric="Grade it.", scale=scale,
                         price_per_mtok=(1.0, 2.0))
        # When an answer is graded
        grade = judge.grade("the ticket", "the summary")
        judge.close()
    # Then the score is mapped onto [0, 1] and the cost comes from the reported usage
    assert grade.score == pytest.approx(expected)
    assert grade.cost_usd == pytest.approx((grade.input_tokens * 1.0 + grade.output_tokens * 2.0) / 1e6)
    assert grade.input_tokens > 0


def test_the_prompt_carries_the_rubric_the_input_and_the_answer() -> None:
    seen: list[str] = []
    with FakeChatEndpoint(grade=lambda prompt: seen.append(prompt) or "1") as endpoint:
        judge = LlmJudge(base_url=endpoint.base_url, model="grader", rubric="Is it faithful?")
        judge("ticket 4471: charged twice", "Customer was charged twice.")
        judge.close()
    assert "Is it faithful?" in seen[0] and "charged twice" in seen[0] and "Customer was" in seen[0]


def test_overload_is_retried_and_then_graded() -> None:
    # Given an endpoint that answers 503 twice before it grades
    with FakeChatEndpoint(grade=lambda _p: "1") as endpoint:
        endpoint.fail_next = 2
        judge = LlmJudge(base_url=endpoint.base_url, model="grader", rubric="r", attempts=3)
        # When graded, Then the third try answers
        assert judge("a", "b") == 1.0
        assert endpoint.requests == 3
        judge.close()


@pytest.mark.parametrize(("reply", "fail_next", "attempts"), [
    ("no number here", 0, 1),        # a reply without a score is an error, not a guess
    ("9", 0, 1),                      # outside the 1..5 scale
    ("3", 5, 2),                      # still failing after every retry
])
def test_what_cannot_be_graded_is_an_error(reply: str, fail_next: int, attempts: int) -> None:
    with FakeChatEndpoint(grade=lambda _p: reply) as endpoint:
        endpoint.fail_next = fail_next
        judge = LlmJudge(base_url=endpoint.base_url, model="grader", rubric="r", scale=(1, 5), attempts=attempts)
        with pytest.raises(JudgeError):
            judge.grade("a", "b")
        judge.close()


def test_a_slow_endpoint_times_out() -> None:
    with FakeChatEndpoint(grade=lambda _p: "1", latency=1.0) as endpoint:
        judge = LlmJudge(base_url=endpoint.base_url, model="grader", rubric="r", timeout=0.2, attempts=1)
        with pytest.raises(JudgeError):
            judge.grade("a", "b")
        judge.close()


def test_the_judge_is_a_per_output_scorer() -> None:
    with FakeChatEndpoint(grade=lambda _p: "0.8") as endpoint:
        scorer = LlmJudge(base_url=endpoint.base_url, model="grader", rubric="r").scorer("faithfulness")
        assert scorer.name == "faithfulness" and not scorer.compares
        assert scorer("input", "output") == pytest.approx(0.8)
