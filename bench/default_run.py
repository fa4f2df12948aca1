"""The default `dlopt train` end to end: test accuracy on digits and wall time, over several seeds.

Runs the installed command in a temporary folder, as a user would, and reads each run's
metrics.json. Also prints the share of the wall time spent training (the rest is starting
Python and importing torch and Lightning).

    python bench/default_run.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            subprocess.run(["dlopt", "train", f"seed={seed}"], cwd=tmp, check=True, capture_output=True)
            wall = time.perf_counter() - start
            metrics = json.loads(next(Path(tmp).glob("outputs/train/*/*/metrics.json")).read_text())
        rows.append((seed, metrics["test/acc"], wall, metrics["wall_time_s"], metrics["epochs"]))
        print(f"seed {seed}: test/acc {metrics['test/acc']:.4f}  wall {wall:5.1f} s  "
              f"(training {metrics['wall_time_s']:.1f} s, {metrics['epochs']} epochs)")
    acc = statistics.median(r[1] for r in rows)
    wall = statistics.median(r[2] for r in rows)
    share = statistics.median(r[3] / r[2] for r in rows)
    print(f"median test/acc {acc:.4f} (target >= 0.97), median wall time {wall:.1f} s, "
          f"training share of wall time {share:.2f}")


if __name__ == "__main__":
    main()
