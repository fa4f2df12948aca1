"""diagnostics.png: what the recorder measured, drawn so that vanishing gradients, dead or saturated
units and the size of the updates show at a glance. Layers keep the network's order and names."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dlopt.diagnostics.symptoms import per_epoch
from dlopt.training.report import pyplot, whole_ticks

OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1), "borderaxespad": 0}  # a legend right of its panel


def plot_diagnostics(records: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    steps = [r for r in records if r.get("kind") == "step"]
    summaries = per_epoch(records)
    layers = next((r["weights"] for r in records if r.get("kind") == "layers"), None) or \
        (list(steps[0]["grad_norm"]) if steps else [])
    colors = plt.get_cmap("viridis")
    color = {name: colors(i / max(1, len(layers) - 1)) for i, name in enumerate(layers)}
    fig, axes = plt.subplots(2, 2, figsize=(15, 8.5), gridspec_kw={"hspace": 0.6, "wspace": 0.5})
    dots = {"marker": ".", "markersize": 4} if len({r["step"] for r in steps}) <= 30 else {}  # a lone step shows

    ax = axes[0][0]  # the gradient norm of every layer along the network, first and last epoch
    graded = [s for s in summaries if s.get("grad_norm")]
    for summary, style in _first_and_last(graded, "o"):
        values = [summary["grad_norm"].get(name, math.nan) for name in layers]
        ax.plot(range(len(layers)), [v if v and v > 0 else math.nan for v in values], style,
                label=f"epoch {summary['epoch']}")
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)), layers, rotation=40, ha="right", fontsize=8)
    ax.set(title="gradient norm per layer, input -> output (flat is healthy; a steep rise: vanishing)",
           ylabel="|grad| (median of recorded steps)")
    if graded:  # nothing labelled to show otherwise (matplotlib would warn)
        ax.legend(fontsize=8, **OUTSIDE)

    ax = axes[0][1]  # the same over training
    for name in layers:
        xs = [r["step"] for r in steps if (r["grad_norm"].get(name) or 0) > 0]
        ax.plot(xs, [r["grad_norm"][name] for r in steps if (r["grad_norm"].get(name) or 0) > 0],
                color=color[name], linewidth=1, label=name, **dots)
    ax.set_yscale("log")
    ax.set(title="gradient norm per layer over training (dark: first layers, yellow: last)", xlabel="step",
           ylabel="|grad|")
    whole_ticks(ax, [r["step"] for r in steps])
    if 0 < len(layers) <= 12:
        ax.legend(fontsize=7, **OUTSIDE)

    ax = axes[1][0]  # update/weight ratio per layer over training, with the 1e-3 rule of thumb
    for name in layers:
        points = [(r["step"], r.get("update_ratio", {}).get(name)) for r in steps]
        points = [(x, y) for x, y in points if y and y > 0]
        ax.plot([x for x, _ in points], [y for _, y in points], color=color[name], linewidth=1, **dots)
    ax.axhline(1e-3, color="red", linestyle="--", linewidth=1, label="1e-3 (rule of thumb)")
    ax.set_yscale("log")
    ax.set(title="update / weight ratio per layer (colours as above: dark first layers, yellow last)", xlabel="step",
           ylabel="|dw| / |w|")
    whole_ticks(ax, [r["step"] for r in steps])
    ax.legend(fontsize=8, **OUTSIDE)

    ax = axes[1][1]  # dead and saturated fraction per activation layer, first and last epoch
    acts = [s["activations"] for s in summaries if "activations" in s]
    names = list(next((r["activations"] for r in records if r.get("kind") == "layers"), {}) or
                 (acts[-1]["mean"] if acts else {}))
    for act, style in _first_and_last(acts, "s"):
        for kind, tone in (("dead", "tab:red"), ("saturated", "tab:orange")):
            values = [act.get(kind, {}).get(name, math.nan) for name in names]
            if any(not math.isnan(v) for v in values):
                ax.plot(range(len(names)), values, style, color=tone, label=f"{kind}, epoch {act['epoch']}")
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set(title="units that never fired (dead) or sit at their limits (saturated)", ylabel="fraction of units")
    if acts:
        ax.legend(fontsize=8, **OUTSIDE)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.07, right=0.88, top=0.96, bottom=0.14)  # fixed margins: tight_layout took 0.2 s
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _first_and_last(summaries: list[dict[str, Any]], marker: str) -> list[tuple[dict[str, Any], str]]:
    """The first epoch's summary dashed and the last one's solid; one solid line when they are the same epoch."""
    if not summaries:
        return []
    return ([(summaries[0], marker + "--")] if len(summaries) > 1 else []) + [(summaries[-1], marker + "-")]
