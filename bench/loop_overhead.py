"""dlopt's training-loop time per epoch / a plain PyTorch loop's, same model, data, batch size, optimizer.

Both loops train the default config (CNN on digits, Adam, batch 64) and run a validation pass
each epoch, tracking loss and accuracy. dlopt's epoch is timed from the start of a training
epoch to its end (validation, metric logging, checkpointing and progress bar included).
The first epoch of each run is a warm-up and is dropped; the figure is the median epoch time.

    python bench/loop_overhead.py [--epochs 8] [--repeats 5] [override ...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from common import config, median
from hydra.utils import instantiate

from dlopt.training.run import build, train


class EpochTimer(L.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.times.append(time.perf_counter() - self.start)


def dlopt_epochs(cfg) -> list[float]:
    timer = EpochTimer()
    import dlopt.training.run as run

    make_trainer = run._trainer

    def with_timer(cfg, run_dir):
        trainer = make_trainer(cfg, run_dir)
        trainer.callbacks.append(timer)
        return trainer

    run._trainer = with_timer
    try:
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, Path(tmp))
    finally:
        run._trainer = make_trainer
    return timer.times[1:]


def plain_epochs(cfg) -> list[float]:
    """The loop a practitioner writes by hand: shuffled slices, forward, backward, step; then validation."""
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)  # set by importing Lightning; a plain loop has none
    torch.manual_seed(cfg.seed)
    data, module = build(cfg)
    net = module  # same normalization buffers and network
    opt = instantiate(cfg.optimizer)(net.parameters(), weight_decay=cfg.regularization.weight_decay)
    (x, y), (xv, yv) = data.splits["train"], data.splits["val"]
    bs, times = cfg.data.batch_size, []
    for epoch in range(cfg.trainer.max_epochs):
        start = time.perf_counter()
        net.train()
        total, correct = torch.zeros(()), torch.zeros(())
        for idx in torch.randperm(len(y)).split(bs):
            xb, yb = x[idx], y[idx]
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
        net.eval()
        with torch.no_grad():
            val_loss = sum(F.cross_entropy(net(xv[i : i + bs]), yv[i : i + bs], reduction="sum") for i in range(0, len(yv), bs))
        _ = float(total / len(y)), float(correct / len(y)), float(val_loss / len(yv))
        times.append(time.perf_counter() - start)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = config(f"trainer.max_epochs={args.epochs}", "callbacks.early_stopping=null",
                 "callbacks.progress_bar=null", "trainer.enable_progress_bar=false", *args.overrides)
    cfg_bar = config(f"trainer.max_epochs={args.epochs}", "callbacks.early_stopping=null", *args.overrides)
    ours, ours_bar, plain = [], [], []
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit all alike
        plain.append(median(plain_epochs(cfg)))
        ours.append(median(dlopt_epochs(cfg)))
        ours_bar.append(median(dlopt_epochs(cfg_bar)))
    p, o, ob = median(plain), median(ours), median(ours_bar)
    print(f"plain PyTorch loop     : {p * 1e3:7.1f} ms/epoch (median of {args.repeats} runs)")
    print(f"dlopt, no progress bar : {o * 1e3:7.1f} ms/epoch  ratio {o / p:.2f}")
    print(f"dlopt default          : {ob * 1e3:7.1f} ms/epoch  ratio {ob / p:.2f}")


if __name__ == "__main__":
    main()
