"""Pictures of a rollout: each metric's confidence bounds over the checks, against its margin.

One drawing, two sizes: `plot_bounds` writes the demo's PNG file, `bounds_markdown` embeds a smaller PNG in
the run page's summary artifact as a data: URI (the Prefect UI shows markdown images, and a data: URI needs
no file server). The figure is built without pyplot, so no global state is shared between runs or threads.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from rollout.core.records import DecisionRecord
from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction

STAGE_ACTIONS = ("enter_stage", "promote", "rollback")
"""Decisions after which the stage changed: drawn as dotted vertical lines."""

CARD_MAX_BYTES = 150_000
"""The most a summary card's chart may weigh (base64 included); far below what the Prefect server stores,
and small enough that updating the card on every check stays cheap. The chart thins the checks it draws
rather than grow past it. Measured (tests/adapters/prefect/test_report.py's decisions, 3 to 3,000 checks):
24-28 KB with one metric, 39-51 KB with three; 0.14-0.42 s to draw on a loaded 2-core machine."""


def bounds_series(decisions: Sequence[DecisionRecord]) -> dict[str, dict[str, list[float]]]:
    """Per metric, in check order: the check's sequence, estimate, lower and upper bound, margin (NaN if none)."""
    series: dict[str, dict[str, list[float]]] = {}
    for d in decisions:
        for m in (d.details or {}).get("metrics", []):
            row = series.setdefault(m["metric"], {"check": [], "estimate": [], "lower": [], "upper": [], "margin": []})
            row["check"].append(float(d.sequence))
            for key in ("estimate", "lower", "upper", "margin"):
                row[key].append(math.nan if m.get(key) is None else float(m[key]))
    return series


def draw_bounds(decisions: Sequence[DecisionRecord], title: str, *, width: float = 8.0,
                panel_height: float = 2.4) -> Any:
    """A matplotlib Figure with one panel per metric: bounds as a band, the estimate, the margin, stage changes."""
    from matplotlib.figure import Figure

    series = bounds_series(decisions)
    names = list(series) or ["(no evidence)"]
    fig = Figure(figsize=(width, panel_height * len(names) + 0.4))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)
    changes = [d.sequence for d in decisions if d.action in STAGE_ACTIONS]
    for ax, name in zip(axes[:, 0], names, strict=True):
        row = series.get(name)
        if row:
            ax.fill_between(row["check"], row["lower"], row["upper"], alpha=0.25, label="confidence bounds")
            ax.plot(row["check"], row["estimate"], marker=".", label="estimate (candidate − baseline)")
            ax.plot(row["check"], row["margin"], linestyle="--", color="red", label="margin (harm beyond)")
            ax.axhline(0, color="grey", linewidth=0.8)
        for x in changes:
            ax.axvline(x, color="black", linewidth=0.5, linestyle=":")
        ax.set_ylabel(name)
    axes[0, 0].set_title(title)
    axes[0, 0].legend(loc="upper left", fontsize="small")
    axes[-1, 0].set_xlabel("check (dotted lines: stage changes)")
    fig.tight_layout()
    return fig


def plot_bounds(engine: Engine, rollout_id: int, path: Path) -> Path:
    """The demo's PNG file of a rollout's bounds."""
    with transaction(engine) as s:
        record = rollout_store.get_rollout(s, rollout_id)
        decisions = rollout_store.decisions(s, rollout_id)
    fig = draw_bounds(decisions, f"{record.flag_key}: rollout #{rollout_id}, {record.state.status.value}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def bounds_png(decisions: Sequence[DecisionRecord], title: str, *, dpi: int = 80) -> bytes:
    """The chart as PNG bytes, sized for a card in the Prefect UI (about 560 px wide)."""
    buffer = io.BytesIO()
    draw_bounds(decisions, title, width=7.0, panel_height=2.0).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def bounds_markdown(decisions: Sequence[DecisionRecord], title: str) -> str:
    """A markdown image of the chart, embedded as a data: URI; an empty string when there is nothing to draw.

    A long rollout draws every other check (then every fourth ...) until the image fits CARD_MAX_BYTES;
    the last check and the stage changes are always drawn, so the card ends where the rollout is.
    """
    if not any((d.details or {}).get("metrics") for d in decisions):
        return ""
    shown = list(decisions)
    while True:
        encoded = base64.b64encode(bounds_png(shown, title)).decode("ascii")
        if len(encoded) <= CARD_MAX_BYTES or len(shown) <= 2:
            break
        last = len(shown) - 1  # every other check, keeping the last one and those where the stage changed
        shown = [d for i, d in enumerate(shown) if (last - i) % 2 == 0 or d.action in STAGE_ACTIONS]
    return f"![{title}](data:image/png;base64,{encoded})"


__all__ = ["CARD_MAX_BYTES", "bounds_markdown", "bounds_png", "bounds_series", "draw_bounds", "plot_bounds"]
