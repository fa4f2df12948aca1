"""ensemble.png: every member's test accuracy and NLL beside the ensemble's, and the ensemble's against its size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlopt.training.report import pyplot, whole_ticks


def plot_ensemble(members: list[dict[str, Any]], combined: dict[str, float], curve: list[dict[str, float]],
                  path: Path) -> None:
    """`members`: rows with name, weight, test acc and nll; `combined`: the ensemble's test scores; `curve`: its test
    scores at each size (a greedy round, or the best 1..k)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    names = [m["name"] for m in members] + ["ensemble"]
    for ax, key in zip(axes[:2], ("acc", "nll")):
        values = [m["test"][key] for m in members] + [combined[key] if combined[key] is not None else float("nan")]
        colors = ["tab:blue" if m["weight"] else "lightgrey" for m in members] + ["tab:red"]
        ax.bar(range(len(values)), values, color=colors)
        ax.set_xticks(range(len(values)), names, rotation=60, ha="right", fontsize=7)
        unused = " (grey: not taken)" if not all(m["weight"] for m in members) else ""
        ax.set_title(f"test {key}: members{unused} and the ensemble", fontsize=9)
        if key == "acc":
            low = min(values)
            ax.set_ylim(max(0.0, low - 0.1 * (1 - low) - 0.02), 1)
    ax = axes[2]
    sizes = list(range(1, len(curve) + 1))
    ax.plot(sizes, [float("nan") if c["nll"] is None else c["nll"] for c in curve], "o-", color="tab:red",
            label="test NLL")
    ax.set(xlabel="members added (greedy rounds, or the best k)", ylabel="test NLL")
    twin = ax.twinx()
    twin.plot(sizes, [c["acc"] for c in curve], "s--", color="tab:blue", label="test acc")
    twin.set_ylabel("test acc")
    ax.set_title("the ensemble as it grows", fontsize=9)
    whole_ticks(ax, sizes)  # whole members, also with one or two sizes
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
