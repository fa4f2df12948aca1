"""What recording diagnostics costs: epoch time of the default job (`dlopt train`: digits, cnn) with
diagnostics=none, diagnostics=default (the default cadence) and diagnostics=full.

Each run is the installed command in a scratch folder, one at a time, OMP_NUM_THREADS=1. The epoch time
of a run is the median of the intervals between its consecutive val/loss events in TensorBoard (one a
epoch, written at the end of validation), so the start (Python, imports, data, the sanity check) and
the final test are not in it and a stall of the machine moves the median little. The settings
alternate within each repeat (the order rotates), and the figure of a setting is the median over the
repeats. Also printed: the median of metrics.json's wall_time_s (fit and test of the run).

    python bench/diagnostics_overhead.py [--repeats 3] [--epochs 30] [--keep DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from installed import QUIET, dlopt, version  # bench/installed.py

SETTINGS = ("none", "default", "full")


def epoch_seconds(run: Path) -> list[float]:
    """Seconds between consecutive val/loss events of the run's TensorBoard files: one per epoch."""
    times = []
    for events in run.glob("tensorboard/**/events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0, "histograms": 1, "tensors": 1})
        accumulator.Reload()
        if "val/loss" in accumulator.Tags()["scalars"]:
            times += [e.wall_time for e in accumulator.Scalars("val/loss")]
    times.sort()
    return [b - a for a, b in itertools.pairwise(times)]


def train(run: Path, setting: str, epochs: int) -> tuple[float, float, float]:
    """Train the default job with diagnostics=setting in `run`; its median epoch seconds, wall_time_s
    and the process's wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = run.with_suffix(".log")
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call([*dlopt(), "train", f"diagnostics={setting}", f"trainer.max_epochs={epochs}",
                                "callbacks.early_stopping=null", *QUIET, f"hydra.run.dir={run}"],
                               cwd=run.parent, stdout=out, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    if code:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"diagnostics={setting} exited with {code}; end of {log}:\n{tail}")
    metrics = json.loads((run / "metrics.json").read_text())
    return statistics.median(epoch_seconds(run)), metrics["wall_time_s"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30, help="trainer.max_epochs (early stopping off)")
    parser.add_argument("--keep", type=Path, help="where the runs go (default: a temp folder, removed)")
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory(prefix="dlopt_overhead_") if args.keep is None else None
    root = args.keep or Path(scratch.name)
    root.mkdir(parents=True, exist_ok=True)
    epoch: dict[str, list[float]] = {s: [] for s in SETTINGS}
    fit: dict[str, list[float]] = {s: [] for s in SETTINGS}
    process: dict[str, list[float]] = {s: [] for s in SETTINGS}
    print(f"dlopt at {version()}")
    print(f"default job (digits, cnn), {args.epochs} epochs, early stopping off, OMP_NUM_THREADS=1, "
          f"{args.repeats} repeats, runs in {root}")
    for repeat in range(args.repeats):
        order = SETTINGS[repeat % len(SETTINGS):] + SETTINGS[:repeat % len(SETTINGS)]
        for setting in order:
            run = root / f"{setting}_{repeat}"
            e, w, p = train(run, setting, args.epochs)
            epoch[setting].append(e)
            fit[setting].append(w)
            process[setting].append(p)
            print(f"  repeat {repeat} diagnostics={setting:7s}: epoch {e:.3f} s (median of {args.epochs - 1} "
                  f"intervals), wall_time_s {w:.1f}, process {p:.1f} s", flush=True)
    med = {s: statistics.median(epoch[s]) for s in SETTINGS}
    print()
    print(f"{'diagnostics':12s} {'epoch s (median)':>17s} {'vs none':>8s} {'wall_time_s':>12s} {'vs none':>8s} "
          f"{'process s':>10s}")
    for s in SETTINGS:
        wall = statistics.median(fit[s])
        print(f"{s:12s} {med[s]:17.3f} {med[s] / med['none']:7.3f}x {wall:12.1f} "
              f"{wall / statistics.median(fit['none']):7.3f}x {statistics.median(process[s]):10.1f}")
    print(f"\nepoch time default/none = {med['default'] / med['none']:.3f}x (target <= 1.05x), "
          f"full/none = {med['full'] / med['none']:.3f}x")
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
