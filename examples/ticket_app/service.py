"""The support-ticket summarizer service: serves the assigned model, shadows the candidate, reports outcomes."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from examples.ticket_app.make_cases import cases as make_cases
from examples.ticket_app.models import REFUSAL, FakeSummarizer
from rollout import RolloutClient
from rollout.core.scorers import refusal, similarity
from rollout.testing import pick_stratum, user_attributes

# One tuple, passed on every call: shadow() checks it once and caches it by identity.
SCORERS = (refusal(), similarity())


class TicketService:
    """What an application does: ask the flag, run the model, report what happened."""

    def __init__(self, client: RolloutClient, flag: str, models: Mapping[str, FakeSummarizer]) -> None:
        self.client, self.flag, self.models = client, flag, dict(models)

    def handle(self, user_id: str, attributes: Mapping[str, Any], ticket: Mapping[str, Any]) -> str:
        a = self.client.assign(self.flag, user_id, attributes)
        stratum = a.stratum or "default"
        baseline = self.models[self.client_flag().baseline]
        if a.in_shadow:
            candidate = self.models[self.client_flag().candidate]
            # The user gets the baseline's summary; the candidate's is judged on the side, pair by pair.
            summary, _cost = self.client.shadow(
                self.flag, user_id, lambda t: baseline(t, stratum), lambda t: candidate(t, stratum), ticket,
                attributes=attributes, scorers=SCORERS, timeout=5.0)
            return summary
        model = self.models.get(a.variant or "", baseline)
        summary, cost = model(ticket, stratum)
        self.client.record(self.flag, user_id, {
            "latency_ms": model.latency_ms(ticket, stratum), "cost_usd": cost, "error": 0.0,
            "refusal": float(summary == REFUSAL),
        }, attributes=attributes)
        return summary

    def client_flag(self) -> Any:
        return self.client._snapshot.flags[self.flag].state  # noqa: SLF001 - the example peeks at variant names


class TicketTraffic:
    """Simulated users from three strata sending tickets to the service."""

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
