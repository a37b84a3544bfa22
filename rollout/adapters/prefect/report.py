"""Pictures of a rollout: each metric's confidence bounds over the checks, against its margin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from rollout.store import rollouts as rollout_store
from rollout.store.db import transaction


def plot_bounds(engine: Engine, rollout_id: int, path: Path) -> Path:
    """A PNG with one panel per metric: estimate and bounds per check, the margin, and stage changes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with transaction(engine) as s:
        record = rollout_store.get_rollout(s, rollout_id)
        decisions = rollout_store.decisions(s, rollout_id)
    series: dict[str, dict[str, list[Any]]] = {}
    for d in decisions:
        for m in (d.details or {}).get("metrics", []):
            row = series.setdefault(m["metric"], {"check": [], "estimate": [], "lower": [], "upper": [], "margin": []})
            row["check"].append(d.sequence)
            for key in ("estimate", "lower", "upper", "margin"):
                row[key].append(float("nan") if m[key] is None else m[key])
    names = list(series) or ["(no evidence)"]
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 2.4 * len(names)), sharex=True, squeeze=False)
    stage_changes = [d.sequence for d in decisions if d.action in ("enter_stage", "promote", "rollback")]
    for ax, name in zip(axes[:, 0], names, strict=True):
        row = series.get(name)
        if row:
            ax.fill_between(row["check"], row["lower"], row["upper"], alpha=0.25, label="confidence bounds")
            ax.plot(row["check"], row["estimate"], marker=".", label="estimate (candidate − baseline)")
            ax.plot(row["check"], row["margin"], linestyle="--", color="red", label="margin (harm beyond)")
            ax.axhline(0, color="grey", linewidth=0.8)
        for x in stage_changes:
            ax.axvline(x, color="black", linewidth=0.5, linestyle=":")
        ax.set_ylabel(name)
    axes[0, 0].set_title(f"{record.flag_key}: rollout #{rollout_id}, {record.state.status.value}")
    axes[0, 0].legend(loc="upper left", fontsize="small")
    axes[-1, 0].set_xlabel("check (dotted lines: stage changes)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
