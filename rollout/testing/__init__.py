"""Fakes that ship with the package: simulated users and traffic, for tests, the demo and benchmarks.

`Traffic` plays an application: it asks the client which variant each user
gets, runs the candidate too for users sampled into shadow, and records
outcomes whose error rate, latency and quality depend on the variant and the
user's stratum, as configured.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from rollout.sdk import RolloutClient
from rollout.testing.fakes import (
    FakeClock,
    FakeEvalRunner,
    InMemoryStore,
    ListOutcomeSink,
    ScriptedEvidence,
    harmful,
    passing,
    verdict_of,
)

__all__ = ["FakeClock", "FakeEvalRunner", "InMemoryStore", "ListOutcomeSink", "ScriptedEvidence", "Traffic",
           "VariantBehaviour", "harmful", "passing", "pick_stratum", "user_attributes", "verdict_of"]

USER_MIX = (("internal", 0.10), ("free", 0.55), ("default", 0.35))


def pick_stratum(rng: random.Random) -> str:
    """A stratum drawn with the shares of USER_MIX."""
    r, cumulative = rng.random(), 0.0
    for name, share in USER_MIX:
        cumulative += share
        if r < cumulative:
            return name
    return "default"


def user_attributes(stratum: str, rng: random.Random) -> dict[str, str]:
    if stratum == "internal":
        return {"email_domain": "example.com", "tier": rng.choice(["free", "pro"])}
    if stratum == "free":
        return {"email_domain": "mail.test", "tier": "free"}
    return {"email_domain": "corp.test", "tier": rng.choice(["pro", "enterprise"])}


@dataclass(frozen=True)
class VariantBehaviour:
    error_rate: float = 0.02
    latency_ms: float = 400.0      # median of a lognormal
    latency_sigma: float = 0.5
    quality: float = 0.80          # mean of a score in [0, 1]
    error_rate_by_stratum: Mapping[str, float] = field(default_factory=dict)

    def error(self, stratum: str) -> float:
        return self.error_rate_by_stratum.get(stratum, self.error_rate)


@dataclass
class Traffic:
    client: RolloutClient
    flag: str
    baseline: VariantBehaviour = VariantBehaviour()
    candidate: VariantBehaviour = VariantBehaviour()
    seed: int = 0
    _rng: random.Random = field(init=False)
    _next_user: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def run(self, requests: int) -> int:
        """Serve this many requests from new users; returns how many outcomes were recorded."""
        rng, recorded = self._rng, 0
        for _ in range(requests):
            stratum = pick_stratum(rng)
            uid = f"user-{self.seed}-{self._next_user}"
            self._next_user += 1
            attrs = user_attributes(stratum, rng)
            a = self.client.assign(self.flag, uid, attrs)
            served = self.candidate if a.is_candidate else self.baseline
            # A shadowed request also ran the candidate (its answer thrown away): both outcomes
            # are reported as one pair, which is what the shadow stage's judge compares.
            pair = rng.getrandbits(62) + 1 if a.in_shadow else None
            self.client.record(self.flag, uid, self._outcome(served, stratum), attributes=attrs, pair_id=pair)
            recorded += 1
            if a.in_shadow:
                self.client.record(self.flag, uid, self._outcome(self.candidate, stratum),
                                   variant=_candidate_of(self.client, self.flag), attributes=attrs, pair_id=pair)
                recorded += 1
        return recorded

    def _outcome(self, b: VariantBehaviour, stratum: str) -> dict[str, float]:
        rng = self._rng
        return {
            "error": float(rng.random() < b.error(stratum)),
            "latency_ms": rng.lognormvariate(_ln(b.latency_ms), b.latency_sigma),
            "quality": min(1.0, max(0.0, rng.gauss(b.quality, 0.1))),
        }


def _ln(x: float) -> float:
    return math.log(x)


def _candidate_of(client: RolloutClient, flag: str) -> str:
    compiled = client._snapshot.flags[flag]  # noqa: SLF001 - the fake knows the client it drives
    return compiled.state.candidate
