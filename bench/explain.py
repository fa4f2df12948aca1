"""How fast and how faithful `dlopt explain` is, method by method, on three runs it trains itself: the default
digits CNN (`dlopt train trainer.max_epochs=10`), an MLP on a CSV table (scikit-learn's breast cancer data, 30
numeric columns, plus `clinic`, a categorical column drawn at random that carries no information) and an MLP on
data=synthetic with a known truth (20 features, only the first 5 informative, 4 classes).

Every run and explanation is the installed command in a scratch folder, one at a time, OMP_NUM_THREADS=1 (the
trainings two at once). Per run, one `dlopt explain run=... method=[all 8] explain.samples=32
explain.randomization=true`; the table is read from its explain.json: seconds per sample (the method's own time;
permutation is global, its time over all the split divided by the samples), deletion AUC against random,
precision@5 (synthetic) and the rank correlation with a re-initialized network (lower: the explanation depends on
the weights). Then the issue's targets as pass/fail lines.

Stability of LIME and KernelSHAP against explain.evaluations (model evaluations per sample; default 512, Captum's
own default 25): the digits run's first 16 samples explained with seed=0 and seed=1, the mean over samples of the
Spearman correlation between the two seeds' attributions (attributions.npz). explain.sample_seed=0 keeps the
samples of both runs the same (the bench checks the inputs are identical): only the methods' random draws differ.

Threads: the digits explanation (all methods, 32 samples) with OMP_NUM_THREADS=1 and =2, alternating, the median
over --repeats of the sum of the methods' seconds (explain.json, not the process's wall time).

    python bench/explain.py [--quick] [--keep DIR] [--repeats 3] [--epochs 10]

--keep DIR keeps the runs and reuses trained ones; --quick: no randomization check, evaluations 25 and 512 only,
one thread repeat (about 4 minutes instead of 6.5 on 2 cores).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import spearmanr

from installed import QUIET, call, dlopt, version  # bench/installed.py

METHODS = ("permutation", "saliency", "integrated_gradients", "gradient_shap", "occlusion", "lime", "kernel_shap",
           "shapley_sampling")
SAMPLES = 32
NOISE_COLUMN = "clinic"  # the CSV's random categorical column
PRECISION_METHODS = ("permutation", "integrated_gradients", "kernel_shap", "lime")
_start = time.perf_counter()


def say(text: str) -> None:
    print(f"[{time.perf_counter() - _start:5.0f} s] {text}", flush=True)


def write_csv(path: Path) -> None:
    """Breast cancer (569 rows, 30 numbers, benign/malignant) with `clinic`: north/south/east at random."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    rng = random.Random(0)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*data.feature_names, NOISE_COLUMN, "diagnosis"])
        for row, label in zip(data.data, data.target):
            out.writerow([*(f"{v:g}" for v in row), rng.choice(("north", "south", "east")), data.target_names[label]])


def runs(root: Path, epochs: int) -> dict[str, list[str]]:
    return {
        "digits": [f"trainer.max_epochs={epochs}"],
        "csv": ["data=csv", f"data.path={root / 'cancer.csv'}", "data.target=diagnosis",
                f"data.categorical=[{NOISE_COLUMN}]", "model=mlp"],
        "synthetic": ["data=synthetic", "model=mlp", "data.shape=[20]", "data.informative=5", "data.num_classes=4",
                      "data.num_samples=2000", "trainer.max_epochs=20"],
    }


def train(root: Path, name: str, overrides: list[str]) -> Path:
    folder = root / "runs" / name
    saved = folder / ".hydra" / "overrides.yaml"
    if (folder / "metrics.json").is_file() and saved.is_file() \
            and yaml.safe_load(saved.read_text()) == [*overrides, *QUIET]:
        say(f"{name}: trained run found in {folder}")
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    seconds = call([*dlopt(), "train", *overrides, *QUIET, f"hydra.run.dir={folder}"], root / f"train_{name}.log")
    say(f"{name}: trained ({seconds:.0f} s) dlopt train {' '.join(overrides)}")
    return folder


def explain(root: Path, run: Path, out: str, overrides: list[str], threads: int = 1) -> tuple[dict, Path, float]:
    """`dlopt explain run=RUN OVERRIDES` into root/explain/OUT: its explain.json, folder and wall time."""
    folder = root / "explain" / out
    shutil.rmtree(folder, ignore_errors=True)
    wall = call([*dlopt(), "explain", f"run={run}", *overrides, f"hydra.run.dir={folder}"],
                root / f"explain_{out.split('/')[0]}.log", threads)
    return json.loads((folder / "explain.json").read_text()), folder, wall


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    return f"{value:.{digits}f}"


