"""Does `dlopt ensemble` (an ensemble of finished runs, combined from their saved predictions.npz) beat its members
on MNIST-1D, and by how much against the spread between seeds? Only ensembles of finished runs are measured: dlopt
has no bagging, boosting or stacking (yet), so none of those is here.

1. Deep ensembles of seeds. For each base seed s in 0, 1, 2 (--base-seeds): one sweep of --members runs of the
   default model (cnn), `dlopt train -m seed=10s+0,...,10s+4 data=mnist1d data.split_seed=s
   trainer.max_epochs=--epochs` (early stopping may end a run earlier). data.split_seed=s generates MNIST-1D with
   that seed and splits it the same way for every run of the sweep (without it every seed gets other data, and
   `dlopt ensemble` refuses the runs); so the three base seeds are three draws of the data (4000 train+val, 1000
   test) as well as of the weights. Then `dlopt ensemble runs=SWEEP ensemble.select=top_k ensemble.k=5` (the plain
   average of the 5 runs: a deep ensemble) and `ensemble.select=greedy` (Caruana's selection on validation NLL, 25
   rounds with replacement). Read from ensemble.json: every member's test acc / NLL / ECE (recomputed by the command
   from predictions.npz), the mean member (the unweighted mean over the 5 runs), the best member (lowest val NLL),
   the ensemble's scores, and the test NLL of the top_k curve (best 1, 2, ..., 5 runs by val/loss): curve[0] against
   curve[-1] is the NLL gain from 1 to 5 members, set beside the ~15% from 1 to 10 members that deep-ensemble papers
   report on ImageNet (Lakshminarayanan et al. 2017). The seed spread is the sd (ddof=1) of the members' test
   accuracy.
2. Greedy selection from a search: one `dlopt train -m search=random search.n_trials=20 data=mnist1d
   data.split_seed=0 trainer.max_epochs=8` (random search over optimizer, lr, batch size, weight decay, dropout,
   depth and activation: conf/search/random.yaml; seed=0 seeds the sampler and the weights), then
   `dlopt ensemble runs=SEARCH ensemble.select=greedy`: the search's best single run (lowest val NLL) against the
   greedy ensemble, on test.

Every command is the installed `dlopt` in a scratch folder, one command at a time, OMP_NUM_THREADS=1; trainings
two side by side (hydra/launcher=joblib hydra.launcher.n_jobs=2, the search with search.n_jobs=2), 2 cores here.
At the end: markdown tables and the targets as PASS/FAIL lines.

    python bench/ensembles.py [--quick] [--keep DIR] [--epochs 20] [--members 5] [--trials 20] [--search-epochs 8]

--keep DIR keeps the sweeps and reuses those that finished with the same command; --quick: base seeds 0 and 1, 3
members of 10 epochs each, a search of 8 trials of 4 epochs (about 2 minutes instead of 7-9 on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from installed import QUIET, call, dlopt, version  # bench/installed.py

PAPER_GAIN = 0.15  # deep ensembles on ImageNet: test NLL ~15% lower with 10 members than with 1
_start = time.perf_counter()


def say(text: str) -> None:
    print(f"[{time.perf_counter() - _start:5.0f} s] {text}", flush=True)


def confidence(folder: Path) -> float:
    """The mean top-class probability on the test split of a run's or an ensemble's predictions.npz (above the
    accuracy: overconfident, below: underconfident)."""
    with np.load(folder / "predictions.npz") as arrays:
        return float(arrays["test_probabilities"].max(1).mean())


def nudge(members: list[dict], rounds: int = 25) -> tuple[str, float, float]:
    """Why greedy kept one run: the best run's val NLL, and the lowest val NLL of the best run mixed (rounds-1):1 with
    another run (greedy's smallest step), with that run's name."""
    def nll(p: np.ndarray, y: np.ndarray) -> float:
        return float(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-12)).mean())

    arrays = {m["name"]: np.load(Path(m["run"]) / "predictions.npz") for m in members}
    best = min(members, key=lambda m: m["val"]["nll"])["name"]
    labels, top = arrays[best]["val_labels"], arrays[best]["val_probabilities"].astype(np.float64)
    mixes = {name: nll(((rounds - 1) * top + a["val_probabilities"]) / rounds, labels)
             for name, a in arrays.items() if name != best}
    other = min(mixes, key=mixes.get)
    return other, nll(top, labels), mixes[other]


def sweep(root: Path, name: str, overrides: list[str]) -> tuple[Path, float | None]:
    """`dlopt train -m OVERRIDES` into root/NAME, two trainings at once; its folder and wall time (None: a finished
    sweep of the same command found in --keep)."""
    folder, marker = root / name, root / f"{name}.done.json"
    argv = [*dlopt(), "train", "-m", *overrides, *QUIET, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={folder}"]
    if marker.is_file() and json.loads(marker.read_text()) == argv and folder.is_dir():
        say(f"{name}: finished sweep found in {folder}")
        return folder, None
    shutil.rmtree(folder, ignore_errors=True)
    marker.unlink(missing_ok=True)
    seconds = call(argv, root / f"{name}.log")
    marker.write_text(json.dumps(argv))
    say(f"{name}: trained ({seconds:.0f} s) dlopt train -m {' '.join(overrides)}")
    return folder, seconds


def ensemble(root: Path, runs: Path, name: str, overrides: list[str]) -> tuple[dict, float]:
    """`dlopt ensemble runs=RUNS OVERRIDES` into root/ensemble/NAME: its ensemble.json and wall time."""
    folder = root / "ensemble" / name
    shutil.rmtree(folder, ignore_errors=True)
    seconds = call([*dlopt(), "ensemble", f"runs={runs}", *overrides, f"hydra.run.dir={folder}"],
                   root / "ensemble.log")
    summary = json.loads((folder / "ensemble.json").read_text())
    summary["ensemble"]["test"]["confidence"] = confidence(folder)
    for member in summary["members"]:
        member["test"]["confidence"] = confidence(Path(member["run"]))
    return summary, seconds


def mean_member(members: list[dict]) -> dict[str, float]:
    return {k: statistics.mean(m["test"][k] for m in members) for k in ("acc", "nll", "ece", "confidence")}


def best_member(members: list[dict]) -> dict:
    return min(members, key=lambda m: m["val"]["nll"])


def epochs_of(members: list[dict]) -> list[int]:
    return [json.loads((Path(m["run"]) / "metrics.json").read_text())["epochs"] for m in members]


def cells(s: dict[str, float | None]) -> str:
    return " | ".join("-" if s[k] is None else f"{s[k]:.4f}" for k in ("acc", "nll", "ece", "confidence"))


def deltas(a: dict[str, float], b: dict[str, float]) -> str:
    return " | ".join(f"{a[k] - b[k]:+.4f}" for k in ("acc", "nll", "ece"))


def weights(summary: dict) -> str:
    taken = sorted((m for m in summary["members"] if m["weight"]), key=lambda m: -m["weight"])
    return ", ".join(f"{m['name']}x{m['weight']:g}" for m in taken)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="where sweeps go, kept; finished ones are reused (default: a temp "
                                                  "folder, removed)")
    parser.add_argument("--quick", action="store_true", help="base seeds 0 and 1, 3 members of 10 epochs, a search "
                                                             "of 8 trials x 4 epochs")
    parser.add_argument("--epochs", type=int, default=20, help="trainer.max_epochs of the seed sweeps' runs")
    parser.add_argument("--members", type=int, default=5, help="runs (seeds) per base seed, all averaged")
    parser.add_argument("--base-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=20, help="search.n_trials of the random search")
    parser.add_argument("--search-epochs", type=int, default=8, help="trainer.max_epochs of the search's trials")
    args = parser.parse_args()
    if args.quick:
        args.base_seeds, args.members, args.epochs, args.trials, args.search_epochs = [0, 1], 3, 10, 8, 4
    scratch = tempfile.TemporaryDirectory(prefix="dlopt_ensembles_") if args.keep is None else None
    root = (args.keep or Path(scratch.name)).resolve()
    root.mkdir(parents=True, exist_ok=True)
    at = version()  # the figures are of the code at the start
    say(f"dlopt at {at}")
    say(f"sweeps in {root}; one command at a time, two trainings at once, OMP_NUM_THREADS=1")
    train_seconds, ensemble_seconds, reused = 0.0, [], 0

    # 1. deep ensembles: per base seed, a sweep of seeds on the same data, averaged (top_k) and selected (greedy)
    seeds = {}
    for base in args.base_seeds:
        runs = ",".join(str(10 * base + i) for i in range(args.members))
        folder, seconds = sweep(root, f"seeds_s{base}_e{args.epochs}",
                                [f"seed={runs}", "data=mnist1d", f"data.split_seed={base}",
                                 f"trainer.max_epochs={args.epochs}"])
        train_seconds, reused = train_seconds + (seconds or 0), reused + (seconds is None)
        average, t1 = ensemble(root, folder, f"s{base}_top_k", ["ensemble.select=top_k", f"ensemble.k={args.members}"])
        greedy, t2 = ensemble(root, folder, f"s{base}_greedy", ["ensemble.select=greedy"])
        ensemble_seconds += [t1, t2]
        if len(average["members"]) != args.members:
            raise SystemExit(f"seed sweep {base}: {len(average['members'])} usable runs of {args.members} "
                             f"(skipped: {average['skipped']})")
        seeds[base] = {"average": average, "greedy": greedy, "epochs": epochs_of(average["members"])}
        say(f"base seed {base}: top_k test nll {average['ensemble']['test']['nll']:.4f} acc "
            f"{average['ensemble']['test']['acc']:.4f}; greedy nll {greedy['ensemble']['test']['nll']:.4f} "
            f"({weights(greedy)})")

    # 2. greedy ensemble selection from a random search
    folder, seconds = sweep(root, f"search_n{args.trials}_e{args.search_epochs}",
                            ["search=random", f"search.n_trials={args.trials}", "search.n_jobs=2", "seed=0",
                             "data=mnist1d", "data.split_seed=0", f"trainer.max_epochs={args.search_epochs}"])
    train_seconds, reused = train_seconds + (seconds or 0), reused + (seconds is None)
    searched, t3 = ensemble(root, folder, "search_greedy", ["ensemble.select=greedy"])
    ensemble_seconds.append(t3)
    say(f"search: greedy test nll {searched['ensemble']['test']['nll']:.4f} ({weights(searched)})")

    # the report
    print()
    print(f"dlopt at {at}" + ("" if version() == at else f" (now {version()}: the code changed during the bench)"))
    print(f"data=mnist1d (1000 test samples), model=cnn; trainings two at once (joblib), OMP_NUM_THREADS=1, 2 cores; "
          f"training {train_seconds:.0f} s" + (f" ({reused} of {len(seeds) + 1} sweeps reused from --keep)" if reused
                                                else "")
          + f", `dlopt ensemble` {statistics.median(ensemble_seconds):.1f} s per call (median of "
            f"{len(ensemble_seconds)}, the process's wall time)")

    print(f"\n### 1. Deep ensembles: {args.members} seeds per base seed s (`dlopt train -m seed=10s+0..10s+"
          f"{args.members - 1} data=mnist1d data.split_seed=s trainer.max_epochs={args.epochs}`), test split\n")
    print("| s | what | test acc | test NLL | test ECE | mean confidence | |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for base, found in seeds.items():
        members = found["average"]["members"]
        accs = [m["test"]["acc"] for m in members]
        best = best_member(members)
        epochs = found["epochs"]
        print(f"| {base} | members: mean | {cells(mean_member(members))} | acc sd {statistics.stdev(accs):.4f}, "
              f"range {min(accs):.3f}-{max(accs):.3f}; epochs {min(epochs)}-{max(epochs)} |")
        print(f"| {base} | best member by val NLL | {cells(best['test'])} | run {best['name']} "
              f"(seed {10 * base + int(best['name'])}) |")
        print(f"| {base} | **average of {args.members}** (top_k) | {cells(found['average']['ensemble']['test'])} | |")
        print(f"| {base} | greedy, 25 rounds | {cells(found['greedy']['ensemble']['test'])} | "
              f"{weights(found['greedy'])} |")

    print(f"\n| s | average - mean member: acc | NLL | ECE | average - best member: acc | NLL | ECE | "
          f"member acc sd | NLL gain 1 -> {args.members} (curve) | NLL gain vs mean member | greedy - average: NLL |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    gains, nll_wins, acc_wins = [], 0, 0
    for base, found in seeds.items():
        average, members = found["average"], found["average"]["members"]
        test, mean = average["ensemble"]["test"], mean_member(members)
        sd = statistics.stdev(m["test"]["acc"] for m in members)
        curve = average["curve"]
        gain = (curve[0]["nll"] - curve[-1]["nll"]) / curve[0]["nll"]
        gains.append(gain)
        nll_wins += test["nll"] < mean["nll"]
        acc_wins += test["acc"] - mean["acc"] > sd
        print(f"| {base} | {deltas(test, mean)} | {deltas(test, best_member(members)['test'])} | {sd:.4f} | "
              f"{gain:.1%} ({curve[0]['nll']:.4f} -> {curve[-1]['nll']:.4f}) | "
              f"{(mean['nll'] - test['nll']) / mean['nll']:.1%} | "
              f"{found['greedy']['ensemble']['test']['nll'] - test['nll']:+.4f} |")
    print("\n(mean confidence: the mean top-class probability, below the accuracy when underconfident; greedy's "
          "weights: run x times chosen; differences: the ensemble minus the member, so negative NLL and ECE and "
          "positive acc are the ensemble's gains; the curve is ensemble.json's for top_k: curve[0] is the best run by "
          f"val/loss alone, curve[-1] the average of all {args.members})")
    median_gain = statistics.median(gains)
    print(f"\nTest NLL gain from 1 to {args.members} members (the top_k curve): median {median_gain:.1%} "
          f"({', '.join(f'{g:.1%}' for g in gains)}) over {len(gains)} base seeds. Deep-ensemble papers report "
          f"~{PAPER_GAIN:.0%} from 1 to 10 members on ImageNet: the gain is "
          + ("larger" if median_gain > PAPER_GAIN else "smaller")
          + f" here, with {args.members} members instead of 10, and the 1-member ensemble here is the best of "
            f"{args.members} by val/loss, not a random run.")

    print(f"\n### 2. Greedy selection from a random search (`dlopt train -m search=random search.n_trials={args.trials}"
          f" data=mnist1d data.split_seed=0 trainer.max_epochs={args.search_epochs}`), test split\n")
    members = searched["members"]
    best = best_member(members)
    taken = [m for m in members if m["weight"]]
    usable = sorted(m["val"]["nll"] for m in members)
    print("| what | test acc | test NLL | test ECE | mean confidence | |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| best single run by val NLL | {cells(best['test'])} | trial {best['name']}, val NLL "
          f"{best['val']['nll']:.4f} |")
    print(f"| mean of the runs greedy took (unweighted) | {cells(mean_member(taken))} | {len(taken)} of "
          f"{len(members)} runs |")
    print(f"| **greedy ensemble**, 25 rounds | {cells(searched['ensemble']['test'])} | {weights(searched)} |")
    print(f"\ngreedy - best single run: {deltas(searched['ensemble']['test'], best['test']).replace(' | ', ', ')} "
          f"(acc, NLL, ECE); {len(members)} usable trials of {args.trials} ({len(searched['skipped'])} skipped"
          + (": " + "; ".join(f"{Path(s['run']).name} {s['why']}" for s in searched['skipped']) if searched['skipped']
             else "") + f"); val NLL of the trials: best {', '.join(f'{v:.3f}' for v in usable[:3])}, median "
          f"{statistics.median(usable):.3f}, worst {usable[-1]:.3f}")
    if len(taken) == 1:
        other, alone, mixed = nudge(members)
        print(f"greedy kept one run: its smallest step, the best run 24:1 with another, lowers val NLL with none (the "
              f"best such mix, with trial {other}: {alone:.4f} -> {mixed:.4f}), so the ensemble is the best run itself")

    print("\n### Targets")
    n = len(seeds)
    print(f"{'PASS' if nll_wins == n else 'FAIL'}  the {args.members}-member average beats the mean member in test NLL "
          f"on {nll_wins}/{n} base seeds")
    print(f"{'PASS' if acc_wins == n else 'FAIL'}  the {args.members}-member average beats the mean member in test "
          f"accuracy by more than the seed spread (sd of member test accuracy) on {acc_wins}/{n} base seeds")
    won = searched["ensemble"]["test"]["nll"] < best["test"]["nll"]
    print(f"{'PASS' if won else 'FAIL'}  greedy selection from a {args.trials}-trial search beats the search's best "
          f"single run in test NLL ({searched['ensemble']['test']['nll']:.4f} vs {best['test']['nll']:.4f})")
    print(f"\nwall time {time.perf_counter() - _start:.0f} s; sweeps in {root}{' (removed)' if scratch else ''}")
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
