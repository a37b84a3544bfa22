"""Feedback comments from the SDK: kept only when the client keeps outputs, redacted and capped like them."""

from __future__ import annotations

import re

from sqlalchemy import Engine

from rollout import RolloutClient
from rollout.sdk.outcomes import _unit_hash
from rollout.store.comments import comments
from rollout.store.db import transaction
from rollout.store.secrets import UnitKeys
from tests.sdk.test_exposures import _baseline_unit, flag_in_rollout, ramp


def _mask_digits(text: str) -> str:
    return re.sub(r"\d", "#", text)


def _comments(engine: Engine, flag_id: int) -> list[tuple]:
    with transaction(engine) as s:
        return [(c.rollout_id, c.stage, c.variant, c.unit_hash, c.comment) for c in comments(s, flag_id=flag_id)]


def test_a_comment_is_redacted_capped_and_credited_to_the_arm_that_served_it(engine: Engine, db_url: str) -> None:
    # Given a client that keeps outputs through a redact hook, capped at 24 characters, and a user served the
    # baseline in stage 1 before a ramp to everyone in stage 2
    flag_id, rollout_id = flag_in_rollout(engine, bp=1_000, stage=1)
    with RolloutClient(db_url, listen=False, refresh_interval=3600, redact=_mask_digits,
                       max_output_chars=24) as client:
        unit = _baseline_unit(client)
        token = client.exposure_token(client.assign("summarizer", unit))
        ramp(engine, bp=10_000, stage=2)
        assert client.refresh()
        # When their feedback comes with a comment holding a phone number
        client.feedback(token, thumbs_up=False, comment="call me on 0123 456 789, the summary is wrong")
        # And a comment alone, without a score
        client.feedback(token, comment="still wrong")
        assert client.flush(timeout=30)
    # Then both are kept redacted and capped, credited to the baseline in stage 1
    h = _unit_hash(UnitKeys(engine).get("default"), unit)
    assert _comments(engine, flag_id) == [(rollout_id, 1, "current", h, "call me on #### ### ###,"),
                                          (rollout_id, 1, "current", h, "still wrong")]


def test_a_client_that_keeps_no_outputs_keeps_no_comment(engine: Engine, db_url: str) -> None:
    # Given a client that did not opt in to keeping outputs
    flag_id, _ = flag_in_rollout(engine, bp=1_000, stage=1)
    with RolloutClient(db_url, listen=False, refresh_interval=3600) as client:
        token = client.exposure_token(client.assign("summarizer", "u1"))
        # When feedback comes with a comment
        client.feedback(token, thumbs_up=True, comment="my email is a@b.c")
        assert client.flush(timeout=30)
    # Then the thumbs are stored (see test_exposures) but the comment is not
    assert _comments(engine, flag_id) == []


def test_a_comment_the_redact_hook_fails_on_is_not_kept(engine: Engine, db_url: str) -> None:
    def broken(_text: str) -> str:
        raise ValueError("cannot parse")

    flag_id, _ = flag_in_rollout(engine, bp=1_000, stage=1)
    with RolloutClient(db_url, listen=False, refresh_interval=3600, redact=broken) as client:
        token = client.exposure_token(client.assign("summarizer", "u1"))
        client.feedback(token, comment="secret 42")
    assert _comments(engine, flag_id) == []
