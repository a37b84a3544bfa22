"""What to compare: the metric spec the plan model converts its YAML into."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Kind = Literal["binary", "continuous"]
Better = Literal["lower", "higher"]
Scale = Literal["linear", "log"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a plan.

    margin: the tolerated worsening, >= 0. Absolute (in the metric's unit) unless
      `relative`, then a fraction of the baseline (0.10 for "10%").
    scale: "log" compares means of ln(value) (geometric means), for heavy-tailed
      latency and cost; the margin must then be relative.
    quantile: compare this quantile (e.g. 0.95) instead of the mean, from the
      log-spaced histograms; the margin must then be relative.
    bounds: the range values must lie in (e.g. (0, 1) for a score); informative.
    source: the outcome metric this spec reads, when it differs from `name`
      (e.g. name "latency_p95", source "latency_ms", quantile 0.95), so one
      outcome metric can be judged on its mean and on its tail.
    """

    name: str
    kind: Kind = "continuous"
    better: Better = "lower"
    margin: float = 0.0
    relative: bool = False
    scale: Scale = "linear"
    bounds: tuple[float, float] | None = None
    quantile: float | None = None
    source: str | None = None

    @property
    def metric(self) -> str:
        """The outcome metric in the evidence."""
        return self.source or self.name

    def __post_init__(self) -> None:
        # Programmer misuse raises; data never does (see judge()).
        if self.kind not in ("binary", "continuous"):
            raise ValueError(f"metric {self.name!r}: kind must be 'binary' or 'continuous', not {self.kind!r}")
        if self.better not in ("lower", "higher"):
            raise ValueError(f"metric {self.name!r}: better must be 'lower' or 'higher', not {self.better!r}")
        if self.scale not in ("linear", "log"):
            raise ValueError(f"metric {self.name!r}: scale must be 'linear' or 'log', not {self.scale!r}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"metric {self.name!r}: margin must be a finite number >= 0, not {self.margin!r}")
        if self.quantile is not None and not 0 < self.quantile < 1:
            raise ValueError(f"metric {self.name!r}: quantile must lie in (0, 1), not {self.quantile!r}")
        if (self.scale == "log" or self.quantile is not None) and not self.relative and self.margin != 0:
            raise ValueError(f"metric {self.name!r}: log-scale and quantile metrics need a relative margin")
        if self.kind == "binary" and (self.scale == "log" or self.quantile is not None):
            raise ValueError(f"metric {self.name!r}: a binary metric has no log scale or quantile")
        if self.quantile is not None and self.better != "lower":
            raise ValueError(f"metric {self.name!r}: quantile comparisons support better='lower' (tails) only")
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"metric {self.name!r}: bounds must be (low, high) with low < high")


OnLoss = Literal["hold", "rollback"]


@dataclass(frozen=True)
class CompletionSpec:
    """How the judge treats exposures that never produced an outcome (a crash, a timeout that never reports).

    Per arm, completion = outcomes / exposures, summed per unit (cluster-robust).
    A candidate whose completion is proven lower than the baseline's (any loss,
    at the sample-ratio test's strict level) gets `on_loss`; PASS needs the
    completion's lower bound to exclude a relative loss above `tolerance`.
    """

    tolerance: float = 0.01
    on_loss: OnLoss = "hold"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tolerance) and 0 <= self.tolerance < 1):
            raise ValueError(f"completion tolerance must lie in [0, 1), not {self.tolerance!r}")
        if self.on_loss not in ("hold", "rollback"):
            raise ValueError(f"completion on_loss must be 'hold' or 'rollback', not {self.on_loss!r}")
