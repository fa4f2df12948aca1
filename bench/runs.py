"""How long `dlopt runs` takes to list many runs: 1000 run folders (a real run's .hydra files and metrics.json, with
other overrides and numbers), listed by dlopt.runs.listing in this process and by the installed `dlopt runs`.

The reference is the least any listing must do: walk the folders and parse each run's metrics.json and
overrides.yaml. Prints seconds (median of the repeats) and the ratio to that reference, measured in the same script.

    python bench/runs.py [--runs 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml


def dlopt(*args: str, cwd: str) -> str:
    return subprocess.run(["dlopt", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def make_runs(root: Path, count: int, cwd: str) -> None:
    """`count` run folders under root/multirun/N: the composed train config and Hydra's record of it, as
    `dlopt train --cfg` prints them, and a metrics.json of the usual keys."""
    config = dlopt("train", "--cfg", "job", cwd=cwd)
    hydra = dlopt("train", "--cfg", "hydra", cwd=cwd)
    for n in range(count):
        run = root / "multirun" / str(n)
        (run / ".hydra").mkdir(parents=True)
        lr = 10 ** (-4 + 3 * (n % 97) / 97)
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"optimizer.lr={lr}", f"seed={n % 5}"]))
        (run / ".hydra" / "config.yaml").write_text(config)
        (run / ".hydra" / "hydra.yaml").write_text(hydra)
        metrics = {"objective": 0.1 + (n % 13) / 100, "mode": "min", "monitor": "val/loss", "test/acc": 0.9,
                   "test/loss": 0.2, "test/ece": 0.02, "epochs": 30, "wall_time_s": 9.5, "params": 94186,
                   "pruned": False, "best_epoch": 28}
        (run / "metrics.json").write_text(json.dumps(metrics, indent=2))


def reference(root: Path) -> int:
    """Walk and parse what every listing must: each run's metrics.json and overrides.yaml."""
    count = 0
    for folder, subfolders, _ in os.walk(root):
        if ".hydra" in subfolders:
            json.loads((Path(folder) / "metrics.json").read_text())
            yaml.load((Path(folder) / ".hydra" / "overrides.yaml").read_text(), Loader=yaml.CSafeLoader)
            count += 1
        subfolders[:] = [s for s in subfolders if s != ".hydra"]
    return count


def timed(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from dlopt.runs import listing

    with tempfile.TemporaryDirectory() as cwd:
        root = Path(cwd) / "outputs" / "train"
        make_runs(root, args.runs, cwd)
        floor = timed(lambda: reference(root), args.repeats)
        found = listing.collect(root)
        assert len(found) == args.runs, len(found)
        listed = timed(lambda: listing.render(listing.order(listing.collect(root), None), root, "table"), args.repeats)
        command = timed(lambda: dlopt("runs", f"path={root}", cwd=cwd), max(1, args.repeats // 2))
        empty = Path(cwd) / "empty" / "multirun" / "0"
        make_runs(empty.parents[1], 1, cwd)
        startup = timed(lambda: dlopt("runs", f"path={empty.parents[1]}", cwd=cwd), max(1, args.repeats // 2))
    print(f"{args.runs} runs; seconds, median of {args.repeats}\n")
    print("| what | seconds | ratio to the reference |")
    print("|---|---:|---:|")
    print(f"| reference: walk, parse each metrics.json and overrides.yaml | {floor:.3f} | 1.00 |")
    print(f"| dlopt.runs.listing: collect, sort, format the table | {listed:.3f} | {listed / floor:.2f} |")
    print(f"| `dlopt runs path=...` (the whole command) | {command:.2f} | {command / floor:.1f} |")
    print(f"| `dlopt runs` of 1 run (starting Python, Hydra) | {startup:.2f} | |")


if __name__ == "__main__":
    main()