def method_table(summary: dict) -> list[str]:
    n = summary["samples"]
    rows = ["| method | s/sample | s for 32 samples | deletion AUC | random AUC | beats random | precision@5 | "
            "randomization rank corr |", "|---|---:|---:|---:|---:|---|---:|---:|"]
    for method in METHODS:
        m = summary["methods"][method]
        rows.append(f"| {method} | {m['seconds_per_sample']:.4f} | {m['seconds_per_sample'] * n:.2f} | "
                    f"{m['deletion_auc']:.3f} | {m['random_auc']:.3f} | {fmt(m['beats_random'])} | "
                    f"{fmt(m.get('precision_at_k'), 2)} | {fmt(m.get('randomization_rank_corr'), 2)} |")
    return rows


def noise_ranks(folder: Path) -> dict[str, int]:
    """The rank (1 = most important) of the random CSV column under each method's importance (explain.json's:
    mean |attribution|, permutation's accuracy drop)."""
    arrays = np.load(folder / "attributions.npz")
    names = list(arrays["feature_names"])
    ranks = {}
    for method in METHODS:
        importance = arrays[method][0] if method == "permutation" else np.abs(arrays[method]).mean(0)
        ranks[method] = int(np.argsort(-importance).tolist().index(names.index(NOISE_COLUMN))) + 1
    return ranks


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Mean over samples of the Spearman correlation of two (N, features) attributions; 0 (and counted) where a
    row is constant."""
    values, constant = [], 0
    for row_a, row_b in zip(a, b):
        if np.ptp(row_a) == 0 or np.ptp(row_b) == 0:
            values.append(0.0)
            constant += 1
        else:
            values.append(float(spearmanr(row_a, row_b).statistic))
    return float(np.mean(values)), constant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="where runs go, kept; trained runs are reused (default: a temp "
                                                  "folder, removed)")
    parser.add_argument("--quick", action="store_true", help="no randomization check, evaluations 25 and 512, "
                                                             "one thread repeat")
    parser.add_argument("--repeats", type=int, default=3, help="explanations per thread count (median)")
    parser.add_argument("--epochs", type=int, default=10, help="trainer.max_epochs of the digits run")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    evaluations = (25, 512) if args.quick else (25, 128, 512, 2048)
    scratch = tempfile.TemporaryDirectory(prefix="dlopt_explain_") if args.keep is None else None
    root = (args.keep or Path(scratch.name)).resolve()
    root.mkdir(parents=True, exist_ok=True)
    at = version()  # the figures are of the code at the start
    say(f"dlopt at {at}")
    say(f"runs in {root}; explanations one at a time, OMP_NUM_THREADS=1 unless said")
    write_csv(root / "cancer.csv")

    jobs = runs(root, args.epochs)
    with ThreadPoolExecutor(2) as pool:  # two trainings at once, one thread each
        futures = {name: pool.submit(train, root, name, overrides) for name, overrides in jobs.items()}
        trained = {name: f.result() for name, f in futures.items()}

    # 1. every method on every run
    every = [f"method=[{','.join(METHODS)}]", f"explain.samples={SAMPLES}",
             f"explain.randomization={'false' if args.quick else 'true'}"]
    summaries, folders, walls = {}, {}, {}
    for name, run in trained.items():
        summaries[name], folders[name], walls[name] = explain(root, run, name, every)
        say(f"{name}: explained ({walls[name]:.0f} s)")

    # 2. LIME / KernelSHAP stability against explain.evaluations
    stability = {}
    for count in evaluations:
        pair = []
        for seed in (0, 1):
            summary, folder, _ = explain(root, trained["digits"], f"stability/e{count}_s{seed}",
                                         ["method=[lime,kernel_shap]", "explain.samples=16",
                                          f"explain.evaluations={count}", f"seed={seed}", "explain.sample_seed=0"])
            pair.append((summary, np.load(folder / "attributions.npz")))
        (s0, a0), (s1, a1) = pair
        if not np.array_equal(a0["inputs"], a1["inputs"]):
            raise SystemExit("the seed=0 and seed=1 runs with explain.sample_seed=0 explained different samples")
        stability[count] = {m: (*agreement(a0[m], a1[m]), agreement(np.abs(a0[m]), np.abs(a1[m]))[0],
                                statistics.mean([s0["methods"][m]["seconds_per_sample"],
                                                 s1["methods"][m]["seconds_per_sample"]]))
                            for m in ("lime", "kernel_shap")}
        say(f"evaluations={count}: lime rho {stability[count]['lime'][0]:.3f}, kernel_shap rho "
            f"{stability[count]['kernel_shap'][0]:.3f}")

    # 3. threads: the methods' seconds for 32 digits samples, OMP_NUM_THREADS=1 against 2
    seconds: dict[int, list[float]] = {1: [], 2: []}
    for repeat in range(repeats):
        for threads in ((1, 2) if repeat % 2 == 0 else (2, 1)):
            summary, folder, wall = explain(root, trained["digits"], f"threads/t{threads}_r{repeat}",
                                            [f"method=[{','.join(METHODS)}]", f"explain.samples={SAMPLES}"], threads)
            total = sum(m["seconds_per_sample"] for m in summary["methods"].values()) * summary["samples"]
            seconds[threads].append(total)
            said = next((line for line in (root / "explain_threads.log").read_text().splitlines()[::-1]
                         if "thread(s)" in line), "")
            say(f"threads={threads} repeat {repeat}: methods {total:.2f} s, process {wall:.0f} s "
                f"({said.rsplit(';', 1)[-1].strip()})")

    # the report
    print()
    print(f"dlopt at {at}" + ("" if version() == at else f" (now {version()}: the code changed during the bench)"))
    print(f"`dlopt explain run=RUN method=[all 8] explain.samples={SAMPLES}"
          f"{'' if args.quick else ' explain.randomization=true'}`, one at a time, OMP_NUM_THREADS=1 (2 cores here)")
    titles = {"digits": f"digits CNN (`dlopt train trainer.max_epochs={args.epochs}`)",
              "csv": "breast cancer CSV, MLP (30 numeric columns + `clinic`, random categorical)",
              "synthetic": "synthetic, MLP (20 features, the first 5 informative, 4 classes)"}
    for name, summary in summaries.items():
        metrics = json.loads((trained[name] / "metrics.json").read_text())
        spent = sum(m["seconds_per_sample"] for m in summary["methods"].values()) * summary["samples"]
        print(f"\n### {titles[name]}: test/acc {metrics['test/acc']:.3f}, {len(summary['features'])} features "
              f"({summary['kind']}), {summary['samples']} {summary['split']} samples")
        print(f"process {walls[name]:.1f} s, of which the methods {spent:.1f} s (the rest: start, data, deletion "
              f"curves,{'' if args.quick else ' the randomized twins,'} figures)\n")
        print("\n".join(method_table(summary)))
        if name == "csv":
            ranks = noise_ranks(folders[name])
            print(f"\nrank of `{NOISE_COLUMN}` (random, no information) among {len(summary['features'])} columns: "
                  + ", ".join(f"{m} {r}" for m, r in ranks.items()))

    print("\n### LIME / KernelSHAP stability: digits, 16 samples, seed 0 vs 1 (same samples), mean per-sample "
          "Spearman rho of the attributions (signed; of |attribution| in brackets)\n")
    print("| explain.evaluations | lime rho | lime s/sample | kernel_shap rho | kernel_shap s/sample |")
    print("|---:|---:|---:|---:|---:|")
    for count, row in stability.items():
        cells = []
        for m in ("lime", "kernel_shap"):
            rho, constant, rho_abs, per = row[m]
            cells += [f"{rho:.3f} ({rho_abs:.3f}){f', {constant} constant rows' if constant else ''}", f"{per:.4f}"]
        print(f"| {count}{' (default)' if count == 512 else ''} | " + " | ".join(cells) + " |")

    t1, t2 = statistics.median(seconds[1]), statistics.median(seconds[2])
    print(f"\n### Threads: digits, all methods, {SAMPLES} samples, sum of the methods' seconds (median of {repeats})\n")
    print("| OMP_NUM_THREADS | methods s (median) | runs |")
    print("|---:|---:|---|")
    for threads in (1, 2):
        print(f"| {threads} | {statistics.median(seconds[threads]):.2f} | "
              f"{', '.join(f'{s:.2f}' for s in seconds[threads])} |")
    print(f"\nOMP_NUM_THREADS=1 / =2: {t1 / t2:.2f}x (above 1: two threads are faster)")

    print("\n### Targets")
    digits = summaries["digits"]["methods"]
    slowest = max(METHODS, key=lambda m: digits[m]["seconds_per_sample"])
    worst = digits[slowest]["seconds_per_sample"] * summaries["digits"]["samples"]
    print(f"{'PASS' if worst < 30 else 'FAIL'}  every method explains {SAMPLES} digits samples in under 30 s "
          f"(slowest: {slowest}, {worst:.2f} s)")
    losers = [f"{name}/{m} ({s['methods'][m]['deletion_auc']:.3f} vs {s['methods'][m]['random_auc']:.3f})"
              for name, s in summaries.items() for m in METHODS if not s["methods"][m]["beats_random"]]
    print(f"{'FAIL' if losers else 'PASS'}  every method beats random on the deletion curve (3 runs x 8 methods"
          f"{': not ' + ', '.join(losers) if losers else ''})")
    precision = {m: summaries["synthetic"]["methods"][m].get("precision_at_k") for m in PRECISION_METHODS}
    ok = all(p is not None and p >= 0.8 for p in precision.values())
    print(f"{'PASS' if ok else 'FAIL'}  precision@5 >= 0.8 for {', '.join(PRECISION_METHODS)} on the synthetic run "
          f"({', '.join(f'{m} {fmt(p, 2)}' for m, p in precision.items())})")
    print(f"\nwall time {time.perf_counter() - _start:.0f} s; runs in {root}{' (removed)' if scratch else ''}")
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
