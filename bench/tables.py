"""Small tables: dlopt's linear and MLP models against scikit-learn's on wine and breast cancer, mean ± sd over seeds.

    python bench/tables.py                  # everything, 3 seeds (~15-25 minutes on 2 busy cores)
    python bench/tables.py --skip-digits    # without the digits timing (part 3)
    python bench/tables.py --datasets wine  # one table only

Writes scikit-learn's bundled wine (178 rows, 13 features, 3 classes) and breast cancer (569 rows, 30 features,
2 classes) to CSV files in a temporary folder (the stdlib csv module: header row, numeric columns, `target`), then:

1. scikit-learn: make_pipeline(StandardScaler(), LogisticRegression()) and make_pipeline(StandardScaler(),
   MLPClassifier(random_state=seed)), defaults otherwise; 5-fold StratifiedKFold(shuffle=True, random_state=seed)
   accuracy for each seed. A row: the mean over seeds of the folds' mean ± the mean over seeds of the folds' sample
   sd (the 5-fold spread); its steps: LogisticRegression's lbfgs iterations, MLPClassifier's Adam steps (epochs x
   batches of 200), per fit; its time: the 5 fits of one seed. MLPClassifier's ConvergenceWarnings are counted.
2. dlopt, through the installed `dlopt train` command in the temporary folder, one `-m seed=0,1,2` sweep per row
   (data=csv data.path=FILE data.target=target callbacks.progress_bar=null; data.split_seed follows seed, so each seed
   is another split as well as other weights): model=linear and model=mlp, each (a) as is, one train/val/test split:
   test/acc mean ± sd over the seeds, and (b) data.cv=5: each seed's folds' mean test/acc, mean over seeds ± the
   mean over seeds of the folds' sd (metrics.json cv.sd); then, when conf/optimizer/lbfgs.yaml exists,
   model=linear optimizer=lbfgs (both ways, unregularized as dlopt's default is, and data.cv=5 with
   regularization.weight_decay=1/(a fold's training rows) regularization.exclude_norm_bias=true: the L2 penalty of
   LogisticRegression's default C=1); and model=linear data.min_batches=1 (the old one pass per epoch). Steps:
   metrics.json `steps` per run (per fold for data.cv=5); time: metrics.json `wall_time_s` per seed (all 5 folds
   for data.cv=5), the time the accuracy took, as for scikit-learn.
   Verdict per dlopt row, against the scikit-learn row of the same model (linear, lbfgs: LogisticRegression; mlp:
   MLPClassifier): "within the 5-fold spread" when |dlopt - scikit-learn| <= scikit-learn's 5-fold sd, else the gap.
   Like with like are the data.cv=5 rows (each sample tested once, 5 folds per seed; dlopt's folds also keep 15% of
   the rows out of training, data.val_fraction, for early stopping and the best epoch); a one-split row tests 15% of
   the rows once per seed (wine: 27 rows, one row = 3.7 points), so its verdict is marked (one split).
3. The default digits job (`dlopt train`, no overrides: min_batches=20) against `dlopt train data.min_batches=1`,
   3 alternating runs each: optimizer steps (the same: digits' 1257 training images are 20 batches of 64) and the
   median wall time of the whole command and of training (metrics.json wall_time_s), with their ratio.

Prints the markdown table (for README), each row's verdict, and the digits comparison.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Optional

SEEDS_DEFAULT = 3
FOLDS = 5


# --- data ------------------------------------------------------------------------------------------------------------

def datasets() -> dict:
    from sklearn.datasets import load_breast_cancer, load_wine
    return {"wine": load_wine(), "breast_cancer": load_breast_cancer()}


def write_csv(bunch, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*bunch.feature_names, "target"])
        for x, y in zip(bunch.data, bunch.target):
            writer.writerow([*(repr(float(v)) for v in x), int(y)])


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else math.nan


# --- scikit-learn ----------------------------------------------------------------------------------------------------

def sklearn_row(bunch, kind: str, seeds: list[int]) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    means, sds, times, steps, warned = [], [], [], [], 0
    for seed in seeds:
        model = LogisticRegression() if kind == "linear" else MLPClassifier(random_state=seed)
        pipe = make_pipeline(StandardScaler(), model)
        folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            start = time.perf_counter()
            out = cross_validate(pipe, bunch.data, bunch.target, cv=folds, return_estimator=True,
                                 return_indices=True)
            times.append(time.perf_counter() - start)
        warned += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        scores = list(out["test_score"])
        means.append(statistics.mean(scores))
        sds.append(sd(scores))
        for estimator, train in zip(out["estimator"], out["indices"]["train"]):
            fitted = estimator[-1]
            if kind == "linear":
                steps.append(int(max(fitted.n_iter_)))  # lbfgs iterations
            else:
                batch = min(200, len(train))
                steps.append(fitted.n_iter_ * math.ceil(len(train) / batch))  # Adam steps
    return {"acc": statistics.mean(means), "spread": statistics.mean(sds), "steps": statistics.mean(steps),
            "time": statistics.mean(times), "warnings": warned, "fits": len(seeds) * FOLDS}


# --- dlopt -----------------------------------------------------------------------------------------------------------

def run_dlopt(args: list[str], cwd: Path) -> tuple[int, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(["dlopt", *args], cwd=cwd, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def last_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()] or ["(no output)"]
    return next((line for line in reversed(lines) if "Error" in line or "ERROR" in line), lines[-1])[-300:]


def dlopt_row(csv_path: Path, overrides: list[str], seeds: list[int], cwd: Path) -> dict:
    """One `dlopt train -m seed=...` sweep; each run's metrics.json."""
    cwd.mkdir(parents=True)
    args = ["train", "-m", f"seed={','.join(map(str, seeds))}", "data=csv", f"data.path={csv_path}",
            "data.target=target", "callbacks.progress_bar=null", *overrides]
    code, output, wall = run_dlopt(args, cwd)
    runs = sorted(cwd.glob("outputs/train/multirun/*/*/*/metrics.json"))
    metrics = [json.loads(p.read_text()) for p in runs]
    if code != 0 or len(metrics) != len(seeds):
        return {"error": f"exit {code}, {len(metrics)} of {len(seeds)} runs: {last_error(output)}"}
    cv = "data.cv=5" in overrides
    accs = [m["test/acc"] for m in metrics]
    row = {"acc": statistics.mean(accs), "seed_sd": sd(accs), "time": statistics.mean(m["wall_time_s"] for m in metrics),
           "steps": statistics.mean(m["steps"] / (m["cv"]["trained"] if cv else 1) for m in metrics),
           "sweep_wall": wall, "epochs": statistics.mean(m["epochs"] for m in metrics),
           "passes": metrics[0].get("passes_per_epoch"), "batches": metrics[0].get("batches_per_epoch")}
    if cv:
        row["spread"] = statistics.mean(m["cv"]["sd"]["test/acc"] for m in metrics)
        row["per_seed"] = accs
    return row


