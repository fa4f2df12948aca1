"""Does pruning pay in `dlopt train -m search=bayes`? The same Bayesian sweep with and without the pruner.

Per seed: one TPE sweep with search.pruner=none and one with the pruner (default: median), both
through the real CLI (`dlopt train -m search=bayes ...`, cwd = a scratch folder) on digits with an
MLP and a small fixed space (search.params=null: only the sweeps given here). Each sweep's study.db
is read back with Optuna. Per seed and as the median over seeds it prints the best val/loss of each
sweep, the training epochs all trials ran (pruned trials count the epochs they ran), the ratio
epochs(pruned) / epochs(unpruned), and the epochs the pruned sweep needed to come within
--tolerance of the unpruned sweep's best. The goal: the pruned sweep reaches the unpruned best
(within noise) with <= 50% of its epochs. Noise: the unpruned sweep's best parameters trained again
with --noise-seeds other weight seeds on the same data split; `noise sd` is the standard deviation
of val/loss over those runs and the sweep's own.

search.startup_trials is both TPE's random start and the median pruner's wait, so the unpruned
reference is run with the same startup_trials as the pruned sweep (same sampler, pruner aside).
With --workdir kept, a sweep already there is read back instead of run again (same study name),
so trying another pruner setting costs only its pruned sweeps.

    python bench/search_pruning.py [--seeds 3] [--n-trials 24] [--max-epochs 12]
        [--pruner median|hyperband] [--warmup-epochs 2] [--startup-trials 5] [--workdir DIR]
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

SPACE = ["optimizer=choice(sgd,adam)", "optimizer.lr=tag(log,interval(1e-4,3e-1))", "model.depth=range(1,4)",
         "regularization.dropout=interval(0,0.5)"]
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
    """A search sweep called `name` (read back if its study is already complete), summarized from study.db."""
    db = workdir / "outputs" / "train" / "search" / name / "study.db"
    wall = command(workdir, ["train", "-m", f"search.study_name={name}", *overrides], workdir / f"{name}.log", threads)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    for t in failed:
        print(f"  {name}: trial {t.number} failed: {t.user_attrs.get('error', '?')}")
    epochs = [t.user_attrs.get("epochs") or len(t.intermediate_values) for t in trials]
    # cumulative epochs and best-so-far after each trial, in trial order
    curve, total, best = [], 0, float("inf")
    for t, e in zip(trials, epochs):
        total += e
        if t.state == TrialState.COMPLETE:
            best = min(best, t.value)
        curve.append((total, best))
    return {"name": name, "best": min(t.value for t in complete), "best_params": study.best_trial.params,
            "epochs": sum(epochs), "trials": len(trials), "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "failed": len(failed), "curve": curve, "wall": wall,
            "trial_s": sum(t.user_attrs.get("wall_time_s") or 0 for t in trials)}


def noise(workdir: Path, seed: int, ref: dict, fixed: list[str], n: int, threads: int) -> float:
    """Standard deviation of val/loss of the best parameters over weight seeds (the sweep's and n others), same split."""
    import json

    values = [ref["best"]]
    for k in range(1, n + 1):
        run = workdir / "noise" / f"{ref['name']}_w{k}"
        if not (run / "metrics.json").is_file():
            params = [f"{key}={value}" for key, value in ref["best_params"].items()]
            command(workdir, ["train", *fixed, *params, f"seed={seed + 1000 * k}", f"data.split_seed={seed}",
                              "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
                              f"hydra.run.dir={run}"], workdir / f"{run.name}.log", threads)
        values.append(json.loads((run / "metrics.json").read_text())["objective"])
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def epochs_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((total for total, best in curve if best <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="sweeps with seed=0..SEEDS-1 (sampler, weights, split)")
    parser.add_argument("--n-trials", type=int, default=24)
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--pruner", default="median", choices=["median", "hyperband"])
    parser.add_argument("--warmup-epochs", type=int, default=2, help="search.warmup_epochs")
    parser.add_argument("--startup-trials", type=int, default=5, help="search.startup_trials (TPE and median pruner)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="'reached': pruned best <= unpruned best x (1 + tolerance)")
    parser.add_argument("--noise-seeds", type=int, default=2, help="reruns of the unpruned best with other weight seeds")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the trials (1: fastest here)")
    parser.add_argument("--workdir", type=Path, help="scratch folder for the sweeps, kept (default: a temp folder)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dlopt_pruning_"))
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    fixed = ["model=mlp", f"trainer.max_epochs={args.max_epochs}"]
    knobs = [f"search.startup_trials={args.startup_trials}", f"search.warmup_epochs={args.warmup_epochs}"]
    common = ["search=bayes", "search.params=null", f"search.n_trials={args.n_trials}", *fixed, *SPACE]
    tag = f"{args.pruner}_w{args.warmup_epochs}_st{args.startup_trials}"
    rows = []
    for seed in range(args.seeds):
        ref = sweep(workdir, f"s{seed}_n{args.n_trials}_e{args.max_epochs}_none_st{args.startup_trials}",
                    [*common, f"seed={seed}", "search.pruner=none", *knobs], args.threads)
        pruned = sweep(workdir, f"s{seed}_n{args.n_trials}_e{args.max_epochs}_{tag}",
                       [*common, f"seed={seed}", f"search.pruner={args.pruner}", *knobs], args.threads)
        sd = noise(workdir, seed, ref, fixed, args.noise_seeds, args.threads)
        reach = epochs_to_reach(pruned["curve"], ref["best"] * (1 + args.tolerance))
        rows.append({"seed": seed, "ref": ref, "pruned": pruned, "sd": sd, "reach": reach})
        print(f"seed {seed}: best {ref['best']:.4f} (none, {ref['epochs']} epochs) vs {pruned['best']:.4f} "
              f"({args.pruner}, {pruned['epochs']} epochs, {pruned['pruned']} pruned)", flush=True)

    print(f"\ndigits, model=mlp, TPE (search=bayes), {args.n_trials} trials of up to {args.max_epochs} epochs, "
          f"space: {' '.join(SPACE)}")
    print(f"pruner: search.pruner={args.pruner} search.warmup_epochs={args.warmup_epochs} "
          f"search.startup_trials={args.startup_trials}; reference: search.pruner=none, same startup_trials")
    print(f"{'seed':>6s} {'best none':>10s} {'best pruned':>12s} {'gap':>8s} {'noise sd':>9s} {'epochs none':>12s} "
          f"{'epochs pruned':>14s} {'ratio':>6s} {'n pruned':>9s} {'epochs to reach':>16s} {'reach ratio':>12s}")
    for r in rows:
        ref, pr = r["ref"], r["pruned"]
        reach = f"{r['reach']}" if r["reach"] is not None else "never"
        reach_ratio = f"{r['reach'] / ref['epochs']:.2f}" if r["reach"] is not None else "-"
        print(f"{r['seed']:>6d} {ref['best']:10.4f} {pr['best']:12.4f} {pr['best'] - ref['best']:+8.4f} "
              f"{r['sd']:9.4f} {ref['epochs']:12d} {pr['epochs']:14d} {pr['epochs'] / ref['epochs']:6.2f} "
              f"{pr['pruned']:>4d}/{pr['trials']:<4d} {reach:>16s} {reach_ratio:>12s}")
    med = statistics.median
    reaches = [r["reach"] / r["ref"]["epochs"] if r["reach"] is not None else float("inf") for r in rows]
    print(f"{'median':>6s} {med(r['ref']['best'] for r in rows):10.4f} {med(r['pruned']['best'] for r in rows):12.4f} "
          f"{med(r['pruned']['best'] - r['ref']['best'] for r in rows):+8.4f} {med(r['sd'] for r in rows):9.4f} "
          f"{med(r['ref']['epochs'] for r in rows):12.0f} {med(r['pruned']['epochs'] for r in rows):14.0f} "
          f"{med(r['pruned']['epochs'] / r['ref']['epochs'] for r in rows):6.2f} "
          f"{med(r['pruned']['pruned'] for r in rows):>9.0f} {'':>16s} {med(reaches):12.2f}")
    within = sum(r["pruned"]["best"] <= r["ref"]["best"] + max(2 * r["sd"], args.tolerance * r["ref"]["best"])
                 for r in rows)
    print(f"pruned best within noise (gap <= max(2 noise sd, {args.tolerance:.0%} of best)): {within}/{len(rows)} "
          f"seeds; trial seconds none/pruned: {sum(r['ref']['trial_s'] for r in rows):.0f}/"
          f"{sum(r['pruned']['trial_s'] for r in rows):.0f}; failed trials: "
          f"{sum(r['ref']['failed'] + r['pruned']['failed'] for r in rows)}")
    print(f"'epochs to reach': epochs the pruned sweep ran until its best was within {args.tolerance:.0%} of the "
          f"unpruned best; reach ratio = that / epochs none")
    print(f"wall time {time.perf_counter() - start:.0f} s; sweeps in {workdir}")


if __name__ == "__main__":
    main()
