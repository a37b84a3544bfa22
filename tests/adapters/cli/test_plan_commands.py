"""`rollout plan register/list/history`, `rollout start NAME` and `--at`: plans by name and starting later."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine

from rollout.adapters.cli.main import main
from rollout.app.status import rollout_status
from rollout.store.db import transaction
from tests.adapters.cli.test_rollout_commands import PLAN


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(PLAN))
    return path


def test_register_twice_then_list_and_read_the_history(db_url: str, plan_file: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # Given a plan registered, then changed and registered again
    assert main(["--db", db_url, "plan", "register", str(plan_file), "--by", "alice"]) == 0
    plan_file.write_text(yaml.safe_dump({**PLAN, "check_interval": "1m"}))
    assert main(["--db", db_url, "plan", "register", str(plan_file), "--by", "bob", "--comment", "slower"]) == 0
    out = capsys.readouterr().out
    assert "registered plan summarizer version 1" in out and "version 2" in out
    # When the plans are listed, and one's history read
    assert main(["--db", db_url, "plan", "list"]) == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert main(["--db", db_url, "plan", "history", "summarizer", "--json"]) == 0
    history = yaml.safe_load(capsys.readouterr().out)
    # Then the list has the latest version only, and the history both, with who and why
    assert len(listed) == 1 and "v2" in listed[0] and "canary > full" in listed[0] and "(slower)" in listed[0]
    assert [(v["version"], v["registered_by"], v["plan"]["check_interval"]) for v in history] == [
        (1, "alice", "0.5s"), (2, "bob", "1m")]


def test_a_bad_plan_is_not_registered(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**PLAN, "metrics": [{"name": "error", "kind": "binery", "better": "lower",
                                                        "margin": 0.05}]}))
    assert main(["--db", db_url, "plan", "register", str(bad)]) == 2
    assert "metrics.error.kind" in capsys.readouterr().err
    assert main(["--db", db_url, "plan", "list"]) == 0
    assert "no registered plans" in capsys.readouterr().out


@pytest.mark.parametrize(("at", "problem"), [
    ("tomorrow", "is not a time like 2026-12-02T09:00Z"),
    ("2030-12-02T09:00", "needs a time zone"),
    ("2020-12-02T09:00Z", "is in the past"),
    ("2030-12-02T09:00Z", "schedules a Prefect flow run: set PREFECT_API_URL"),
])
def test_start_at_is_refused_in_words_when_it_cannot_schedule(
        db_url: str, plan_file: Path, at: str, problem: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["--db", db_url, "start", str(plan_file), "--at", at]) == 2
    assert problem in capsys.readouterr().err


def test_start_by_an_unknown_name_says_what_is_registered(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", db_url, "start", "no-such-plan", "--foreground"]) == 2
    assert "no registered plan 'no-such-plan'" in capsys.readouterr().err


def test_status_shows_the_next_ramp_window(engine: Engine, db_url: str, plan_file: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import UTC, datetime

    from rollout.app.plans import load_plan
    from rollout.app.reconcile import claim

    # Given a rollout whose plan allows advancing only on Sundays 03:00-03:01 Pacific/Kiritimati
    document = {**PLAN, "windows": [{"days": "sun", "from": "03:00", "to": "03:01", "tz": "Pacific/Kiritimati"}]}
    claim(engine, load_plan(document), document, owner="o", actor="alice", flow_run_id=None)
    # When its status is read
    with transaction(engine) as s:
        info = rollout_status(s, "summarizer", now=datetime(2026, 12, 1, 12, tzinfo=UTC))
    # Then it says when stages may next advance, and so does `rollout status`
    assert info.to_json()["rollout"]["window"].startswith("ramp window closed: stages advance from Sat 2026-12-05 13:00 UTC")
    assert main(["--db", db_url, "status", "summarizer"]) == 0
    assert "window    ramp window closed" in capsys.readouterr().out
