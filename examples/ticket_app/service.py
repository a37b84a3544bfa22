"""The support-ticket summarizer service: one guarded call site for every stage, tokens, late feedback.

    service = TicketService(client, "ticket-summarizer", MODELS)
    summary = service.handle(user.id, {"tier": user.tier}, ticket)   # any stage: shadow, ramp, full
    ...
    service.send_due_feedback()   # minutes later: the thumbs-down of users whose summary missed facts

`client.call()` runs what the assignment says (in shadow: the baseline for the
user and the candidate on the side), falls back to the baseline when the
candidate fails or is too slow, records what the user waited and whether the
candidate failed, and keeps the sampled tickets and answers for the online
judge (`RolloutClient(capture_samples=True)`). The service adds what only it
knows (the bill and refusals), and keeps each answer's exposure token so the
feedback that comes later is credited to what was served, even after a ramp.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from examples.ticket_app.make_cases import cases as make_cases
from examples.ticket_app.models import REFUSAL, FakeSummarizer
from examples.ticket_app.scoring import key_fact_coverage
from rollout import RolloutClient
from rollout.core.flag import Phase
from rollout.core.scorers import refusal, similarity
from rollout.testing import pick_stratum, user_attributes

# One tuple, passed on every call: shadow() checks it once and caches it by identity.
SCORERS = (refusal(), similarity())
DISAPPOINTING = 2 / 3   # a user whose summary kept less than this share of the key facts sends a thumbs-down


class TicketService:
    """What an application does: one guarded call per request, the outcomes only it knows, late feedback."""

    def __init__(self, client: RolloutClient, flag: str, models: Mapping[str, FakeSummarizer], *,
                 timeout: float | None = None, feedback_delay: float = 0.0) -> None:
        self.client, self.flag, self.models = client, flag, dict(models)
        # The candidate's deadline; past it the user gets the baseline's answer. None by default here because
        # the fakes answer in about a millisecond, and the worker hand-off a deadline needs (a fraction of a
        # millisecond on a busy machine) would then be a third of the candidate's measured latency. A real
        # service, whose model takes seconds, sets it: `TicketService(..., timeout=5.0)`.
        self.timeout = timeout
        self.feedback_delay = feedback_delay    # seconds between an answer and its user's thumbs-down
        self.tokens: dict[str, str] = {}        # user -> exposure token of the answer they were served
        self.awaiting: deque[tuple[float, str]] = deque()  # (when it is sent, token) of feedback to come
        self.feedback_sent = 0

    def handle(self, user_id: str, attributes: Mapping[str, Any], ticket: Mapping[str, Any]) -> str:
        compiled = self._compiled()
        state = compiled.state
        stratum = compiled.stratum_of(attributes)
        baseline = self.models[state.baseline]
        candidate = self.models.get(state.candidate, baseline)
        result = self.client.call(
            self.flag, user_id, baseline=lambda t: baseline(t, stratum), candidate=lambda t: candidate(t, stratum),
            input=ticket, timeout=self.timeout, attributes=attributes, scorers=SCORERS,
            category=ticket.get("category"))
        summary, cost = result.value
        if state.phase is not Phase.SHADOW:
            # call() recorded latency and error; the bill and refusals are the app's to report.
            self.client.record(result.exposure, {"cost_usd": cost, "refusal": float(summary == REFUSAL)})
        token = self.client.exposure_token(result.exposure)
        if token is not None:
            self.tokens[user_id] = token
            if key_fact_coverage(ticket, summary) < DISAPPOINTING:
                self.awaiting.append((time.monotonic() + self.feedback_delay, token))
        return summary

    def send_due_feedback(self, now: float | None = None) -> int:
        """Send the thumbs-down whose time has come; by token, so it is credited to the arm and stage served."""
        now = time.monotonic() if now is None else now
        sent = 0
        while self.awaiting and self.awaiting[0][0] <= now:
            _, token = self.awaiting.popleft()
            self.client.feedback(token, thumbs_up=False)
            sent += 1
        self.feedback_sent += sent
        return sent

    def _compiled(self) -> Any:
        return self.client._snapshot.flags[self.flag]  # noqa: SLF001 - the example peeks at variant names


class TicketTraffic:
    """Simulated users from three strata sending tickets to the service, and their late feedback."""

    def __init__(self, service: TicketService, seed: int = 0) -> None:
        self.service = service
        self.rng = random.Random(seed)
        self.tickets = [c["input"] for c in make_cases()]
        self.next_user = 0

    def run(self, requests: int) -> None:
        rng = self.rng
        for _ in range(requests):
            stratum = pick_stratum(rng)
            self.next_user += 1
            self.service.handle(f"user-{self.next_user}", user_attributes(stratum, rng), rng.choice(self.tickets))
        self.service.send_due_feedback()
