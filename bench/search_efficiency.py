"""How many trials do Bayesian and random search need on digits, against the full grid's best?

Per seed: search=bayes (TPE) and search=random, --n-trials each, over the same space
(optimizer sgd|adam, log lr in [1e-4, 0.3], depth 1-3; MLP on digits); once: search=grid over a
discrete version of it (5 log-spaced lr values x depth 1,2,3 x sgd,adam = 30 runs), all through the
real CLI (`dlopt train -m search=... search.params=null ...`, cwd = a scratch folder). Every sweep
uses search.pruner=none (samplers only) and data.split_seed=0, so all of them score val/loss on
the same validation split; `seed` seeds the sampler and the weights. Prints each sweep's best
val/loss, its ratio to the grid's best, and the trials it needed to come within --tolerance of the
grid's best (the grid's own count follows its seeded shuffled order).

    python bench/search_efficiency.py [--seeds 3] [--n-trials 15] [--max-epochs 12] [--tolerance 0.05]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

SPACE = ["optimizer=choice(sgd,adam)", "optimizer.lr=tag(log,interval(1e-4,3e-1))", "model.depth=range(1,4)"]
GRID = ["optimizer=choice(sgd,adam)", "optimizer.lr=choice(1e-4,7.4e-4,5.5e-3,4.1e-2,3e-1)", "model.depth=range(1,4)"]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def dlopt() -> list[str]:
    """The `dlopt` command of this Python environment."""
    script = Path(sys.executable).with_name("dlopt")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dlopt"]


def command(workdir: Path, args: list[str], log: Path, threads: int) -> float:
    """Run `dlopt ARGS` in workdir, its output in log; the wall time in seconds. A failure shows the log's end."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call([*dlopt(), *args], cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise SystemExit(f"`dlopt {' '.join(args)}` exited with {code}; end of {log}:\n{tail}")
    return time.perf_counter() - start


def sweep(workdir: Path, name: str, overrides: list[str], threads: int) -> dict:
    """A search sweep called `name` (read back if its study is already complete): best-so-far after each trial."""
    db = workdir / "outputs" / "train" / "search" / name / "study.db"
    wall = command(workdir, ["train", "-m", f"search.study_name={name}", *overrides], workdir / f"{name}.log", threads)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    for t in failed:
        print(f"  {name}: trial {t.number} failed: {t.user_attrs.get('error', '?')}")
    curve, best = [], float("inf")
    for t in trials:
        if t.state == TrialState.COMPLETE:
            best = min(best, t.value)
        curve.append(best)
    return {"name": name, "best": curve[-1], "params": study.best_trial.params, "curve": curve,
            "trials": len(trials), "failed": len(failed), "wall": wall,
            "epochs": sum(t.user_attrs.get("epochs") or 0 for t in trials)}


def trials_to_reach(curve: list[float], target: float) -> int | None:
    return next((n for n, best in enumerate(curve, 1) if best <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="bayes and random sweeps with seed=0..SEEDS-1")
    parser.add_argument("--n-trials", type=int, default=15, help="trials of each bayes and random sweep")
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--tolerance", type=float, default=0.05, help="'reached': best <= grid best x (1 + tolerance)")
    parser.add_argument("--grid-seed", type=int, default=0, help="seed of the one grid sweep (order, weights)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the trials (1: fastest here)")
    parser.add_argument("--workdir", type=Path, help="scratch folder for the sweeps, kept (default: a temp folder)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dlopt_efficiency_"))
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    common = ["search.params=null", "search.pruner=none", "model=mlp", f"trainer.max_epochs={args.max_epochs}",
              "data.split_seed=0"]
    grid = sweep(workdir, f"grid_e{args.max_epochs}_s{args.grid_seed}",
                 ["search=grid", *common, f"seed={args.grid_seed}", *GRID], args.threads)
    print(f"grid: best {grid['best']:.4f} of {grid['trials']} runs {grid['params']}", flush=True)
    target = grid["best"] * (1 + args.tolerance)
    runs: dict[str, list[dict]] = {"bayes": [], "random": []}
    for seed in range(args.seeds):
        for kind in runs:
            result = sweep(workdir, f"{kind}_n{args.n_trials}_e{args.max_epochs}_s{seed}",
                           [f"search={kind}", *common, f"seed={seed}", f"search.n_trials={args.n_trials}", *SPACE],
                           args.threads)
            runs[kind].append(result)
            print(f"seed {seed} {kind}: best {result['best']:.4f} {result['params']}", flush=True)

    def reach(result: dict) -> str:
        n = trials_to_reach(result["curve"], target)
        return str(n) if n is not None else f">{result['trials']}"

    print(f"\ndigits (data.split_seed=0), model=mlp, up to {args.max_epochs} epochs, search.pruner=none; "
          f"bayes/random: {args.n_trials} trials over {' '.join(SPACE)}")
    print(f"grid: {' '.join(GRID)} ({grid['trials']} runs, seed={args.grid_seed}); "
          f"target = grid best x {1 + args.tolerance:g} = {target:.4f}")
    print(f"{'sweep':>8s} {'seed':>5s} {'trials':>7s} {'best val/loss':>14s} {'/ grid best':>12s} "
          f"{'trials to reach':>16s}  best params")
    def params(p: dict) -> str:
        return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())

    print(f"{'grid':>8s} {args.grid_seed:>5d} {grid['trials']:>7d} {grid['best']:14.4f} {1.0:12.3f} "
          f"{reach(grid):>16s}  {params(grid['params'])}")
    for kind, results in runs.items():
        for seed, r in enumerate(results):
            print(f"{kind:>8s} {seed:>5d} {r['trials']:>7d} {r['best']:14.4f} {r['best'] / grid['best']:12.3f} "
                  f"{reach(r):>16s}  {params(r['params'])}")
    print("median over seeds:")
    for kind, results in runs.items():
        steps = [trials_to_reach(r["curve"], target) for r in results]
        hit = [s for s in steps if s is not None]
        print(f"{kind:>8s} {'':>5s} {args.n_trials:>7d} {statistics.median(r['best'] for r in results):14.4f} "
              f"{statistics.median(r['best'] / grid['best'] for r in results):12.3f} "
              f"{(str(statistics.median(hit)) if hit else '-'):>16s}  reached in {len(hit)}/{len(results)} seeds")
    for k in (5, 10):
        if k <= args.n_trials:
            line = "  ".join(f"{kind} {statistics.median(r['curve'][k - 1] for r in results):.4f}"
                             for kind, results in runs.items())
            print(f"median best after {k} trials: {line}  (grid: {grid['curve'][k - 1]:.4f})")
    failed = grid["failed"] + sum(r["failed"] for results in runs.values() for r in results)
    print(f"failed trials: {failed}; wall time {time.perf_counter() - start:.0f} s; sweeps in {workdir}")


if __name__ == "__main__":
    main()