# --- the default digits job ------------------------------------------------------------------------------------------

def digits_timing(repeats: int, tmp: Path) -> dict:
    out = {"floor": [], "one pass": []}
    for i in range(repeats):
        for name, overrides in (("floor", []), ("one pass", ["data.min_batches=1"])):
            cwd = tmp / f"digits-{name.replace(' ', '_')}-{i}"
            cwd.mkdir()
            code, output, wall = run_dlopt(["train", *overrides], cwd)
            found = list(cwd.glob("outputs/train/*/*/metrics.json"))
            if code != 0 or not found:
                raise SystemExit(f"dlopt train {' '.join(overrides)} failed (exit {code}): {last_error(output)}")
            m = json.loads(found[0].read_text())
            out[name].append({"wall": wall, "train": m["wall_time_s"], "steps": m["steps"], "acc": m["test/acc"],
                              "batches": m["batches_per_epoch"], "passes": m["passes_per_epoch"],
                              "epochs": m["epochs"]})
            print(f"  digits {name:<8} run {i + 1}: {wall:5.1f} s command, {m['wall_time_s']:5.1f} s training, "
                  f"{m['steps']} steps ({m['epochs']} epochs x {m['batches_per_epoch']} batches, "
                  f"{m['passes_per_epoch']} pass), test/acc {m['test/acc']:.4f}", flush=True)
    return out


