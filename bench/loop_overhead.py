"""dlopt's training-loop time per epoch / a plain PyTorch loop's, same model, data, batch size, optimizer.

Both loops train the default config (CNN on digits, Adam, batch 64; overrides change it) and run
a validation pass each epoch, tracking loss and accuracy. dlopt's epoch is timed from the start
of a training epoch to its end, validation and metric logging included: once as the bare loop
(no progress bar, no checkpoint files) and once as the default run (progress bar, best.ckpt
when val/loss improves, last.ckpt every epoch), which the hand-written loop does not do.
The first epoch of each run is a warm-up and is dropped; each run gives its median epoch time,
and the ratio printed is the median over repeats of dlopt's time / the plain loop's time.

    python bench/loop_overhead.py [--epochs 8] [--repeats 5] [override ...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import EpochTimer, config, median
from hydra.utils import instantiate

from dlopt.training.run import build, train


def dlopt_epochs(cfg) -> list[float]:
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp), callbacks=[timer])
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
    common = (f"trainer.max_epochs={args.epochs}", "callbacks.early_stopping=null", *args.overrides)
    loop_only = config(*common, "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
                       "callbacks.checkpoint=null", "callbacks.last_checkpoint=null")
    default = config(*common)
    plain, bare, full = [], [], []
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit all three alike
        plain.append(median(plain_epochs(default)))
        bare.append(median(dlopt_epochs(loop_only)))
        full.append(median(dlopt_epochs(default)))
    # the figure: the median over repeats of each repeat's ratio to the plain loop run just before it
    print(f"plain PyTorch loop            : {median(plain) * 1e3:7.1f} ms/epoch (median of {args.repeats} runs)")
    for name, times in (("dlopt loop (no bar, no ckpt)", bare), ("dlopt default", full)):
        ratio = median(t / p for t, p in zip(times, plain))
        print(f"{name:30s}: {median(times) * 1e3:7.1f} ms/epoch  ratio {ratio:.2f}")

if __name__ == "__main__":
    main()
