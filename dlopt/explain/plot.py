"""The pictures of an explanation: attributions.png, each explained sample with what every method credits (red: for
the target class, blue: against); importance.png, the features that matter most on average (per class for images);
faithfulness.png, the deletion curves, where a method whose curve falls below random's points at what the model uses.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Optional

import torch

from dlopt.explain.features import Features
from dlopt.training.report import channel_colour, channels_note, legend_below, pyplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DIVERGING = "RdBu_r"


def _limit(values: torch.Tensor) -> float:
    """Symmetric colour limit: the largest |value|, never 0."""
    return max(float(values.abs().max()), 1e-12)


def _grey(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """(C, H, W) -> (H, W) in [0, 1]: the channels' mean, scaled by the inputs' range."""
    return ((x.mean(0) - low) / max(high - low, 1e-12)).clamp(0, 1)


def _title(fig: Figure, text: str) -> None:
    """A suptitle wrapped to the figure's width, then tight_layout below it."""
    text = textwrap.fill(text, max(20, int(14 * fig.get_figwidth())))
    fig.suptitle(text, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.2 + 0.18 * text.count("\n") + 0.15) / fig.get_figheight()))


def attributions_figure(x: torch.Tensor, captions: list[str], values: dict[str, torch.Tensor], features: Features,
                        most: Optional[int] = None) -> Figure:
    """One row per sample (the first `most`: 16 images, 8 signals or tables), one column per method (after the input,
    for images)."""
    plt = pyplot()
    total, methods, kind = len(x), list(values), features.kind
    n = min(total, most or (16 if kind == "image" else 8))
    x = x[:n].detach().float().cpu()
    spread = {m: features.spread(v[:n].detach().float().cpu()) for m, v in values.items()}
    low, high = float(x.min()), float(x.max())
    first = 1 if kind == "image" else 0
    width, height = {"image": (1.6, 1.6), "signal": (3.2, 1.5), "table": (3.4, 2.0)}[kind]
    fig, axes = plt.subplots(n, first + len(methods), figsize=(width * (first + len(methods)), height * n),
                             squeeze=False)
    sizes = torch.bincount(features.mask.flatten(), minlength=features.count)
    for i in range(n):
        if kind == "image":
            picture = x[i].permute(1, 2, 0) if x.shape[1] == 3 else x[i, 0]
            axes[i][0].imshow(((picture - low) / max(high - low, 1e-12)).clamp(0, 1), cmap="gray", vmin=0, vmax=1)
        for j, method in enumerate(methods):
            ax, row = axes[i][first + j], values[method][i].detach().float().cpu()
            m = _limit(row)
            if kind == "image":
                ax.imshow(_grey(x[i], low, high), cmap="gray", vmin=0, vmax=1)
                ax.imshow(spread[method][i, 0], cmap=DIVERGING, vmin=-m, vmax=m, alpha=0.6)
            elif kind == "signal":
                margin = 0.1 * max(high - low, 1e-12)
                extent = (-0.5, x.shape[-1] - 0.5, low - margin, high + margin)
                ax.imshow(spread[method][i, 0][None], extent=extent, aspect="auto", cmap=DIVERGING, alpha=0.5,
                          vmin=-m, vmax=m)
                for channel, line in enumerate(x[i]):
                    ax.plot(line, linewidth=0.9, color=channel_colour(channel))
                ax.set(xlim=extent[:2], ylim=extent[2:])
            else:
                top = row.abs().argsort(descending=True)[:10].flip(0).tolist()
                names = [f"{features.names[f]} = {float(x[i][features.mask[0] == f][0]):.3g}" if sizes[f] == 1
                         else features.names[f] for f in top]
                ax.barh(range(len(top)), row[top], color=["tab:red" if row[f] > 0 else "tab:blue" for f in top])
                ax.set_yticks(range(len(top)), names, fontsize=7)
                ax.axvline(0, color="black", linewidth=0.6)
                ax.tick_params(axis="x", labelsize=7)
            if i == 0:
                ax.set_title(method, fontsize=9)
        axes[i][0].set_ylabel(textwrap.fill(captions[i], 22), fontsize=8)
    for ax in axes.flat:
        if kind == "image":
            ax.set(xticks=[], yticks=[])
        elif kind == "signal":
            ax.tick_params(labelsize=7)
    if kind == "image":
        axes[0][0].set_title("input", fontsize=9)
    more = f"first {n} of {total} samples; " if total > n else ""
    lines = f"; {channels_note(x.shape[1])}" if kind == "signal" else ""
    _title(fig, f"attributions ({more}red: for the target class, blue: against{lines})")
    return fig


