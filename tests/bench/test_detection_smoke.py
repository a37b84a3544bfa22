"""The detection benchmark runs end to end in its quick mode (the full run is `make bench`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "detection.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_detection", BENCH)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_mode_writes_a_results_table(tmp_path: Path) -> None:
    # Given the quick mode on the 2 % -> 3 % scenario
    detection = _load()
    out = tmp_path / "RESULTS_detection.md"
    # When it runs
    assert detection.main(["--quick", "--only", "err_2_3_fixed", "--out", str(out)]) == 0
    # Then it writes the table with every controller, and ours catches the regression
    text = out.read_text()
    for label in detection.LABEL.values():
        assert label in text
    assert "median samples within 1.5x of SPRT oracle" in text


def test_controllers_see_the_same_stream_and_ours_is_quiet_on_identical_arms() -> None:
    import numpy as np

    detection = _load()
    aa = next(s for s in detection.scenarios(quick=True) if s.name == "aa")
    from dataclasses import replace

    sc = replace(aa, runs=20, horizon=30_000)
    looks = detection.simulate(sc, 20, np.random.default_rng(0))
    rollback, srm = detection.controller_ours(sc, looks, detection.FULL_PLAN)
    assert rollback.shape == srm.shape == (20,)
    # 20 A/A runs: a false rollback is possible (alpha 5 %) but more than 3 would be a red flag
    assert (rollback >= 0).sum() <= 3
