"""Does pruning pay in `dlopt train -m search=bayes`? The same Bayesian sweep with and without the pruner.

Per seed: one TPE sweep with search.pruner=none and one with the pruner (default: median), both
through the real CLI (`dlopt train -m search=bayes ...`, cwd = a scratch folder) on digits with an
MLP and a small fixed space (search.params=null: only the sweeps given here). Each sweep's study.db
is read back with Optuna. Per seed and as the median over seeds it prints the best val/loss of each
sweep, the training epochs all trials ran (pruned trials count the epochs they ran), the ratio
epochs(pruned) / epochs(unpruned), and the epochs the pruned sweep needed to come within
--tolerance of the unpruned sweep's best. The goal: the pruned sweep reaches the unpruned best
(within noise) with <= 50% of its epochs. Noise: each sweep's best parameters trained again with
--noise-seeds other weight seeds on the same data split; `rerun` is the mean val/loss of those
runs (a sweep's own best, the best of many noisy values, is optimistic), `sd` their standard
deviation for the unpruned best, and the pruned sweep counts as reaching the unpruned best when its
rerun mean is within 2 sd of the unpruned one.

search.startup_trials is both TPE's random start and the median pruner's wait, so the unpruned
reference is run with the same startup_trials as the pruned sweep (same sampler, pruner aside).
With --workdir kept, a sweep already there is read back instead of run again (same study name),
so trying another pruner setting costs only its pruned sweeps.

Measured here (median epoch ratio over seeds 0-2 unless said; "within": seeds whose pruned best is within noise):
    median pruner, warmup_epochs=0 (dlopt's default, Optuna's): 24 trials 0.57 (3/3 within),
        48 trials 0.45 over 6 seeds (0.33-0.65, 6/6 within), 96 trials 0.35 (3/3)
    warmup_epochs=1 (dlopt's default before): 24 trials 0.60, 48 trials 0.50 (2/3 within), 96 trials 0.43 (1/3)
    hyperband (warmup 1): 0.56 (24 trials); --max-epochs 30: median 0.61, hyperband 0.63
Pruning pays more the longer the search: the startup trials and the first trials to finish are never
pruned, and the median of the finished trials tightens only as good trials accumulate.

    python bench/search_pruning.py [--seeds 3] [--n-trials 48] [--max-epochs 12]
        [--pruner median|hyperband] [--warmup-epochs 0] [--startup-trials 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from optuna.trial import TrialState
from sweeps import add_arguments, retrain, search, workdir_of

SPACE = ["optimizer=choice(sgd,adam)", "optimizer.lr=tag(log,interval(1e-4,3e-1))", "model.depth=range(1,4)",
         "regularization.dropout=interval(0,0.5)"]


def sweep(workdir: Path, name: str, overrides: list[str], threads: int) -> dict:
    """A search sweep called `name` (read back if its study is already complete), summarized from study.db."""
    trials, wall = search(workdir, name, overrides, threads)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    epochs = [t.user_attrs.get("epochs") or len(t.intermediate_values) for t in trials]
    # cumulative epochs and best-so-far after each trial, in trial order
    curve, total, best = [], 0, float("inf")
    for t, e in zip(trials, epochs):
        total += e
        if t.state == TrialState.COMPLETE:
            best = min(best, t.value)
        curve.append((total, best))
    return {"name": name, "best": min(t.value for t in complete), "best_params": min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value).params,
            "epochs": sum(epochs), "trials": len(trials), "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "failed": len(failed), "curve": curve, "wall": wall,
            "trial_s": sum(t.user_attrs.get("wall_time_s") or 0 for t in trials)}


def epochs_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((total for total, best in curve if best <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="sweeps with seed=0..SEEDS-1 (sampler, weights, split)")
    parser.add_argument("--n-trials", type=int, default=48)
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--pruner", default="median", choices=["median", "hyperband"])
    parser.add_argument("--warmup-epochs", type=int, default=0, help="search.warmup_epochs (dlopt default: 0)")
    parser.add_argument("--startup-trials", type=int, default=5, help="search.startup_trials (TPE and median pruner)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="'reached': pruned best <= unpruned best x (1 + tolerance)")
    parser.add_argument("--noise-seeds", type=int, default=3, help="reruns of the unpruned best with other weight seeds")
    add_arguments(parser)
    args = parser.parse_args()
    workdir = workdir_of(args, "dlopt_pruning_")
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
        split = [*fixed, f"data.split_seed={seed}"]  # the sweeps' split, other weights
        rerun, sd = retrain(workdir, ref["name"], ref["best_params"], split, args.noise_seeds, args.threads, seed)
        rerun_pruned, _ = retrain(workdir, pruned["name"], pruned["best_params"], split, args.noise_seeds, args.threads,
                                  seed)
        reach = epochs_to_reach(pruned["curve"], ref["best"] * (1 + args.tolerance))
        rows.append({"seed": seed, "ref": ref, "pruned": pruned, "sd": sd, "rerun": rerun, "rerun_pruned": rerun_pruned,
                     "reach": reach})
        print(f"seed {seed}: best {ref['best']:.4f} (none, {ref['epochs']} epochs) vs {pruned['best']:.4f} "
              f"({args.pruner}, {pruned['epochs']} epochs, {pruned['pruned']} pruned)", flush=True)

    print(f"\ndigits, model=mlp, TPE (search=bayes), {args.n_trials} trials of up to {args.max_epochs} epochs, "
          f"space: {' '.join(SPACE)}")
    print(f"pruner: search.pruner={args.pruner} search.warmup_epochs={args.warmup_epochs} "
          f"search.startup_trials={args.startup_trials}; reference: search.pruner=none, same startup_trials")
    print(f"{'seed':>6s} {'best none':>10s} {'rerun':>7s} {'sd':>7s} {'best pruned':>12s} {'gap':>8s} {'rerun':>7s} {'within':>7s} "
          f"{'epochs none':>12s} {'epochs pruned':>14s} {'ratio':>6s} {'pruned':>7s} {'to reach':>9s} {'/ none':>7s}")
    med = statistics.median

    def within(r: dict) -> bool:
        return r["rerun_pruned"] - r["rerun"] <= 2 * r["sd"]

    for r in rows:
        ref, pr = r["ref"], r["pruned"]
        reach = f"{r['reach']}" if r["reach"] is not None else "never"
        reach_ratio = f"{r['reach'] / ref['epochs']:.2f}" if r["reach"] is not None else "-"
        print(f"{r['seed']:>6d} {ref['best']:10.4f} {r['rerun']:7.4f} {r['sd']:7.4f} {pr['best']:12.4f} "
              f"{pr['best'] - ref['best']:+8.4f} {r['rerun_pruned']:7.4f} {'yes' if within(r) else 'no':>7s} "
              f"{ref['epochs']:12d} "
              f"{pr['epochs']:14d} {pr['epochs'] / ref['epochs']:6.2f} {pr['pruned']:>4d}/{pr['trials']:<2d} "
              f"{reach:>9s} {reach_ratio:>7s}")
    reaches = [r["reach"] / r["ref"]["epochs"] if r["reach"] is not None else float("inf") for r in rows]
    print(f"{'median':>6s} {med(r['ref']['best'] for r in rows):10.4f} {med(r['rerun'] for r in rows):7.4f} "
          f"{med(r['sd'] for r in rows):7.4f} {med(r['pruned']['best'] for r in rows):12.4f} "
          f"{med(r['pruned']['best'] - r['ref']['best'] for r in rows):+8.4f} {med(r['rerun_pruned'] for r in rows):7.4f} "
          f"{f'{sum(map(within, rows))}/{len(rows)}':>7s} {med(r['ref']['epochs'] for r in rows):12.0f} "
          f"{med(r['pruned']['epochs'] for r in rows):14.0f} "
          f"{med(r['pruned']['epochs'] / r['ref']['epochs'] for r in rows):6.2f} "
          f"{med(r['pruned']['pruned'] for r in rows):>7.0f} {'':>9s} {med(reaches):7.2f}")
    print(f"best: val/loss of the best completed trial; rerun, sd: mean and sd of val/loss of that trial's "
          f"parameters trained with {args.noise_seeds} other weight seeds (same split); within: rerun pruned - "
          f"rerun none <= 2 sd (sd of the none row); ratio: epochs pruned / epochs none (all trials, pruned ones count the "
          f"epochs they ran); to reach: epochs the pruned sweep ran until its best was within {args.tolerance:.0%} of "
          f"best none (the first {args.startup_trials} trials are the same in both sweeps), / none: that / epochs none")
    print(f"trial seconds none/pruned: {sum(r['ref']['trial_s'] for r in rows):.0f}/"
          f"{sum(r['pruned']['trial_s'] for r in rows):.0f}; failed trials: "
          f"{sum(r['ref']['failed'] + r['pruned']['failed'] for r in rows)}")
    print(f"wall time {time.perf_counter() - start:.0f} s; sweeps in {workdir}")


if __name__ == "__main__":
    main()