def importance_figure(values: dict[str, torch.Tensor], spread_sd: dict[str, torch.Tensor], targets: torch.Tensor,
                      classes: list[str], features: Features) -> Figure:
    """The features that matter most, per method: bars of the top 20 (tables, signals) or, for images, maps of the
    mean |attribution| over the samples of each target class (permutation, which is global, in one map)."""
    plt = pyplot()
    values = {m: v.detach().float().cpu() for m, v in values.items()}
    if features.kind == "image":
        present = sorted(set(targets.tolist()))
        fig, axes = plt.subplots(len(values), len(present), figsize=(1.7 * len(present), 1.8 * len(values)),
                                 squeeze=False)
        for r, (method, v) in enumerate(values.items()):
            groups = [v[:1]] if method == "permutation" else [v[targets.cpu() == c].abs().mean(0, keepdim=True)
                                                                for c in present]
            maps = features.spread(torch.cat(groups))[:, 0]
            for c, ax in enumerate(axes[r]):
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= len(maps):
                    ax.axis("off")
                    continue
                ax.imshow(maps[c], cmap="magma", vmin=min(0.0, float(maps.min())), vmax=max(float(maps.max()), 1e-12))
                ax.set_title("all classes (global)" if method == "permutation" else classes[present[c]], fontsize=8)
            axes[r][0].set_ylabel(method, fontsize=9)
        _title(fig, "mean |attribution| per target class (bright: important)" +
               ("; permutation: accuracy drop" if "permutation" in values else ""))
        return fig
    top = min(20, features.count)
    columns = min(4, len(values))
    rows = -(-len(values) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, max(2.8, 0.22 * top + 1.2) * rows), squeeze=False)
    for ax, (method, v) in zip(axes.flat, values.items()):
        score = v[0] if method == "permutation" else v.abs().mean(0)
        order = score.argsort(descending=True)[:top].flip(0)
        sd = spread_sd.get(method)
        ax.barh(range(top), score[order], xerr=None if sd is None else sd.detach().cpu()[order], color="tab:blue",
                error_kw={"elinewidth": 0.8, "capsize": 2})
        ax.set_yticks(range(top), [features.names[f] for f in order.tolist()], fontsize=7)
        ax.set_xlabel("accuracy drop when permuted" if method == "permutation" else "mean |attribution|", fontsize=8)
        ax.set_title(method, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.axvline(0, color="black", linewidth=0.6)
    for ax in axes.flat[len(values):]:
        ax.axis("off")
    whiskers = [m for m in values if spread_sd.get(m) is not None]
    _title(fig, f"the {top} most important features per method" +
           (f"; whiskers: ± 1 sd over {' and '.join(whiskers)}'s repeats" if whiskers else ""))
    return fig


def faithfulness_figure(fractions: torch.Tensor, curves: dict[str, torch.Tensor], random_curve: torch.Tensor,
                        areas: dict[str, float]) -> Figure:
    """The mean deletion curve of every method and of random orders, with a band of one standard error; the legend
    below the axes, outside the data."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5), layout="constrained")
    xs = fractions.cpu().numpy()
    for name, curve in [*curves.items(), ("random", random_curve)]:
        curve = curve.detach().float().cpu()
        mean = curve.mean(0)
        se = curve.std(0) / len(curve) ** 0.5 if len(curve) > 1 else torch.zeros_like(mean)
        style = {"color": "black", "linestyle": "--"} if name == "random" else {}
        line, = ax.plot(xs, mean, label=f"{name} (AUC {areas[name]:.3f})", linewidth=1.5, **style)
        ax.fill_between(xs, mean - se, mean + se, color=line.get_color(), alpha=0.12, linewidth=0)
    ax.set(xlabel="fraction of features removed (most important first)", ylabel="probability of the target",
           title="deletion curves (band: ± 1 standard error): lower than random = faithful", xlim=(0, 1),
           ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    legend_below(fig, ncol=2, fontsize=8)
    return fig
