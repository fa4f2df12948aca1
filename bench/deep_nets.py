"""Does a deep plain CNN train, and do residual connections plus batch norm fix it? Numbers for it.

For each variant of a 16-block CNN on digits, prints
- the gradient-norm ratio first conv layer / last conv layer over the first training steps
  (median of 10 steps; far below 1 means the gradient vanishes on its way to the input), and
- the test accuracy after a short run (`dlopt.training.run.train`, default data split).

    python bench/deep_nets.py [--depth 16] [--epochs 10] [--seeds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from common import config
from torch import nn

from dlopt.training.run import build, train

VARIANTS = {
    "plain, sigmoid, no norm": ["model.activation=sigmoid", "model.norm=none", "model.residual=false"],
    "plain, tanh, no norm": ["model.activation=tanh", "model.norm=none", "model.residual=false"],
    "plain, relu, no norm": ["model.activation=relu", "model.norm=none", "model.residual=false"],
    "residual + batch norm, sigmoid": ["model.activation=sigmoid", "model.norm=batch", "model.residual=true"],
    "residual + batch norm, relu": ["model.activation=relu", "model.norm=batch", "model.residual=true"],
}


def gradient_ratio(cfg, steps: int = 10) -> float:
    """Median over the first `steps` Adam steps of |grad first conv| / |grad last conv|."""
    data, module = build(cfg)
    convs = [m for m in module.net.modules()  # the stack's convolutions, not 1x1 skip projections
             if isinstance(m, (nn.Conv1d, nn.Conv2d)) and max(m.kernel_size) > 1]
    optimizer = module.make_optimizer(module.parameters(), weight_decay=0.0)
    x, y = data.splits["train"]
    ratios = []
    for idx in torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.seed))[: steps * 64].split(64):
        optimizer.zero_grad()
        F.cross_entropy(module(x[idx]), y[idx]).backward()
        ratios.append((convs[0].weight.grad.norm() / convs[-1].weight.grad.norm()).item())
        optimizer.step()
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    quiet = ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false", "callbacks.early_stopping=null"]
    print(f"{'cnn, depth ' + str(args.depth):34s} {'grad first/last':>16s} {'test/acc':>9s}")
    for name, overrides in VARIANTS.items():
        ratios, accs = [], []
        for seed in range(args.seeds):
            cfg = config("model=cnn", f"model.depth={args.depth}", f"trainer.max_epochs={args.epochs}",
                         f"seed={seed}", *quiet, *overrides)
            ratios.append(gradient_ratio(cfg))
            with tempfile.TemporaryDirectory() as tmp:
                train(cfg, Path(tmp))
                accs.append(json.loads((Path(tmp) / "metrics.json").read_text())["test/acc"])
        print(f"{name:34s} {statistics.median(ratios):16.2e} {statistics.median(accs):9.3f}")


if __name__ == "__main__":
    main()
