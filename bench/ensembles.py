"""Does an ensemble beat its members on MNIST-1D, and by how much against the spread between seeds? Three parts:
ensembles of finished runs (`dlopt ensemble runs=...`, combined from their saved predictions.npz: parts 1 and 2) and
ensembles whose members `dlopt ensemble` trains itself (method=bagging|boosting|stacking: part 3).

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
3. Trained ensembles. For each base seed s, the same data and epochs as part 1 (`data=mnist1d data.split_seed=s
   seed=10s trainer.max_epochs=--epochs`), members trained under the ensemble's folder (members/N, member N with
   seed 10s+N):
   - `dlopt ensemble method=bagging ensemble.members=--members`: each member on a bootstrap resample of the training
     split, the mean of their probabilities. Its members have the seeds of part 1's deep ensemble of base seed s,
     so bagging - deep ensemble is the effect of the bootstrap alone (printed; --parts 3 without 1 trains part 1's
     seed sweeps for it, or reuses them from --keep).
   - `method=boosting ensemble.members=--members`: SAMME by weighted resampling, member after member; its members
     vote (weighted by alpha), a vote's class shares are no probabilities, so the ensemble has no NLL (null in
     ensemble.json): its accuracy and ECE only, and every round's weighted training error and alpha.
   - `method=stacking 'ensemble.members=["model=cnn","model=mlp","model=resnet trainer.max_epochs=R"]'`: three
     models (resnet18, ~10x the cnn's time per epoch, trains --resnet-epochs), a LogisticRegression meta-learner on
     their validation probabilities (ensemble.folds=0, blending), and again with ensemble.folds=--stack-folds (on
     out-of-fold predictions of the training split: K trainings per member; --stack-folds 0: not run).
   Read from ensemble.json: the ensemble's test acc / NLL / ECE, ensemble_minus_best_member (best by val NLL) and
   ensemble_minus_mean_member as dlopt computes them, and the sd (ddof=1) of the members' test accuracy (for bagging
   and boosting a seed spread; for stacking the spread between three models).

Every command is the installed `dlopt` in a scratch folder, OMP_NUM_THREADS=1, two trainings at once on the 2 cores
here: sweeps and bagging one command at a time with hydra/launcher=joblib hydra.launcher.n_jobs=2 (the search with
search.n_jobs=2); boosting and stacking train one member after another (boosting must: a member's resample needs the
errors of those before it; stacking trains one sweep per model), so two of those commands run side by side, each
with Hydra's basic launcher. At the end: markdown tables and the targets as PASS/FAIL lines.

    python bench/ensembles.py [--quick] [--keep DIR] [--parts 1 2 3] [--epochs 20] [--members 5] [--trials 20]
                              [--search-epochs 8] [--resnet-epochs 5] [--stack-folds 3]

--keep DIR keeps the sweeps and ensembles and reuses those that finished with the same command (an ensemble stopped
mid-way is started again in its folder: dlopt keeps the members that finished); --parts 3 runs part 3 alone;
--quick: base seeds 0 and 1, 3 members of 10 epochs each, a search of 8 trials of 4 epochs, resnet 1 epoch and
stacking with folds=0 only. Measured on 2 cores with tests running beside: --quick 3.5 min, the default ~11 min
(part 3 alone, with part 1's seed sweeps it needs: 10 min at the default, ~3 min with --quick).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from installed import QUIET, call, dlopt, version  # bench/installed.py

JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]  # two trainings at once
STACK = ("cnn", "mlp", "resnet")  # stacking's members
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


def deep_ensembles(root: Path, args: argparse.Namespace, tally: dict, greedy: bool = True) -> dict[int, dict]:
    """Part 1: per base seed, a sweep of seeds on the same data, averaged (top_k) and selected (greedy)."""
    seeds = {}
    for base in args.base_seeds:
        runs = ",".join(str(10 * base + i) for i in range(args.members))
        folder, seconds = sweep(root, f"seeds_s{base}_e{args.epochs}",
                                [f"seed={runs}", "data=mnist1d", f"data.split_seed={base}",
                                 f"trainer.max_epochs={args.epochs}"])
        tally["train"], tally["reused"] = tally["train"] + (seconds or 0), tally["reused"] + (seconds is None)
        tally["sweeps"] += 1
        average, t1 = ensemble(root, folder, f"s{base}_top_k", ["ensemble.select=top_k", f"ensemble.k={args.members}"])
        tally["ensemble"].append(t1)
        if len(average["members"]) != args.members:
            raise SystemExit(f"seed sweep {base}: {len(average['members'])} usable runs of {args.members} "
                             f"(skipped: {average['skipped']})")
        seeds[base] = {"average": average, "epochs": epochs_of(average["members"])}
        if not greedy:
            say(f"base seed {base}: top_k test nll {average['ensemble']['test']['nll']:.4f} acc "
                f"{average['ensemble']['test']['acc']:.4f} (part 1's deep ensemble, for part 3's bagging)")
            continue
        seeds[base]["greedy"], t2 = ensemble(root, folder, f"s{base}_greedy", ["ensemble.select=greedy"])
        tally["ensemble"].append(t2)
        greedy_summary = seeds[base]["greedy"]
        say(f"base seed {base}: top_k test nll {average['ensemble']['test']['nll']:.4f} acc "
            f"{average['ensemble']['test']['acc']:.4f}; greedy nll {greedy_summary['ensemble']['test']['nll']:.4f} "
            f"({weights(greedy_summary)})")
    return seeds


def report_deep(seeds: dict[int, dict], args: argparse.Namespace) -> tuple[int, int]:
    """Part 1's tables; the base seeds on which the average beats the mean member in NLL, and in acc by more than the
    seed spread."""
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
    return nll_wins, acc_wins


def report_search(searched: dict, args: argparse.Namespace) -> dict:
    """Part 2's table; the search's best single run."""
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
    return best


# 3. trained ensembles: dlopt ensemble method=bagging|boosting|stacking

def trained(root: Path, name: str, overrides: list[str], launcher: list[str]) -> dict:
    """`dlopt ensemble OVERRIDES` into root/trained/NAME: its ensemble.json with its wall time ("seconds", None: a
    finished ensemble of the same command found in --keep), or {"error": why} when the command failed."""
    folder, marker, log = (root / "trained" / f"{name}{end}" for end in ("", ".done.json", ".log"))
    folder.parent.mkdir(exist_ok=True)
    argv = [*dlopt(), "ensemble", *overrides, *QUIET, *launcher, f"hydra.run.dir={folder}"]
    seconds = None
    if marker.is_file() and json.loads(marker.read_text()) == argv and (folder / "ensemble.json").is_file():
        say(f"{name}: finished ensemble found in {folder}")
    else:
        if marker.is_file():  # another command's: trained again
            shutil.rmtree(folder, ignore_errors=True)
            marker.unlink()
        # a folder without a marker was stopped mid-way (--keep): started again in it, dlopt keeps finished members
        try:
            seconds = call(argv, log)
        except SystemExit as err:
            say(f"{name}: FAILED ({str(err).splitlines()[0]})")
            lines = [line for line in str(err).splitlines() if line.strip()]
            return {"error": lines[-1] if lines else "exited with an error", "log": str(log)}
        marker.write_text(json.dumps(argv))
        say(f"{name}: trained and combined ({seconds:.0f} s) dlopt ensemble {' '.join(overrides)}")
    summary = json.loads((folder / "ensemble.json").read_text())
    summary["seconds"] = seconds
    return summary


def trained_ensembles(root: Path, args: argparse.Namespace) -> dict[str, dict[int, dict]]:
    """Part 3: per base seed, bagging (one command at a time, its members two at once), then boosting and stacking
    (members one after another: two commands side by side). method -> base seed -> ensemble.json."""
    def train(base: int) -> list[str]:
        return ["data=mnist1d", f"data.split_seed={base}", f"seed={10 * base}", f"trainer.max_epochs={args.epochs}"]

    size = f"m{args.members}_e{args.epochs}"
    found: dict[str, dict[int, dict]] = {"bagging": {}}
    for base in args.base_seeds:
        found["bagging"][base] = trained(root, f"bagging_s{base}_{size}",
                                         ["method=bagging", f"ensemble.members={args.members}", *train(base)], JOBLIB)
    stack = ",".join(f'"model={m}"' for m in STACK[:-1]) + f',"model=resnet trainer.max_epochs={args.resnet_epochs}"'
    jobs = {}  # the longest first (stacking with folds, boosting, blending), so that the two lanes end together
    for method in [*([f"stacking_f{args.stack_folds}"] if args.stack_folds else []), "boosting", "stacking_f0"]:
        for base in args.base_seeds:
            if method == "boosting":
                jobs[method, base] = (f"boosting_s{base}_{size}",
                                      ["method=boosting", f"ensemble.members={args.members}", *train(base)])
                continue
            folds = int(method.removeprefix("stacking_f"))
            jobs[method, base] = (f"{method}_s{base}_e{args.epochs}_r{args.resnet_epochs}",
                                  ["method=stacking", f"ensemble.members=[{stack}]", f"ensemble.folds={folds}",
                                   *train(base)])
    with ThreadPoolExecutor(2) as pool:
        futures = {key: pool.submit(trained, root, name, overrides, []) for key, (name, overrides) in jobs.items()}
    for (method, base), future in futures.items():
        found.setdefault(method, {})[base] = future.result()
    order = ["bagging", "boosting", *(f"stacking_f{f}" for f in sorted({0, args.stack_folds}))]
    return {method: dict(sorted(found[method].items())) for method in order}


def taken_of(summary: dict) -> list[dict]:
    return [m for m in summary["members"] if m["weight"]]


def number(value: float | None, sign: str = "") -> str:
    return "-" if value is None else f"{value:{sign}.4f}"


def trio(scores: dict, sign: str = "") -> str:
    return " | ".join(number(scores[k], sign) for k in ("acc", "nll", "ece"))


def method_table(runs: dict[int, dict], names: dict[int, str]) -> None:
    """One row per base seed: the ensemble's test acc, NLL and ECE, minus its best and its mean member, the sd of the
    members' test accuracy. `names`: the best member's description per base seed."""
    print("| s | members | test acc | test NLL | test ECE | - best member: acc | NLL | ECE | - mean member: acc | "
          "NLL | ECE | member acc sd | best member (by val NLL) | mean confidence | wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for base, summary in runs.items():
        if "error" in summary:
            print(f"| {base} | failed: {summary['error']} (log: {summary['log']}) |")
            continue
        taken = taken_of(summary)
        sd = statistics.stdev(m["test"]["acc"] for m in taken) if len(taken) > 1 else float("nan")
        wall = "reused" if summary["seconds"] is None else f"{summary['seconds']:.0f}"
        print(f"| {base} | {len(taken)} of {len(summary['members'])} | {trio(summary['ensemble']['test'])} | "
              f"{trio(summary['ensemble_minus_best_member'], '+')} | "
              f"{trio(summary['ensemble_minus_mean_member'], '+')} | {sd:.4f} | {names[base]} | "
              f"{summary['mean_confidence']['test']:.4f} | {wall} |")


def report_trained(found: dict[str, dict[int, dict]], seeds: dict[int, dict], args: argparse.Namespace,
                   seconds: float) -> tuple[int, int, int]:
    """Part 3's tables; the bagging ensembles that beat their mean member in NLL, and in acc by more than the seed
    spread, of how many."""
    ok = {method: {b: s for b, s in runs.items() if "error" not in s} for method, runs in found.items()}
    print(f"\n### 3. Trained ensembles (`dlopt ensemble method=... data=mnist1d data.split_seed=s seed=10s "
          f"trainer.max_epochs={args.epochs}`, member N with seed 10s+N), test split\n")
    reused = sum(s.get("seconds", 0) is None for runs in found.values() for s in runs.values())
    print(f"part 3: {seconds:.0f} s wall time for {sum(len(r) for r in found.values())} ensemble commands"
          + (f" ({reused} reused from --keep)" if reused else "")
          + " (the wall s columns: each command's; boosting and stacking ran two side by side)")

    def seeded(summary: dict, base: int) -> str:
        best = summary["best_member"]
        return f"{best} (seed {10 * base + int(best)})"

    print(f"\n#### Bagging: {args.members} members, each on a bootstrap resample of the training split, the mean of "
          "their probabilities\n")
    method_table(found["bagging"], {b: seeded(s, b) for b, s in ok["bagging"].items()})
    nll_wins = acc_wins = 0
    for base, summary in ok["bagging"].items():
        sd = statistics.stdev(m["test"]["acc"] for m in taken_of(summary))
        nll_wins += summary["ensemble_minus_mean_member"]["nll"] < 0
        acc_wins += summary["ensemble_minus_mean_member"]["acc"] > sd
    print(f"\nBagging against part 1's deep ensemble of the same {args.members} seeds (same data, same initial "
          "weights; only the bootstrap resample differs), test split:\n")
    print("| s | bagging: acc | NLL | ECE | deep ensemble: acc | NLL | ECE | bagging - deep ensemble: acc | NLL | "
          "ECE | mean bagging member - mean seed member: acc | NLL | ECE |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for base, summary in ok["bagging"].items():
        deep = seeds[base]["average"]
        bag_test, deep_test = summary["ensemble"]["test"], deep["ensemble"]["test"]
        bag_mean = {k: statistics.mean(m["test"][k] for m in taken_of(summary)) for k in ("acc", "nll", "ece")}
        print(f"| {base} | {trio(bag_test)} | {trio(deep_test)} | {deltas(bag_test, deep_test)} | "
              f"{deltas(bag_mean, mean_member(deep['members']))} |")

    print(f"\n#### Boosting (SAMME by weighted resampling): {args.members} members, a vote weighted by alpha\n")
    method_table(found["boosting"], {b: seeded(s, b) for b, s in ok["boosting"].items()})
    print("\nNo NLL for boosting: its members vote (weighted by alpha) and a vote's class shares are no probabilities, "
          "so dlopt reports the ensemble's NLL as null (its best and mean member, plain networks, have one: the NLL "
          "differences are null too); ECE and mean confidence are of the vote shares.\n")
    print("Rounds: each member's weighted training error / alpha (its test acc); member 0 trains on a uniform "
          "bootstrap, member m on a resample drawn with the weights the errors of members 0..m-1 left\n")
    width = max([len(s["rounds"]) for s in ok["boosting"].values()] + [1])
    print("| s | " + " | ".join(f"member {n}" for n in range(width)) + " | stop |")
    print("|---:|" + "---:|" * width + "---|")
    for base, summary in ok["boosting"].items():
        accs = {m["name"]: m["test"]["acc"] for m in summary["members"]}
        rounds = [f"{r['weighted_error']:.4f} / {'-' if r['alpha'] is None else format(r['alpha'], '.3f')} "
                  f"({accs[str(r['member'])]:.3f})" if str(r["member"]) in accs else f"{r['weighted_error']:.4f} / -"
                  for r in summary["rounds"]]
        stops = "; ".join(f"after {r['member']}: {r['stop']}" for r in summary["rounds"] if r["stop"]) or "-"
        print(f"| {base} | " + " | ".join(rounds + [""] * (width - len(rounds))) + f" | {stops} |")

    models = f"cnn, mlp ({args.epochs} epochs), resnet ({args.resnet_epochs} epochs)"
    for method in (m for m in found if m.startswith("stacking")):
        folds = int(method.removeprefix("stacking_f"))
        how = (f"ensemble.folds={folds}: fitted on out-of-fold predictions of the training split ({folds} trainings "
               "per member, their mean predicts val and test)") if folds else \
            "ensemble.folds=0: fitted on the validation split (blending)"
        print(f"\n#### Stacking: {models}, a LogisticRegression meta-learner; {how}\n")
        method_table(found[method], {b: STACK[int(s["best_member"])] for b, s in ok[method].items()})
        print("\n| s | " + " | ".join(f"{m}: acc | NLL" for m in STACK) + " |")
        print("|---:|" + "---:|---:|" * len(STACK))
        for base, summary in ok[method].items():
            scores = {STACK[int(m["name"])]: m["test"] for m in summary["members"]}
            print(f"| {base} | " + " | ".join(f"{scores[m]['acc']:.4f} | {scores[m]['nll']:.4f}" if m in scores
                                              else "- | -" for m in STACK) + " |")
    print("\n(differences: the ensemble minus the member, so positive acc and negative NLL and ECE are the ensemble's "
          "gains; member acc sd: the sd of the members' test accuracy, between seeds for bagging and boosting, "
          "between three models for stacking; mean confidence: the ensemble's mean top-class probability)")

    print("\nMean over the base seeds, ensemble - best member and ensemble - mean member:\n")
    print("| method | seeds | test acc | test NLL | - best member: acc | NLL | - mean member: acc | NLL |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for method, runs in ok.items():
        if not runs:
            print(f"| {method} | 0 | failed |")
            continue

        def avg(key: str, metric: str) -> float | None:
            values = [s[key]["test"][metric] if key == "ensemble" else s[key][metric] for s in runs.values()]
            return None if None in values else statistics.mean(values)
        print(f"| {method} | {len(runs)} | {number(avg('ensemble', 'acc'))} | {number(avg('ensemble', 'nll'))} | "
              f"{number(avg('ensemble_minus_best_member', 'acc'), '+')} | "
              f"{number(avg('ensemble_minus_best_member', 'nll'), '+')} | "
              f"{number(avg('ensemble_minus_mean_member', 'acc'), '+')} | "
              f"{number(avg('ensemble_minus_mean_member', 'nll'), '+')} |")
    return nll_wins, acc_wins, len(found["bagging"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="where sweeps go, kept; finished ones are reused (default: a temp "
                                                  "folder, removed)")
    parser.add_argument("--quick", action="store_true", help="base seeds 0 and 1, 3 members of 10 epochs, a search "
                                                             "of 8 trials x 4 epochs, resnet 1 epoch, no "
                                                             "stacking with folds")
    parser.add_argument("--parts", type=int, nargs="+", choices=(1, 2, 3), default=[1, 2, 3],
                        help="which parts to run: 1 deep ensembles, 2 greedy from a search, 3 trained ensembles")
    parser.add_argument("--epochs", type=int, default=20, help="trainer.max_epochs of the seed sweeps' runs and of "
                                                               "the trained ensembles' members")
    parser.add_argument("--members", type=int, default=5, help="runs (seeds) per base seed, all averaged; bagging's "
                                                               "and boosting's members")
    parser.add_argument("--base-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=20, help="search.n_trials of the random search")
    parser.add_argument("--search-epochs", type=int, default=8, help="trainer.max_epochs of the search's trials")
    parser.add_argument("--resnet-epochs", type=int, default=5, help="trainer.max_epochs of stacking's resnet member")
    parser.add_argument("--stack-folds", type=int, default=3, help="stacking again with ensemble.folds=K (0: only "
                                                                   "folds=0, blending)")
    args = parser.parse_args()
    if args.quick:
        args.base_seeds, args.members, args.epochs, args.trials, args.search_epochs = [0, 1], 3, 10, 8, 4
        args.resnet_epochs, args.stack_folds = 1, 0
    if args.stack_folds == 1 or args.stack_folds < 0:
        parser.error("--stack-folds is 0 or K >= 2")
    parts = set(args.parts)
    scratch = tempfile.TemporaryDirectory(prefix="dlopt_ensembles_") if args.keep is None else None
    root = (args.keep or Path(scratch.name)).resolve()
    root.mkdir(parents=True, exist_ok=True)
    at = version()  # the figures are of the code at the start
    say(f"dlopt at {at}")
    say(f"sweeps in {root}; one command at a time (boosting and stacking: two), two trainings at once, "
        "OMP_NUM_THREADS=1")
    tally = {"train": 0.0, "ensemble": [], "reused": 0, "sweeps": 0}

    # 1. deep ensembles (part 3 compares bagging with them)
    seeds = deep_ensembles(root, args, tally, greedy=1 in parts) if parts & {1, 3} else {}

    # 2. greedy ensemble selection from a random search
    if 2 in parts:
        folder, seconds = sweep(root, f"search_n{args.trials}_e{args.search_epochs}",
                                ["search=random", f"search.n_trials={args.trials}", "search.n_jobs=2", "seed=0",
                                 "data=mnist1d", "data.split_seed=0", f"trainer.max_epochs={args.search_epochs}"])
        tally["train"], tally["reused"] = tally["train"] + (seconds or 0), tally["reused"] + (seconds is None)
        tally["sweeps"] += 1
        searched, t3 = ensemble(root, folder, "search_greedy", ["ensemble.select=greedy"])
        tally["ensemble"].append(t3)
        say(f"search: greedy test nll {searched['ensemble']['test']['nll']:.4f} ({weights(searched)})")

    # 3. trained ensembles
    if 3 in parts:
        start = time.perf_counter()
        found = trained_ensembles(root, args)
        part3_seconds = time.perf_counter() - start

    # the report
    print()
    print(f"dlopt at {at}" + ("" if version() == at else f" (now {version()}: the code changed during the bench)"))
    if tally["sweeps"]:
        print(f"data=mnist1d (1000 test samples), model=cnn; trainings two at once (joblib), OMP_NUM_THREADS=1, 2 "
              f"cores; training {tally['train']:.0f} s" + (f" ({tally['reused']} of {tally['sweeps']} sweeps reused "
                                                           f"from --keep)" if tally["reused"] else "")
              + f", `dlopt ensemble` {statistics.median(tally['ensemble']):.1f} s per call (median of "
                f"{len(tally['ensemble'])}, the process's wall time)")
    if 1 in parts:
        nll_wins, acc_wins = report_deep(seeds, args)
    elif 3 in parts:
        print("(part 1 not reported: its seed sweeps trained only for part 3's bagging - deep ensemble line)")
    if 2 in parts:
        best = report_search(searched, args)
    if 3 in parts:
        bag_nll, bag_acc, bags = report_trained(found, seeds, args, part3_seconds)

    print("\n### Targets")
    n = len(seeds)
    if 1 in parts:
        print(f"{'PASS' if nll_wins == n else 'FAIL'}  the {args.members}-member average beats the mean member in test "
              f"NLL on {nll_wins}/{n} base seeds")
        print(f"{'PASS' if acc_wins == n else 'FAIL'}  the {args.members}-member average beats the mean member in "
              f"test accuracy by more than the seed spread (sd of member test accuracy) on {acc_wins}/{n} base seeds")
    if 2 in parts:
        won = searched["ensemble"]["test"]["nll"] < best["test"]["nll"]
        print(f"{'PASS' if won else 'FAIL'}  greedy selection from a {args.trials}-trial search beats the search's "
              f"best single run in test NLL ({searched['ensemble']['test']['nll']:.4f} vs {best['test']['nll']:.4f})")
    if 3 in parts:
        print(f"{'PASS' if bag_nll == bags else 'FAIL'}  bagging of {args.members} beats its mean member in test NLL "
              f"on {bag_nll}/{bags} base seeds")
        print(f"{'PASS' if bag_acc == bags else 'FAIL'}  bagging of {args.members} beats its mean member in test "
              f"accuracy by more than the seed spread (sd of member test accuracy) on {bag_acc}/{bags} base seeds")
        print("(boosting and stacking: no target, reported above as they came out)")
    print(f"\nwall time {time.perf_counter() - _start:.0f} s; sweeps in {root}{' (removed)' if scratch else ''}")
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
