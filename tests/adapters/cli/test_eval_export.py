"""`rollout eval export` writes production answers as eval cases, and the file runs in an eval stage unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from examples.ticket_app.models import baseline
from rollout.adapters.cli.main import main
from rollout.app.evals import load_cases
from rollout.app.plans import load_plan
from rollout.app.reconcile import check, claim, run_eval_stage
from rollout.core.controller import Status
from rollout.store.db import transaction
from rollout.store.flags import create_flag
from rollout.store.outcomes import flag_ids
from rollout.store.samples import GradeRecord, SampleRecord, insert_samples, record_grades

CASES = Path(__file__).resolve().parents[3] / "examples" / "ticket_app" / "cases.jsonl"


def _kept_from_production(engine: Engine, n: int = 60) -> int:
    """What an app with an online judge keeps: the baseline's real answers to real tickets, graded."""
    with transaction(engine) as s:
        create_flag(s, "ticket-summarizer", variants=["small-v1", "large-v2"], actor="test")
    with transaction(engine) as s:
        flag_id = flag_ids(s)["ticket-summarizer"]
    tickets = [json.loads(line)["input"] for line in CASES.read_text().splitlines()[::3][:n]]
    now = datetime(2026, 12, 1, tzinfo=UTC)
    insert_samples(engine, [{"flag_id": flag_id, "rollout_id": 1, "stage": 1, "variant": "small-v1",
                             "stratum": "default", "unit_hash": i, "source": "online",
                             "category": t["category"], "input": json.dumps(t), "output": baseline(t)[0],
                             "created_at": now} for i, t in enumerate(tickets)])
    with transaction(engine) as s:
        from sqlalchemy import select

        from rollout.store.models import Sample
        rows = [SampleRecord(r.id, r.rollout_id, r.stage, r.variant, r.stratum, r.unit_hash, r.category, r.input,
                             r.output) for r in s.scalars(select(Sample))]
        # Every fifth answer was graded low by the judge: those are the hard cases
        record_grades(s, flag_id=flag_id, judge="faithfulness", samples=rows,
                      grades=[GradeRecord(r.id, 0.2 if i % 5 == 0 else 0.9, 0.0) for i, r in enumerate(rows)], now=now)
    return flag_id


def test_exported_cases_run_in_an_eval_stage(engine: Engine, db_url: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # Given 60 graded answers of the baseline, kept for an online judge
    _kept_from_production(engine)
    out = tmp_path / "cases.jsonl"
    # When 30 are exported, stratified by category, hard ones over-represented
    assert main(["--db", db_url, "eval", "export", "ticket-summarizer", "--from-online", "--sample", "30",
                 "--stratify-by", "category", "--out", str(out)]) == 0
    assert "wrote 30 cases" in capsys.readouterr().out
    # Then the file loads as eval cases, every category is there, and the hard share is above the base rate
    cases = load_cases(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(cases) == 30 and len({c.category for c in cases}) >= 5
    assert sum(1 for r in rows if r["hard"]) >= 30 * 0.2
    # And an eval stage runs them unchanged: the baseline matches its own answers, the candidate is compared
    document = {
        "flag": "ticket-summarizer", "baseline": "small-v1", "candidate": "large-v2",
        "stages": [{"name": "replay", "kind": "eval", "eval": {
            "cases": str(out), "baseline": "examples.ticket_app.models:baseline",
            "candidate": "examples.ticket_app.models:candidate_good",
            "scorer": "rollout.app.eval_export:matches_reference", "margin": 0.5, "min_cases": 1}},
            {"name": "full", "kind": "full"}],
        "metrics": [{"name": "error", "kind": "binary", "better": "lower", "margin": 0.03}],
        "check_interval": "0.1s",
    }
    run = claim(engine, load_plan(document), document, owner="test", actor="tester")
    state = check(run).step.state
    assert state.status is Status.EVALUATING
    failure, written = run_eval_stage(run, state.stage_index)
    assert failure is None and written == 60
    assert check(run).step.state.status is not Status.EVALUATING


def test_export_says_what_is_missing(db_url: str, engine: Engine, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with transaction(engine) as s:
        create_flag(s, "ticket-summarizer", variants=["small-v1", "large-v2"], actor="test")
    assert main(["--db", db_url, "eval", "export", "ticket-summarizer", "--from-shadow", "--out",
                 str(tmp_path / "x.jsonl")]) == 2
    assert "no kept shadow answers" in capsys.readouterr().err
    assert main(["--db", db_url, "eval", "export", "ticket-summarizer", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "--from-shadow or --from-online" in capsys.readouterr().err
