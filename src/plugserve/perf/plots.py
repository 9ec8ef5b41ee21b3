"""Plots of bench results that `plugserve report` draws (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def new_figure(columns: int) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, columns, figsize=(6.2 * columns, 4.4), squeeze=False)
    return figure, axes[0]


def save_figure(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


BREAKDOWN = (("server_queue_us", "queue"), ("server_compute_input_us", "compute input"),
             ("server_compute_infer_us", "compute infer"), ("server_compute_output_us", "compute output"))


def plot_breakdown(run: dict[str, Any], path: Path, title: str) -> None:
    """Per step, Triton's per-request split stacked, beside the client's mean latency: what is above
    the stack is transport and the client itself."""
    figure, (axis,) = new_figure(1)
    steps = run["steps"]
    positions = range(len(steps))
    bottom = [0.0] * len(steps)
    for key, name in BREAKDOWN:
        values = [step.get("server", {}).get(key) or 0.0 for step in steps]
        values = [0.0 if math.isnan(value) else value / 1000 for value in values]
        axis.bar(positions, values, 0.6, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axis.plot(positions, [step["mean_ms"] for step in steps], "k_", markersize=28, mew=2, label="client mean")
    labels = [f"{step['load']:g}" + ("\ntime-cap" if step.get("stopped") != "stable" else "") for step in steps]
    axis.set_xticks(list(positions), labels, fontsize=8)
    axis.set_xlabel(run["meta"]["mode"])
    axis.set_ylabel("per-request latency (ms)")
    axis.set_title(title, fontsize=9)
    # Headroom above the tallest bar for the legend.
    axis.set_ylim(top=1.35 * max([*bottom, *(step["mean_ms"] for step in steps if not math.isnan(step["mean_ms"])), 1e-3]))
    axis.legend(fontsize=7, loc="upper left", ncols=3)
    save_figure(figure, path)
