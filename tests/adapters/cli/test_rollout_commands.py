"""`rollout start` (foreground), `approve`, `status`, `history`, `watch`: a release manager's commands end to end."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine

from rollout import RolloutClient
from rollout.adapters.cli.main import main
from rollout.testing import Traffic, VariantBehaviour

PLAN = {
    "flag": "summarizer", "baseline": "current", "candidate": "new-model",
    "strata": [{"name": "free", "match": {"attribute": "tier", "equals": "free"}}],
    "stages": [{"name": "canary", "kind": "ramp", "percent": 30, "min_samples": 50, "min_duration": "1s"},
               {"name": "full", "kind": "full", "approval": "required"}],
    "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.05}],
    "check_interval": "0.5s", "completion": {"tolerance": "20%"},
}


def test_start_in_the_foreground_approve_and_read_the_history(
        engine: Engine, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(PLAN))
    codes: list[int] = []
    starter = threading.Thread(target=lambda: codes.append(
        main(["--db", db_url, "start", str(plan_file), "--foreground", "--by", "alice"])))
    starter.start()
    approved = False
    with RolloutClient(db_url, listen=False, refresh_interval=0.1) as client:
        traffic = Traffic(client, "summarizer", candidate=VariantBehaviour(), seed=5)
        deadline = time.monotonic() + 60
        while starter.is_alive() and time.monotonic() < deadline:
            if "summarizer" in client.flag_versions():
                traffic.run(200)
                client.flush(timeout=10)
            if not approved:
                capsys.readouterr()
                main(["--db", db_url, "status", "summarizer", "--json"])
                out = capsys.readouterr().out
                info = json.loads(out) if out.startswith("{") else None
                if info and info["rollout"] and info["rollout"]["pending_approval"] == "full":
                    assert main(["--db", db_url, "approve", "summarizer", "--by", "bob", "--comment", "ok"]) == 0
                    approved = True
            time.sleep(0.1)
    starter.join(timeout=10)
    assert codes == [0]
    capsys.readouterr()
    assert main(["--db", db_url, "status", "summarizer"]) == 0
    status = capsys.readouterr().out
    assert "promoted" in status and "summarizer" in status
    assert main(["--db", db_url, "history", "summarizer"]) == 0
    history = capsys.readouterr().out
    # (the approvals table puts the comment in its own column, on the answer's line)
    assert re.search(r"approved by bob +ok\b", history) and "rollout.approve" in history and "flag.promote" in history
    assert main(["--db", db_url, "watch", "summarizer", "--once"]) == 0
    assert "stage 2 of 2" in capsys.readouterr().out


def test_approve_with_nothing_waiting_is_refused(engine: Engine, db_url: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", db_url, "flag", "create", "summarizer", "--variants", "a,b", "--by", "x"]) == 0
    capsys.readouterr()
    assert main(["--db", db_url, "approve", "summarizer", "--by", "bob"]) == 2
    assert "no active rollout" in capsys.readouterr().err


def test_a_bad_plan_lists_every_problem_and_starts_nothing(engine: Engine, db_url: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = dict(PLAN, candidate="current", stages=[{"name": "c", "kind": "ramp", "percent": 150}])
    plan_file = tmp_path / "bad.yaml"
    plan_file.write_text(yaml.safe_dump(bad))
    assert main(["--db", db_url, "start", str(plan_file), "--foreground"]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "candidate: must differ" in err and "percent" in err
    assert main(["--db", db_url, "flag", "list"]) == 0
    assert "no flags" in capsys.readouterr().out
