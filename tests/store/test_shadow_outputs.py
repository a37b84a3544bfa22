"""Shadow outputs are stored once per pair and arm, whatever the SDK's flusher retries."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from rollout.errors import StoreUnavailableError
from rollout.store.db import make_engine
from rollout.store.models import ShadowOutput
from rollout.store.shadow_outputs import insert_shadow_outputs
from tests.harness.tcp_proxy import TcpProxy

BATCH = [(7, 1, "current", "the baseline's summary", 100.0), (7, 1, "new-model", "the candidate's summary", 100.0),
         (8, 1, "current", "another summary", 101.0)]


def stored(engine: Engine) -> list[tuple[int, str, str]]:
    with Session(engine) as s:
        return [(o.pair_id, o.variant, o.output) for o in s.scalars(select(ShadowOutput).order_by(ShadowOutput.id))]


@pytest.mark.parametrize("replayed", [BATCH, BATCH[1:], BATCH[:1] + [(9, 1, "current", "new", 102.0)]],
                         ids=["whole batch", "part of it", "with a new row"])
def test_a_replayed_output_is_stored_once(engine: Engine, replayed: list[tuple[int, int, str, str, float]]) -> None:
    # Given a batch of outputs stored
    assert insert_shadow_outputs(engine, BATCH) == 3
    # When (some of) it is sent again, as a flusher does when it did not hear the commit
    new = insert_shadow_outputs(engine, replayed)
    # Then only rows for a (pair, arm) not stored before are added
    rows = stored(engine)
    assert new == len(rows) - 3
    assert len({(p, v) for p, v, _ in rows}) == len(rows)


@pytest.mark.postgres
def test_a_batch_whose_commit_reply_was_lost_is_stored_once_when_retried(_postgres_db: str,
                                                                         pg_proxy: tuple[TcpProxy, str]) -> None:
    # Given a writer whose next commit is stored but whose reply is lost on the way back
    proxy, url = pg_proxy
    through = make_engine(url)
    proxy.cut_budget = 1
    proxy.set_mode("cut_after_commit")
    # When it sends the batch, hears a fault, and sends it again (as the SDK's output buffer does)
    with pytest.raises(StoreUnavailableError):
        insert_shadow_outputs(through, BATCH)
    assert proxy.commits_cut == 1
    assert insert_shadow_outputs(through, BATCH) == 0
    through.dispose()
    # Then each arm's output of each pair is stored once
    direct = make_engine(_postgres_db)
    assert stored(direct) == [(p, v, t) for p, _, v, t, _ in BATCH]
    direct.dispose()
