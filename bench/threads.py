"""Torch's thread count against epoch time: 1 and 2 threads, alone and with a second run beside it.

Runs the installed `dlopt train` in temporary folders with `threads=1` or `threads=2` (and 2 threads with
OMP_WAIT_POLICY=PASSIVE), alone and as two identical runs started together, and reads each run's
metrics.json: seconds per epoch = wall_time_s / epochs (training and validation, after the imports). Prints
the median over the repeats and the ratio to 1 thread alone, measured in the same script. Models: the
default job (digits, the small CNN) and a larger one (resnet18 on 3x16x16 synthetic images).

    python bench/threads.py [--repeats 3] [--models default resnet]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

MODELS = {
    "default": ["trainer.max_epochs=5"],
    # one pass an epoch (716 training rows, 12 batches), as measured before data.min_batches passed them twice
    "resnet": ["model=resnet", "data=synthetic", "data.shape=[3,16,16]", "data.min_batches=1", "trainer.max_epochs=2"],
}
SETTINGS = {"1 thread": ("threads=1", {}), "2 threads": ("threads=2", {}),
            "2 threads, OMP_WAIT_POLICY=PASSIVE": ("threads=2", {"OMP_WAIT_POLICY": "PASSIVE"})}


def start(overrides: list[str], env: dict, cwd: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")} | env
    return subprocess.Popen(["dlopt", "train", *overrides], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def epoch_seconds(process: subprocess.Popen, cwd: str) -> float:
    _, err = process.communicate()
    if process.returncode:
        raise SystemExit(f"dlopt train failed:\n{err}")
    metrics = json.loads(next(Path(cwd).glob("outputs/train/*/*/metrics.json")).read_text())
    return metrics["wall_time_s"] / metrics["epochs"]


def measure(overrides: list[str], env: dict, side_by_side: int) -> float:
    """Seconds per epoch, the mean over `side_by_side` identical runs started together."""
    folders = [tempfile.TemporaryDirectory() for _ in range(side_by_side)]
    try:
        runs = [start(overrides, env, folder.name) for folder in folders]
        return statistics.mean(epoch_seconds(run, folder.name) for run, folder in zip(runs, folders))
    finally:
        for folder in folders:
            folder.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; seconds per epoch, median of {args.repeats}; ratio to 1 thread alone\n")
    print("| model | threads | alone s/epoch | ratio | beside a 2nd run s/epoch | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for model in args.models:
        times = {}
        for repeat in range(args.repeats):  # interleaved, so that a slow minute hits every setting alike
            for name, (knob, env) in SETTINGS.items():
                for side_by_side in (1, 2):
                    times.setdefault((name, side_by_side), []).append(
                        measure([*MODELS[model], knob], env, side_by_side))
        reference = statistics.median(times[("1 thread", 1)])
        for name in SETTINGS:
            alone, beside = (statistics.median(times[(name, n)]) for n in (1, 2))
            print(f"| {model} | {name} | {alone:.2f} | {alone / reference:.2f} | {beside:.2f} | "
                  f"{beside / reference:.2f} |", flush=True)


if __name__ == "__main__":
    main()
