"""What a run leaves for people: metrics.json and predictions.npz (written atomically), curves.png and
augmentations.png."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

from dlopt.atomic import replacing


def strict(value):
    """`value` with every non-finite number (in nested dicts and lists too) replaced by None: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def write_json(values: dict | list, path: Path, indent: int | None = 2) -> None:
    """Strict JSON (a non-finite number becomes null), replaced in one step (dlopt.atomic): a crash never leaves
    a half-written file under `path`."""
    text = json.dumps(strict(values), indent=indent, sort_keys=True, allow_nan=False) + "\n"
    with replacing(path) as file:
        file.write(text.encode())


def write_npz(arrays: dict, path: Path) -> None:
    """Numeric arrays in one .npz file (no pickled objects), replaced in one step (dlopt.atomic): a crash never
    leaves a half-written file under `path`."""
    import numpy as np

    with replacing(path) as file:
        np.savez_compressed(file, **arrays)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: Path, best: Optional[int] = None, monitor: str = "",
                tested: Optional[dict[str, float]] = None, tested_epoch: Optional[int] = None) -> None:
    """curves.png: `curves_figure`."""
    save_figure(curves_figure(history, best, monitor, tested, tested_epoch), path)


def curves_figure(history: list[dict], best: Optional[int] = None, monitor: str = "",
                  tested: Optional[dict[str, float]] = None, tested_epoch: Optional[int] = None):
    """Loss and accuracy per epoch (numbered from 1, as history.json has them), train and val, side by side; a dashed
    line at the `best` epoch by `monitor`, and the `tested` metrics (test/loss, test/acc) as a star at the epoch
    whose weights were tested."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [row["epoch"] for row in history]
    for ax, metric in zip(axes, ("loss", "acc")):
        for split in ("train", "val"):
            key = f"{split}/{metric}"
            if any(key in row for row in history):
                ax.plot(epochs, [row.get(key, float("nan")) for row in history], marker=".", label=split)
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1,
                       label=f"best epoch {best}" + (f" ({monitor})" if monitor else ""))
        value = (tested or {}).get(f"test/{metric}")
        if value is not None and tested_epoch is not None and math.isfinite(value):
            ax.plot([tested_epoch], [value], marker="*", markersize=12, linestyle="none", color="tab:red",
                    label=f"test {value:.4g}")
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        if epochs and len(epochs) <= 2:  # whole epochs: MaxNLocator(integer=True) falls back to fractions here
            ax.set_xticks(epochs)
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_samples(rows: Sequence[tuple[str, "torch.Tensor", list[str]]], title: str,
                 names: Optional[Sequence[str]] = None):
    """A figure with one row per (name, batch, captions): images as pictures, 1-D signals as lines, vectors (a
    table's rows) as horizontal bars, one per feature, labelled with the feature `names` (a CSV file's columns,
    column=value for a one-hot one; the feature index without them). Returns the matplotlib figure (for a PNG and
    for TensorBoard)."""
    plt = pyplot()
    first = rows[0][1]
    n, kind = len(first), ("image" if first.dim() == 4 else "signal" if first.dim() == 3 else "vector")
    low, high = float(first.min()), float(first.max())
    features = first.shape[-1] if kind == "vector" else 0
    labelled = kind == "vector" and features <= 40  # beyond that the names would overlap
    height = max(1.6, 0.14 * features + 0.6) if labelled else 1.6
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n + (1.2 if labelled else 0), height * len(rows)),
                             squeeze=False)
    for r, (name, batch, captions) in enumerate(rows):
        for c in range(n):
            ax, sample = axes[r][c], batch[c].detach().float().cpu()
            ax.set_xticks([])
            ax.set_yticks([])
            if kind == "image":
                picture = sample.permute(1, 2, 0) if sample.shape[0] == 3 else sample[0]
                ax.imshow(((picture - low) / max(high - low, 1e-12)).clamp(0, 1), cmap="gray", vmin=0, vmax=1)
            elif kind == "signal":
                for line in sample:
                    ax.plot(line, linewidth=0.8)
                ax.set_ylim(low - 0.1 * (high - low), high + 0.1 * (high - low))
            else:
                ax.barh(range(features), sample, color=["tab:blue" if v >= 0 else "tab:red" for v in sample.tolist()])
                ax.axvline(0, color="grey", linewidth=0.5)
                ax.set_xlim(low - 0.1 * (high - low), high + 0.1 * (high - low))
                ax.set_ylim(features - 0.5, -0.5)  # the first feature on top
                if labelled and c == 0:
                    ax.set_yticks(range(features), list(names) if names else [str(i) for i in range(features)],
                                  fontsize=6)
            ax.set_title(captions[c], fontsize=7)
        axes[r][0].set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
