"""Simulated traffic: users come back, with the request counts and leanings they were given."""

from __future__ import annotations

import random
import statistics

import pytest

from rollout.testing import Traffic, Users, VariantBehaviour

WORLDS = [
    # (users, expected mean requests per user, share of requests from the top 10 % of users at least)
    (Users(mean_requests=4.0), 4.0, 0.2),
    (Users(mean_requests=6.0, tail="pareto"), 6.0, 0.3),
]


class _Recorder:
    """Stands in for the client: the traffic needs assign() and record(); the client has its own tests."""

    def __init__(self) -> None:
        self.units: list[str] = []
        self.outcomes: list[dict[str, float]] = []

    def assign(self, flag, unit, attributes):  # type: ignore[no-untyped-def]
        from rollout.core import Assignment, Reason, bind

        self.units.append(unit)
        return bind(Assignment(flag, "a", "default", False, Reason.SPLIT, 1), unit)

    def record(self, exposure, metrics, **_):  # type: ignore[no-untyped-def]
        self.outcomes.append(metrics)


@pytest.mark.parametrize(("users", "mean", "top_share"), WORLDS, ids=["geometric", "pareto"])
def test_users_come_back_with_the_configured_request_counts(users: Users, mean: float, top_share: float) -> None:
    # Given traffic from a pool of returning users
    app = _Recorder()
    traffic = Traffic(app, "f", users=users, seed=2)  # type: ignore[arg-type]
    # When it serves many requests
    assert traffic.run(40_000) == 40_000
    # Then users send several requests each on average, unevenly, interleaved with others
    per_user: dict[str, int] = {}
    for u in app.units:
        per_user[u] = per_user.get(u, 0) + 1
    counts = sorted(per_user.values(), reverse=True)
    assert mean * 0.8 < statistics.mean(counts) < mean * 1.25
    assert sum(counts[: len(counts) // 10]) / len(app.units) > top_share
    assert len(set(app.units[:50])) < 50  # someone came back within the first 50 requests


def test_one_request_per_new_user_is_still_there() -> None:
    app = _Recorder()
    Traffic(app, "f", users=None).run(1_000)  # type: ignore[arg-type]
    assert len(set(app.units)) == 1_000


def test_per_user_leanings_keep_the_average_error_rate() -> None:
    # Given a 10 % error rate and strong per-user leanings
    app = _Recorder()
    behaviour = VariantBehaviour(error_rate=0.10)
    Traffic(app, "f", baseline=behaviour, users=Users(effect_sd=0.5), seed=5).run(60_000)  # type: ignore[arg-type]
    # Then the average stays 10 %
    assert 0.09 < statistics.mean(o["error"] for o in app.outcomes) < 0.11


def test_bad_user_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Users(tail="zipf")
    assert Users(mean_requests=1).requests(random.Random(0)) == 1
