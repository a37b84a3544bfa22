"""Fake summarization models: deterministic, so every run of a test or the demo sees the same answers."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

REFUSAL = "I'm sorry, I can't help with that request."


def _unit(*parts: object) -> float:
    """A stable number in [0, 1) from the parts: the fake's only source of 'randomness'."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class ModelProfile:
    name: str
    skill: float = 0.92                      # chance of keeping each key fact of a ticket
    skill_by_category: Mapping[str, float] = field(default_factory=dict)
    refusal_rate: float = 0.01
    latency_ms: float = 300.0                # median, lognormal with sigma 0.4
    latency_by_stratum: Mapping[str, float] = field(default_factory=dict)
    cost_usd: float = 0.002                  # per call
    cost_by_stratum: Mapping[str, float] = field(default_factory=dict)
    sleep_scale: float = 0.0                 # really sleep latency * scale (0: report it only)
    # Whose dice it rolls (default: its own name). Two profiles with one seed answer alike in latency, cost
    # and refusals, and the one with less skill keeps a subset of the other's facts: worse only in quality.
    seed: str | None = None

    @property
    def dice(self) -> str:
        return self.seed or self.name


class FakeSummarizer:
    """summarize(ticket, stratum) -> (summary, cost); also reports the latency it simulates."""

    def __init__(self, profile: ModelProfile) -> None:
        self.profile = profile

    def latency_ms(self, ticket: Mapping[str, Any], stratum: str = "default") -> float:
        p = self.profile
        median = p.latency_by_stratum.get(stratum, p.latency_ms)
        u = min(max(_unit(p.dice, "latency", ticket.get("id"), stratum), 1e-9), 1 - 1e-9)
        z = math.sqrt(2) * _erfinv(2 * u - 1)
        return median * math.exp(0.4 * z)

    def __call__(self, ticket: Mapping[str, Any], stratum: str = "default") -> tuple[str, float]:
        p = self.profile
        if p.sleep_scale:
            time.sleep(self.latency_ms(ticket, stratum) / 1000 * p.sleep_scale)
        # Tokens in and out vary from ticket to ticket, and so does the bill.
        cost = p.cost_by_stratum.get(stratum, p.cost_usd) * (0.7 + 0.6 * _unit(p.dice, "cost", ticket.get("id")))
        if _unit(p.dice, "refuse", ticket.get("id")) < p.refusal_rate:
            return REFUSAL, cost
        skill = p.skill_by_category.get(ticket.get("category", ""), p.skill)
        kept = [f for f in ticket.get("facts", []) if _unit(p.dice, "fact", ticket.get("id"), f) < skill]
        subject = ticket.get("subject", "a support request")
        summary = f"{subject}. " + ("Key points: " + "; ".join(kept) + "." if kept else "No details captured.")
        return summary, cost


def _erfinv(y: float) -> float:
    """Inverse error function (Giles' approximation), enough for simulated latencies."""
    w = -math.log((1.0 - y) * (1.0 + y))
    if w < 5.0:
        w -= 2.5
        p = 2.81022636e-08
        for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
                  -0.00417768164, 0.246640727, 1.50140941):
            p = c + p * w
    else:
        w = math.sqrt(w) - 3.0
        p = -0.000200214257
        for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
                  0.00943887047, 1.00167406, 2.83297682):
            p = c + p * w
    return p * y


# The models the plans and tests name by import path.
BASELINE = FakeSummarizer(ModelProfile("small-v1"))
GOOD = FakeSummarizer(ModelProfile("large-v2", skill=0.94))
WEAK_ON_BILLING = FakeSummarizer(ModelProfile("large-v2-billing", skill=0.94, skill_by_category={"billing": 0.35}))
SLOW_AND_COSTLY = FakeSummarizer(ModelProfile("huge-v3", skill=0.93, latency_ms=650.0, cost_usd=0.0055))
# As fast, as cheap and as reliable as the baseline (the same dice), but drops key facts: only a judge sees it.
TERSE = FakeSummarizer(ModelProfile("terse-v2", seed="small-v1", skill=0.55))


def baseline(ticket: Mapping[str, Any]) -> tuple[str, float]:
    return BASELINE(ticket)


def candidate_good(ticket: Mapping[str, Any]) -> tuple[str, float]:
    return GOOD(ticket)


def candidate_weak_on_billing(ticket: Mapping[str, Any]) -> tuple[str, float]:
    return WEAK_ON_BILLING(ticket)


def candidate_terse(ticket: Mapping[str, Any]) -> tuple[str, float]:
    return TERSE(ticket)


def candidate_slow_and_costly(ticket: Mapping[str, Any]) -> tuple[str, float]:
    return SLOW_AND_COSTLY(ticket)


MODELS = {"small-v1": BASELINE, "large-v2": GOOD, "large-v2-billing": WEAK_ON_BILLING, "huge-v3": SLOW_AND_COSTLY,
          "terse-v2": TERSE}
