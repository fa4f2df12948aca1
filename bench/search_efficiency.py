"""How many trials do Bayesian and random search need on digits, against the full grid's best?

Per seed: search=bayes (TPE) and search=random, --n-trials each, over the same space
(optimizer sgd|adam, log lr in [1e-4, 0.3], depth 1-3; MLP on digits); once: search=grid over a
discrete version of it (5 log-spaced lr values x depth 1,2,3 x sgd,adam = 30 runs), all through the
real CLI (`dlopt train -m search=... search.params=null ...`, cwd = a scratch folder). Every sweep
uses search.pruner=none (samplers only) and data.split_seed=0, so all of them score val/loss on
the same validation split; `seed` seeds the sampler and the weights. Prints each sweep's best
val/loss, its ratio to the grid's best, and the trials it needed to come within --tolerance of the
grid's best (the grid's own count follows its seeded shuffled order). The grid's best parameters
are also trained with --noise-seeds other weight seeds: the spread of val/loss from weight
initialisation alone, against which a few % of difference can be read. TPE's first
search.startup_trials (5) trials are the random sampler's with the same seed, so the two sweeps of a
seed share their first 5 trials.

    python bench/search_efficiency.py [--seeds 3] [--n-trials 15] [--max-epochs 12] [--tolerance 0.05 0.10]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

from optuna.trial import TrialState
from sweeps import add_arguments, retrain, search, workdir_of

SPACE = ["optimizer=choice(sgd,adam)", "optimizer.lr=tag(log,interval(1e-4,3e-1))", "model.depth=range(1,4)"]
GRID = ["optimizer=choice(sgd,adam)", "optimizer.lr=choice(1e-4,7.4e-4,5.5e-3,4.1e-2,3e-1)", "model.depth=range(1,4)"]


def sweep(workdir: Path, name: str, overrides: list[str], threads: int) -> dict:
    """A search sweep called `name` (read back if its study is already complete): best-so-far after each trial."""
    trials, wall = search(workdir, name, overrides, threads)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    curve, best = [], float("inf")
    for t in trials:
        if t.state == TrialState.COMPLETE:
            best = min(best, t.value)
        curve.append(best)
    return {"name": name, "best": curve[-1], "params": min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value).params, "curve": curve,
            "trials": len(trials), "failed": len(failed), "wall": wall,
            "epochs": sum(t.user_attrs.get("epochs") or 0 for t in trials)}


def trials_to_reach(curve: list[float], target: float) -> int | None:
    return next((n for n, best in enumerate(curve, 1) if best <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="bayes and random sweeps with seed=0..SEEDS-1")
    parser.add_argument("--n-trials", type=int, default=15, help="trials of each bayes and random sweep")
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--tolerance", type=float, nargs="+", default=[0.05, 0.10],
                        help="'reached': best <= grid best x (1 + tolerance); one column each")
    parser.add_argument("--grid-seed", type=int, default=0, help="seed of the one grid sweep (order, weights)")
    parser.add_argument("--noise-seeds", type=int, default=3, help="reruns of the grid's best with other weight seeds")
    add_arguments(parser)
    args = parser.parse_args()
    workdir = workdir_of(args, "dlopt_efficiency_")
    start = time.perf_counter()
    fixed = ["model=mlp", f"trainer.max_epochs={args.max_epochs}", "data.split_seed=0"]
    common = ["search.params=null", "search.pruner=none", *fixed]
    grid = sweep(workdir, f"grid_e{args.max_epochs}_s{args.grid_seed}",
                 ["search=grid", *common, f"seed={args.grid_seed}", *GRID], args.threads)
    print(f"grid: best {grid['best']:.4f} of {grid['trials']} runs {grid['params']}", flush=True)
    rerun, sd = retrain(workdir, grid["name"], grid["params"], fixed, args.noise_seeds, args.threads)
    runs: dict[str, list[dict]] = {"bayes": [], "random": []}
    for seed in range(args.seeds):
        for kind in runs:
            result = sweep(workdir, f"{kind}_n{args.n_trials}_e{args.max_epochs}_s{seed}",
                           [f"search={kind}", *common, f"seed={seed}", f"search.n_trials={args.n_trials}", *SPACE],
                           args.threads)
            runs[kind].append(result)
            print(f"seed {seed} {kind}: best {result['best']:.4f} {result['params']}", flush=True)

    targets = [grid["best"] * (1 + tol) for tol in args.tolerance]
    heads = [f"to {tol:.0%}" for tol in args.tolerance]

    def steps(result: dict) -> list[float]:
        return [trials_to_reach(result["curve"], t) or math.inf for t in targets]

    def text(n: float, trials: int) -> str:
        return f">{trials}" if n == math.inf else f"{n:g}"

    def params(p: dict) -> str:
        return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())

    print(f"\ndigits (data.split_seed=0), model=mlp, up to {args.max_epochs} epochs, search.pruner=none; "
          f"bayes/random: {args.n_trials} trials over {' '.join(SPACE)}")
    print(f"grid: {' '.join(GRID)} ({grid['trials']} runs, seed={args.grid_seed}); its best's parameters over "
          f"{args.noise_seeds} other weight seeds: val/loss {rerun:.4f} +- {sd:.4f} (sd)")
    print(f"{'sweep':>8s} {'seed':>5s} {'trials':>7s} {'best val/loss':>14s} {'/ grid best':>12s} "
          + " ".join(f"{h:>7s}" for h in heads) + "  best params")
    print(f"{'grid':>8s} {args.grid_seed:>5d} {grid['trials']:>7d} {grid['best']:14.4f} {1.0:12.3f} "
          + " ".join(f"{text(n, grid['trials']):>7s}" for n in steps(grid)) + f"  {params(grid['params'])}")
    for kind, results in runs.items():
        for seed, r in enumerate(results):
            print(f"{kind:>8s} {seed:>5d} {r['trials']:>7d} {r['best']:14.4f} {r['best'] / grid['best']:12.3f} "
                  + " ".join(f"{text(n, r['trials']):>7s}" for n in steps(r)) + f"  {params(r['params'])}")
    for kind, results in runs.items():
        reached = [sum(steps(r)[i] < math.inf for r in results) for i in range(len(targets))]
        print(f"{kind:>8s} {'med.':>5s} {args.n_trials:>7d} {statistics.median(r['best'] for r in results):14.4f} "
              f"{statistics.median(r['best'] / grid['best'] for r in results):12.3f} "
              + " ".join(f"{text(statistics.median(steps(r)[i] for r in results), args.n_trials):>7s}"
                         for i in range(len(targets)))
              + "  reached in " + ", ".join(f"{n}/{len(results)}" for n in reached) + " seeds")
    print(f"to N%: trials a sweep ran until its best val/loss was within N% of the grid's best (grid: in its shuffled "
          f"order); med.: median over seeds (a miss counts as more than {args.n_trials})")
    for k in (5, 10, 15, 20):
        if k <= args.n_trials:
            line = "  ".join(f"{kind} {statistics.median(r['curve'][k - 1] for r in results):.4f}"
                             for kind, results in runs.items())
            print(f"median best after {k:2d} trials: {line}  (grid in its order: {grid['curve'][k - 1]:.4f})")
    failed = grid["failed"] + sum(r["failed"] for results in runs.values() for r in results)
    epochs = grid["epochs"], *(sum(r["epochs"] for r in results) for results in runs.values())
    print(f"epochs trained: grid {epochs[0]}, bayes {epochs[1]}, random {epochs[2]} (all seeds); failed trials: {failed}")
    print(f"wall time {time.perf_counter() - start:.0f} s; sweeps in {workdir}")


if __name__ == "__main__":
    main()
