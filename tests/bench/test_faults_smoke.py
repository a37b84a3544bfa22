"""bench/faults.py in --quick mode: its figures are measured, and they add up (nothing lost, nothing twice)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import faults  # noqa: E402
from bench.common import postgres_available  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def quick_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The --quick sizes, put back afterwards (faults.quick() sets module globals)."""
    for name in ("OUTCOMES", "CUTS", "UNITS", "RESETS", "PARTITION_S", "CLOSE_OUTCOMES", "HTTP_BATCHES",
                 "CONTROLLER_RUNS"):
        monkeypatch.setattr(faults, name, getattr(faults, name))
    faults.quick()


def test_the_quick_fault_run_reports_every_fault_and_its_counts_add_up(quick_sizes: None) -> None:
    if not postgres_available():
        pytest.skip("the fault benchmark needs PostgreSQL")
    # Given the quick sizes; When the fault benchmark runs through the real proxy
    md, data = faults.run()
    f = {k: v for k, v in data.items() if k != "faults_raw"}
    # Then every fault has its row
    for row in ("commit replies lost", "exposures", "connection resets", "partition (black-hole)",
                "database down", "4 threads", "outage (refused)", "POST /v1/outcomes", "Controller"):
        assert row in md, row
    # And what was acknowledged is stored, once, on every write path
    for name in ("lost_commits", "resets", "partition"):
        assert f[f"faults_{name}_acknowledged"] == f[f"faults_{name}_stored"] > 0, name
        assert f[f"faults_{name}_duplicates"] == 0, name
    assert f["faults_exposures_over"] == f["faults_exposures_under"] == 0
    assert f["faults_close_down_accepted"] == f["faults_close_down_accounted"] > 0
    assert f["faults_close_threads_accepted"] == f["faults_close_threads_stored"] > 0
    assert f["faults_http_acknowledged"] == f["faults_http_stored"] > 0 and f["faults_http_duplicates"] == 0
    # And the faults really happened: replies were cut, and the service answered every evaluation meanwhile
    raw = data["faults_raw"]
    assert raw["lost_commits"]["cut"] > 0 and raw["service"]["outcomes"]["answered_503"] > 0
    assert f["faults_service_refuse_answered_share"] == f["faults_service_blackhole_answered_share"] == 1.0
    assert raw["partition"]["stale_s"] is not None and raw["partition"]["write_failed_s"] is not None
    # And the controller judged on through its blip, losing and doubling no decision
    assert raw["blip"]["kept_judging"] and f["faults_blip_lost"] == f["faults_blip_doubled"] == 0
