"""Does a network pretrained on digits 0-4 help to learn digits 5-9 from 10% of the data? Numbers for it.

Per seed: pretrain once on classes 0-4 (experiment=digits_pretrain), then train on classes 5-9
with 10% of the training split (experiment=digits_transfer) from scratch and with each
transfer strategy, all through `dlopt.training.run.train` with the same seed and data split.
Two controls: finetune with the backbone at the head's lr, and a linear probe of an untrained
network (a fresh state_dict file) to show what the pretrained features are worth.
Prints the test accuracy (median and min-max over seeds), and the median epochs and wall time of
a run (early stopping on val/loss may end it before --epochs).

    python bench/transfer.py [--seeds 3] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from common import config

from dlopt.training.run import build, train

ARMS = {
    "from scratch": ["transfer.from=null"],
    "linear_probe": ["transfer.strategy=linear_probe"],
    "finetune": ["transfer.strategy=finetune"],
    "gradual": ["transfer.strategy=gradual"],
    # controls: the whole network at the head's lr; a probe of untrained features
    "finetune, scale 1": ["transfer.strategy=finetune", "transfer.backbone_lr_scale=1.0"],
    "probe, untrained": ["transfer.strategy=linear_probe", "transfer.from=RANDOM"],
}
QUIET = ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]


def run(folder: Path, *overrides: str) -> dict:
    train(config(*QUIET, *overrides), folder)
    return json.loads((folder / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the runs on digits 5-9")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {name: [] for name in ["pretrain (0-4)", *ARMS]}
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "pretrain"
            runs["pretrain (0-4)"].append(run(source, "experiment=digits_pretrain", f"seed={seed}"))
            random = Path(tmp) / "untrained.pt"
            torch.save(build(config("experiment=digits_pretrain", f"seed={seed}"))[1].net.state_dict(), random)
            for name, overrides in ARMS.items():
                overrides = [o.replace("RANDOM", str(random)) for o in overrides]
                runs[name].append(run(Path(tmp) / name, "experiment=digits_transfer", f"transfer.from={source}",
                                      f"trainer.max_epochs={args.epochs}", f"seed={seed}", *overrides))
    print(f"digits 5-9, 10% of the training data, up to {args.epochs} epochs, {args.seeds} seeds")
    print(f"{'':18s} {'test/acc':>9s} {'min-max':>13s} {'epochs':>7s} {'wall s':>7s}")
    for name, metrics in runs.items():
        accs = [m["test/acc"] for m in metrics]
        print(f"{name:18s} {statistics.median(accs):9.3f} {min(accs):6.3f}-{max(accs):.3f} "
              f"{statistics.median(m['epochs'] for m in metrics):7.0f} "
              f"{statistics.median(m['wall_time_s'] for m in metrics):7.1f}")

if __name__ == "__main__":
    main()
