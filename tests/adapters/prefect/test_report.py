"""The bounds chart of the summary card and the approval form's lines, without a Prefect server."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from rollout.adapters.prefect.flow import _approval_text, summary_markdown
from rollout.adapters.prefect.report import CARD_MAX_BYTES, bounds_markdown, bounds_series
from rollout.core.records import DecisionRecord

AT = datetime(2026, 12, 2, tzinfo=UTC)


def metric(name: str, estimate: float | None, width: float, margin: float = 0.05,
           verdict: str = "inconclusive") -> dict[str, object]:
    return {"metric": name, "stratum": None, "verdict": verdict, "estimate": estimate,
            "lower": None if estimate is None else estimate - width, "upper": None if estimate is None else estimate + width,
            "margin": margin, "n_baseline": 100, "n_candidate": 90}


def decisions(checks: int, names: tuple[str, ...] = ("error", "latency")) -> list[DecisionRecord]:
    """`checks` decisions whose bounds narrow as evidence comes in; the stage changes every 50 checks."""
    return [DecisionRecord(i, i // 50, "continue", "enter_stage" if i % 50 == 0 else "continue", "more evidence",
                           {"metrics": [metric(n, 0.01, 1.0 / i) for n in names]}, AT) for i in range(1, checks + 1)]


def png_of(markdown: str) -> bytes:
    found = re.search(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert found, markdown[:200]
    return base64.b64decode(found.group(1))


def test_the_series_follow_the_checks_and_a_missing_number_is_a_gap() -> None:
    # Given two checks, the first without an estimate yet
    rows = [DecisionRecord(1, 0, "continue", "continue", "", {"metrics": [metric("error", None, 0)]}, AT),
            DecisionRecord(2, 0, "continue", "continue", "", {"metrics": [metric("error", 0.02, 0.01)]}, AT)]
    # When they become series
    series = bounds_series(rows)["error"]
    # Then each check is a point, and the missing one is NaN (a gap in the line), not a zero
    assert series["check"] == [1.0, 2.0] and series["estimate"][1] == 0.02 and series["margin"] == [0.05, 0.05]
    assert series["estimate"][0] != series["estimate"][0]


@pytest.mark.parametrize("checks", [3, 400, 3000])
def test_the_chart_is_a_png_the_card_embeds_and_stays_under_its_size_limit(checks: int) -> None:
    import matplotlib.image

    # Given a rollout after `checks` checks of two metrics
    # When the summary card embeds the chart
    text = bounds_markdown(decisions(checks), "summarizer: bounds")
    # Then it is a real PNG with one panel per metric, and the card stays small however long the rollout ran
    image = matplotlib.image.imread(io.BytesIO(png_of(text)), format="png")
    height, width = image.shape[:2]
    assert width >= 400 and height >= 250
    assert len(text) <= CARD_MAX_BYTES + 100


def test_no_evidence_draws_no_chart() -> None:
    assert bounds_markdown([], "x") == ""
    assert bounds_markdown([DecisionRecord(1, 0, "continue", "enter_stage", "", {"metrics": []}, AT)], "x") == ""


def test_the_summary_card_ends_with_the_chart() -> None:
    # Given a status view with no rollout yet, and a chart
    view = SimpleNamespace(flag={"key": "summarizer", "phase": "off", "version": 1, "allocations": {"default": 0}},
                           rollout=None)
    chart = bounds_markdown(decisions(5), "summarizer: bounds")
    # When the card is written
    text = summary_markdown(view, chart)  # type: ignore[arg-type]
    # Then the chart comes last, under a line that says how to read it
    assert text.rstrip().endswith(chart) and "margin" in text.split(chart)[0].splitlines()[-2]


def test_the_approval_form_shows_one_short_line_per_metric() -> None:
    # Given a check at an approval gate with three metrics
    details = {"metrics": [metric("error", 0.004, 0.01, verdict="pass"),
                           metric("latency_ms", 12.5, 30.0, margin=50.0, verdict="pass"),
                           metric("helpfulness_score", -0.01, 0.02, margin=0.1, verdict="inconclusive")]}
    run = SimpleNamespace(plan=SimpleNamespace(flag="summarizer"), notice="")
    result = SimpleNamespace(step=SimpleNamespace(reason="stage canary passed; full needs approval"), details=details)
    # When the pause dialog's text is written
    text = _approval_text(run, result, "full")  # type: ignore[arg-type]
    # Then each metric has one line with its verdict, estimate, bounds and margin, and there is no wide table
    lines = [line for line in text.splitlines() if line.startswith("- **")]
    assert len(lines) == 3 and "|" not in text
    assert lines[1] == "- **latency_ms**: pass; estimate +12.5, bounds [-17.5, +42.5], margin +50"
    assert all(len(line) <= 100 for line in lines)
