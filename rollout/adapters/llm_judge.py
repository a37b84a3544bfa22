"""An LLM-as-judge scorer: asks any OpenAI-compatible chat endpoint to grade one answer.

    judge = LlmJudge(base_url="http://127.0.0.1:8000/v1", model="grader-small",
                     rubric="Is the summary faithful to the ticket? Answer with a score from 1 to 5.",
                     scale=(1, 5), price_per_mtok=(0.15, 0.60))
    graded = judge.grade(ticket_text, summary)   # Grade(score=0.75, cost_usd=..., ...)
    scorer = judge.scorer("faithfulness")         # a per-output Scorer for shadow() or online evals

The endpoint gets one user message: the rubric, then the input and the answer
under headings. The grade is the first number in the reply (or in a `score`
field if the reply is JSON), mapped from `scale` onto [0, 1]. Transient faults
(connection errors, timeouts, 429 and 5xx) are retried with the project's one
retry policy; the cost of every call (from the `usage` the endpoint reports,
at the prices given) is reported with the grade, so the caller can meter it
against a budget. A reply with no usable number is an error, never a guess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from rollout.core.scorers import Scorer
from rollout.errors import InvalidInputError
from rollout.store.retry import retrying

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

DEFAULT_PROMPT = "{rubric}\n\n## Input\n{input}\n\n## Answer\n{output}\n\nReply with the score only."


@dataclass(frozen=True, slots=True)
class Grade:
    score: float          # in [0, 1]
    cost_usd: float       # what this grading cost, from the endpoint's usage report
    input_tokens: int
    output_tokens: int
    raw: str              # the judge's reply, for the audit trail


class JudgeError(RuntimeError):
    """The judge could not grade: the endpoint failed after retries, or its reply held no usable score.

    A scorer's error: the shadow runner and the online-eval task count it and leave the metric out.
    """


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and (
        exc.response.status_code == 429 or exc.response.status_code >= 500)


class LlmJudge:
    def __init__(self, *, base_url: str, model: str, rubric: str, scale: tuple[float, float] = (0.0, 1.0),
                 api_key: str | None = None, prompt: str = DEFAULT_PROMPT, timeout: float = 30.0,
                 attempts: int = 3, price_per_mtok: tuple[float, float] = (0.0, 0.0),
                 temperature: float = 0.0, transport: httpx.BaseTransport | None = None) -> None:
        low, high = scale
        if not high > low:
            raise InvalidInputError(f"the judge's scale must go from low to high, got {scale!r}")
        if attempts < 1:
            raise InvalidInputError("attempts must be at least 1")
        self.model = model
        self.rubric = rubric
        self.scale = (float(low), float(high))
        self._prompt = prompt
        self._attempts = attempts
        self._prices = price_per_mtok
        self._temperature = temperature
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout,
                                  transport=transport)

    def grade(self, input: Any, output: Any) -> Grade:
        """Ask the endpoint; JudgeError if it cannot answer with a score."""
        body = {
            "model": self.model,
            "temperature": self._temperature,
            "messages": [{"role": "user", "content": self._prompt.format(
                rubric=self.rubric, input=_text(input), output=_text(output))}],
        }
        try:
            reply = retrying(attempts=self._attempts, retry_on=_transient, maximum=2.0)(self._post, body)
        except (httpx.HTTPError, ValueError) as exc:
            raise JudgeError(f"the judge endpoint failed: {exc}") from exc
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise JudgeError(f"the judge's reply has no message: {str(reply)[:200]}") from exc
        usage = reply.get("usage") or {}
        tokens_in, tokens_out = int(usage.get("prompt_tokens", 0) or 0), int(usage.get("completion_tokens", 0) or 0)
        cost = (tokens_in * self._prices[0] + tokens_out * self._prices[1]) / 1e6
        return Grade(score=self._normalise(content), cost_usd=cost, input_tokens=tokens_in,
                     output_tokens=tokens_out, raw=str(content)[:2000])

    def __call__(self, input: Any, output: Any) -> float:
        return self.grade(input, output).score

    def scorer(self, name: str) -> Scorer:
        """This judge as a per-output scorer named `name` (the metric it records)."""
        return Scorer(name, self)

    def close(self) -> None:
        self._http.close()

    # --- internals ----------------------------------------------------------------

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self._http.post("/chat/completions", json=body)
        response.raise_for_status()
        return response.json()

    def _normalise(self, content: Any) -> float:
        value = _score_in(content)
        if value is None:
            raise JudgeError(f"the judge's reply holds no score: {str(content)[:200]!r}")
        low, high = self.scale
        if not low <= value <= high:
            raise JudgeError(f"the judge's score {value} is outside its scale {low}..{high}")
        return (value - low) / (high - low)


def _score_in(content: Any) -> float | None:
    """The score a reply gives: a JSON `score` field, else the first number in the text."""
    text = str(content).strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("score"), (int, float)):
        return float(parsed["score"])
    if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
        return float(parsed)
    match = _NUMBER.search(text)
    return float(match.group()) if match else None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


__all__ = ["DEFAULT_PROMPT", "Grade", "JudgeError", "LlmJudge"]
