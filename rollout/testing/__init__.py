"""Fakes that ship with the package: simulated users and traffic, for tests, the demo and benchmarks.

`Traffic` plays an application: it asks the client which variant each user
gets, runs the candidate too for users sampled into shadow, and records
outcomes whose error rate, latency and quality depend on the variant and the
user's stratum, as configured.

Users come back, as in every real app (see `Users`): a pool of users each
sending a geometric or Pareto number of requests, each with their own
latency, error and quality leanings. Outcomes of one user are then correlated,
which is the case the judge must get right; `users=None` gives the old
world of one request per new user.
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


@dataclass(frozen=True)
class Users:
    """Who sends the requests: a pool of users who come back.

    At any moment `active` users are mid-visit; each request comes from one of
    them at random, so a user's requests interleave with everyone else's. A
    user sends a number of requests with mean `mean_requests`: geometric, or
    with `tail="pareto"` (shape `pareto_shape`) a few power users send most of
    them. Each user has their own leanings, drawn once: latency times
    exp(N(0, effect_sd)), error odds likewise (renormalised so the average
    rate stays the configured one), quality shifted by N(0, effect_sd / 5).
    """

    active: int = 200
    mean_requests: float = 4.0
    tail: str = "geometric"
    pareto_shape: float = 1.5
    effect_sd: float = 0.2

    def __post_init__(self) -> None:
        if self.active < 1 or self.mean_requests < 1 or self.tail not in ("geometric", "pareto") \
                or self.pareto_shape <= 1 or self.effect_sd < 0:
            raise ValueError(f"Users needs active >= 1, mean_requests >= 1, tail 'geometric' or 'pareto', "
                             f"pareto_shape > 1 and effect_sd >= 0; got {self}")

    def requests(self, rng: random.Random) -> int:
        """How many requests one new user will send."""
        if self.mean_requests == 1:
            return 1
        if self.tail == "pareto":
            a = self.pareto_shape
            # A Pareto(a) variable from 1 has mean a / (a - 1); scale it to mean_requests.
            return max(1, min(100_000, round(rng.paretovariate(a) * self.mean_requests * (a - 1) / a)))
        p = 1.0 / self.mean_requests
        return 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p))


@dataclass
class _User:
    uid: str
    stratum: str
    attributes: dict[str, str]
    remaining: int
    latency: float   # multiplier of the variant's median latency
    error: float     # multiplier of the variant's error rate
    quality: float   # added to the variant's mean quality


@dataclass
class Traffic:
    client: RolloutClient
    flag: str
    baseline: VariantBehaviour = VariantBehaviour()
    candidate: VariantBehaviour = VariantBehaviour()
    seed: int = 0
    users: Users | None = Users()  # None: every request from a new user, with no leanings of their own
    _rng: random.Random = field(init=False)
    _next_user: int = field(init=False, default=0)
    _pool: list[_User] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def users_seen(self) -> int:
        return self._next_user

    def run(self, requests: int) -> int:
        """Serve this many requests; returns how many outcomes were recorded."""
        rng, recorded = self._rng, 0
        for _ in range(requests):
            user = self._user()
            a = self.client.assign(self.flag, user.uid, user.attributes)
            served = self.candidate if a.is_candidate else self.baseline
            # A shadowed request also ran the candidate (its answer thrown away): both outcomes
            # are reported as one pair, which is what the shadow stage's judge compares.
            pair = rng.getrandbits(62) + 1 if a.in_shadow else None
            self.client.record(a, self._outcome(served, user), pair_id=pair)
            recorded += 1
            if a.in_shadow:
                self.client.record(self.flag, user.uid, self._outcome(self.candidate, user),
                                   variant=_candidate_of(self.client, self.flag), attributes=user.attributes,
                                   pair_id=pair)
                recorded += 1
        return recorded

    def _user(self) -> _User:
        """The next request's user: a returning one from the pool, or a new one."""
        rng, users = self._rng, self.users
        if users is None:
            return self._new_user(None)
        pool = self._pool
        while len(pool) < users.active:
            pool.append(self._new_user(users))
        i = rng.randrange(len(pool))
        user = pool[i]
        user.remaining -= 1
        if user.remaining <= 0:  # their last visit: the next request may bring someone new
            pool[i] = pool[-1]
            pool.pop()
        return user

    def _new_user(self, users: Users | None) -> _User:
        rng = self._rng
        stratum = pick_stratum(rng)
        uid = f"user-{self.seed}-{self._next_user}"
        self._next_user += 1
        attrs = user_attributes(stratum, rng)
        if users is None or users.effect_sd == 0:
            return _User(uid, stratum, attrs, 1, 1.0, 1.0, 0.0)
        sd = users.effect_sd
        # exp(N(0, sd)) has mean exp(sd^2 / 2): divide it out so the average error rate is as configured.
        return _User(uid, stratum, attrs, users.requests(rng), math.exp(rng.gauss(0.0, sd)),
                     math.exp(rng.gauss(0.0, sd) - sd * sd / 2), rng.gauss(0.0, sd / 5))

    def _outcome(self, b: VariantBehaviour, user: _User) -> dict[str, float]:
        rng = self._rng
        return {
            "error": float(rng.random() < min(1.0, b.error(user.stratum) * user.error)),
            "latency_ms": rng.lognormvariate(_ln(b.latency_ms * user.latency), b.latency_sigma),
            "quality": min(1.0, max(0.0, rng.gauss(b.quality + user.quality, 0.1))),
        }


def _ln(x: float) -> float:
    return math.log(x)


def _candidate_of(client: RolloutClient, flag: str) -> str:
    compiled = client._snapshot.flags[flag]  # noqa: SLF001 - the fake knows the client it drives
    return compiled.state.candidate
