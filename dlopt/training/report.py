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
    whose weights were tested (its value in the panel's title). One legend below the panels, outside the data."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    epochs = [row["epoch"] for row in history]
    for ax, metric in zip(axes, ("loss", "acc")):
        for split in ("train", "val"):
            key = f"{split}/{metric}"
            if any(key in row for row in history):
                ax.plot(epochs, [row.get(key, float("nan")) for row in history], marker=".", label=split,
                        color="tab:blue" if split == "train" else "tab:orange")
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1,
                       label=f"best epoch {best}" + (f" ({monitor})" if monitor else ""))
        value = (tested or {}).get(f"test/{metric}")
        shown = value is not None and tested_epoch is not None and math.isfinite(value)
        if shown:
            ax.plot([tested_epoch], [value], marker="*", markersize=12, linestyle="none", color="tab:red",
                    label=f"test (epoch {tested_epoch}'s weights)")
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} (test {value:.4g})" if shown else metric)
        whole_ticks(ax, epochs)
        ax.grid(alpha=0.3)
    legend_below(fig)
    return fig


def legend_below(fig, ncol: Optional[int] = None, fontsize: Optional[float] = None) -> None:
    """One legend for all of `fig`'s axes (an entry per label), below them, outside the data (`fig` made with
    layout="constrained", which makes room for it); `ncol` columns, all entries in one row by default."""
    entries = {label: handle for ax in fig.axes for handle, label in zip(*ax.get_legend_handles_labels())}
    if entries:
        fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncol=ncol or len(entries),
                   fontsize=fontsize)


def whole_ticks(ax, values: Sequence[float]) -> None:
    """Whole-number ticks on the x axis (epochs, a knob's integer values): MaxNLocator(integer=True), or with at most
    two distinct `values`, where that locator falls back to fractions, those values as the ticks, with half a step of
    margin beside them."""
    from matplotlib.ticker import MaxNLocator

    distinct = sorted(set(values))
    if 0 < len(distinct) <= 2:
        ax.set_xticks(distinct)
        ax.set_xlim(distinct[0] - 0.5, distinct[-1] + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


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
                for channel, line in enumerate(sample):
                    ax.plot(line, linewidth=0.8, color=channel_colour(channel))
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
    fig.suptitle(title + (f"; {channels_note(first.shape[1])}" if kind == "signal" else ""), fontsize=9)
    fig.tight_layout()
    return fig


CHANNEL_COLOURS = ("blue", "orange", "green", "red", "purple", "brown", "pink", "gray", "olive", "cyan")  # tab10's


def channel_colour(channel: int) -> str:
    """The colour of a signal's channel in the pictures: matplotlib's tab10, in order."""
    return f"tab:{CHANNEL_COLOURS[channel % len(CHANNEL_COLOURS)]}"


def channels_note(channels: int) -> str:
    """What the lines of a signal's picture are, for its title: the signal, or its channels by colour."""
    if channels == 1:
        return "line: the signal"
    named = ", ".join(f"{c} {CHANNEL_COLOURS[c]}" for c in range(min(channels, len(CHANNEL_COLOURS))))
    return f"lines: channels {named}" + (" (then again from blue)" if channels > len(CHANNEL_COLOURS) else "")


def save_figure(fig, path: Path) -> None:
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