# --- the table -------------------------------------------------------------------------------------------------------

def fmt(value: float, spread: Optional[float]) -> str:
    return f"{value:.3f} ± {spread:.3f}" if spread is not None and not math.isnan(spread) else f"{value:.3f}"


def verdict(row: dict, reference: dict, one_split: bool) -> str:
    gap = row["acc"] - reference["acc"]
    if abs(gap) <= reference["spread"]:
        text = "within the 5-fold spread"
    else:
        text = f"gap {gap:+.3f} (5-fold sd {reference['spread']:.3f})"
    return text + (" (one split)" if one_split else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=SEEDS_DEFAULT)
    parser.add_argument("--datasets", default="wine,breast_cancer")
    parser.add_argument("--skip-digits", action="store_true", help="leave out part 3 (the default digits job)")
    parser.add_argument("--digits-repeats", type=int, default=3)
    args = parser.parse_args()
    seeds = list(range(args.seeds))

    from dlopt.apps import config_dir
    lbfgs = (Path(config_dir()) / "optimizer" / "lbfgs.yaml").is_file()

    configs = [  # (model, how, overrides); linear and lbfgs compare with LogisticRegression, mlp with MLPClassifier
        ("linear", "one split", ["model=linear"]),
        ("linear", "data.cv=5", ["model=linear", "data.cv=5"]),
        ("linear", "one split, data.min_batches=1", ["model=linear", "data.min_batches=1"]),
        ("mlp", "one split", ["model=mlp"]),
        ("mlp", "data.cv=5", ["model=mlp", "data.cv=5"]),
    ]
    if lbfgs:
        configs[3:3] = [("linear", "one split, optimizer=lbfgs", ["model=linear", "optimizer=lbfgs"]),
                        ("linear", "data.cv=5, optimizer=lbfgs", ["model=linear", "optimizer=lbfgs", "data.cv=5"]),
                        ("linear", "data.cv=5, optimizer=lbfgs, L2 of C=1",
                         ["model=linear", "optimizer=lbfgs", "regularization.weight_decay={l2}",
                          "regularization.exclude_norm_bias=true", "data.cv=5"])]
    else:
        print("conf/optimizer/lbfgs.yaml is not there: the optimizer=lbfgs rows are left out", flush=True)

    bunches = datasets()
    lines = ["| data | model | evaluation | test acc | steps per fit | s per seed | vs scikit-learn |",
             "|---|---|---|---|---|---|---|"]
    notes = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dlopt-tables-") as name:
        tmp = Path(name)
        for data in args.datasets.split(","):
            bunch = bunches[data]
            path = tmp / f"{data}.csv"
            write_csv(bunch, path)
            shape = f"{data} ({bunch.data.shape[0]} x {bunch.data.shape[1]}, {len(set(bunch.target))} classes)"
            print(f"\n{shape}: {path}", flush=True)
            reference = {}
            for kind, label in (("linear", "LogisticRegression"), ("mlp", "MLPClassifier")):
                row = sklearn_row(bunch, kind, seeds)
                reference[kind] = row
                warned = f"; {row['warnings']} of {row['fits']} fits warned ConvergenceWarning" if row["warnings"] else ""
                print(f"  scikit-learn {label:<18} 5-fold: {fmt(row['acc'], row['spread'])}  steps {row['steps']:.0f}  "
                      f"{row['time']:.2f} s per seed{warned}", flush=True)
                if warned:
                    notes.append(f"{data}: scikit-learn {label}{warned} (max_iter=200 reached)")
                steps = f"{row['steps']:.0f} {'lbfgs it.' if kind == 'linear' else 'Adam'}"
                lines.append(f"| {data} | scikit-learn {label} | 5-fold | {fmt(row['acc'], row['spread'])} | {steps} | "
                             f"{row['time']:.2f} | reference{' (ConvergenceWarning)' if warned else ''} |")
            # LogisticRegression's C=1 as dlopt's L2 (conf/optimizer/lbfgs.yaml): weight_decay = 1 / (C x training
            # rows), a fold of data.cv=5 training on the rows left after its test fold and data.val_fraction=0.15
            l2 = f"{1 / round(len(bunch.target) * (1 - 1 / FOLDS - 0.15)):.3g}"
            for model, how, template in configs:
                overrides = [o.replace("{l2}", l2) for o in template]
                tag = f"{model}-{'-'.join(o.replace('=', '_').replace('regularization.', '') for o in overrides)}"
                row = dlopt_row(path, overrides, seeds, tmp / data / tag)
                shown = " ".join(overrides)
                if "error" in row:
                    print(f"  dlopt {shown:<40} FAILED: {row['error']}", flush=True)
                    lines.append(f"| {data} | dlopt `{shown}` | {how} | failed | | | {row['error'][:120]} |")
                    continue
                cv = "data.cv=5" in overrides
                spread = row["spread"] if cv else row["seed_sd"]
                ref = reference["mlp" if model == "mlp" else "linear"]
                judged = verdict(row, ref, one_split=not cv)
                print(f"  dlopt {shown:<40} {how:<28} {fmt(row['acc'], spread)}  steps {row['steps']:.0f}  "
                      f"{row['epochs']:.1f} epochs x {row['batches']} batches ({row['passes']} passes)  "
                      f"{row['time']:.1f} s per seed (sweep {row['sweep_wall']:.0f} s)  -> {judged}"
                      + (f"  per seed {', '.join(f'{a:.3f}' for a in row['per_seed'])}" if cv else ""), flush=True)
                evaluation = ("5-fold, mean ± fold sd" if cv else "one split, mean ± seed sd") + \
                             (", data.min_batches=1" if "data.min_batches=1" in overrides else "")
                lines.append(f"| {data} | dlopt `{shown}` | {evaluation} | {fmt(row['acc'], spread)} | "
                             f"{row['steps']:.0f} | {row['time']:.1f} | {judged} |")

        digits = None
        if not args.skip_digits:
            print("\ndefault digits job: data.min_batches=20 (default) against data.min_batches=1", flush=True)
            digits = digits_timing(args.digits_repeats, tmp)

    print(f"\n=== seeds ({', '.join(map(str, seeds))}); {time.perf_counter() - started:.0f} s in all\n")
    print("\n".join(lines))
    for note in notes:
        print(f"\nnote: {note}")
    if not lbfgs:
        print("\nnote: conf/optimizer/lbfgs.yaml is not there: no optimizer=lbfgs rows")
    if digits:
        floor, one = digits["floor"], digits["one pass"]
        med = {k: {f: statistics.median(r[f] for r in v) for f in ("wall", "train", "steps", "acc")}
               for k, v in digits.items()}
        same = sorted({r["steps"] for r in floor}) == sorted({r["steps"] for r in one})
        print(f"\ndefault digits job (`dlopt train`), median of {len(floor)} alternating runs each:\n")
        print("| digits job | batches x passes per epoch | steps | test acc | command s | training s |")
        print("|---|---|---|---|---|---|")
        for name, runs in (("`dlopt train` (data.min_batches=20)", floor), ("`dlopt train data.min_batches=1`", one)):
            m = med["floor" if runs is floor else "one pass"]
            print(f"| {name} | {runs[0]['batches']} x {runs[0]['passes']} | "
                  f"{', '.join(str(r['steps']) for r in runs)} | {m['acc']:.4f} | {m['wall']:.1f} | {m['train']:.1f} |")
        print(f"\nsteps the same: {'yes' if same else 'NO'}; wall time ratio (min_batches=20 / min_batches=1): "
              f"command {med['floor']['wall'] / med['one pass']['wall']:.2f}x, "
              f"training {med['floor']['train'] / med['one pass']['train']:.2f}x")


if __name__ == "__main__":
    main()
