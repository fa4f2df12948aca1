"""What a finished run leaves for people: metrics.json (written atomically) and curves.png."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def write_json(values: dict, path: Path) -> None:
    """Strict JSON (a non-finite number becomes null), written through a temporary file so that
    a crash never leaves a half-written file under `path`."""
    values = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, train and val, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [row["epoch"] + 1 for row in history]
    for ax, metric in zip(axes, ("loss", "acc")):
        for split in ("train", "val"):
            key = f"{split}/{metric}"
            if any(key in row for row in history):
                ax.plot(epochs, [row.get(key, float("nan")) for row in history], marker=".", label=split)
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
