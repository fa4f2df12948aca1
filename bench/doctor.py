"""Does `dlopt doctor` name what is wrong with a run, stay quiet on a healthy one, and does its first
remedy fix the run? Numbers for it, from deliberately sick configurations and healthy ones.

Each configuration is trained with the installed command (`dlopt train ... hydra.run.dir=KEEP/NAME`),
then read by `dlopt doctor run=KEEP/NAME` (its report in KEEP/NAME.doctor); when doctor names a symptom
of a sick configuration, `dlopt doctor run=... try=true remedies=1` trains the original again beside its
first remedy (same seed and epochs, in KEEP/NAME.try) and compares. One row per configuration: what was expected, what doctor diagnosed (symptom
keys, most fundamental first), the first remedy, the symptom's measure, val/loss (the objective) and
test/acc before -> after. Below the table, every symptom's measure for every run whether or not it
crossed its threshold (`symptoms.measure`), with doctor's evidence lines: what thresholds are
calibrated on. Then the tally: sick configurations diagnosed with their pathology, healthy ones with
no symptom, first remedies that fixed the run (objective better and the symptom gone).

    python bench/doctor.py [--jobs 2] [--keep DIR] [--only NAME[,NAME]] [--try-healthy]

Runs already finished in --keep DIR are read back, not trained again (doctor reads them again, and tries
a first remedy again when it changed). Trainings run with OMP_NUM_THREADS=1 (two cores here), at most
--jobs configurations at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from dlopt.apps import config_dir
from dlopt.diagnostics import doctor, symptoms
from installed import QUIET, dlopt, version  # bench/installed.py


@dataclass
class Case:
    name: str
    overrides: list[str]
    expected: tuple[str, ...]  # symptom keys that name its pathology (any one counts); () for a healthy run
    interrupt_after: Optional[int] = None  # Ctrl-C (SIGINT) once this many epochs are done, then resume it
    resumes: tuple[tuple[str, ...], ...] = ()  # then `dlopt train resume=RUN ...` with each, in order
    reference: Optional[str] = None  # the case of the same run trained without interruption: the same report?

    @property
    def sick(self) -> bool:
        return bool(self.expected)


CASES = [
    # sick: each with the pathology it was built to have
    Case("sigmoid_deep", ["model.depth=8", "model.width=16", "model.residual=false", "model.norm=none",
                          "model.activation=sigmoid", "trainer.max_epochs=15"],
         ("vanishing_gradients", "saturated_units")),
    Case("lr_huge", ["model.norm=none", "optimizer=sgd", "optimizer.lr=3", "trainer.max_epochs=15"],
         ("dead_units", "lr_too_high", "exploding_gradients")),
    Case("lr_tiny", ["optimizer.lr=1e-6", "trainer.max_epochs=15"], ("lr_out_of_range", "lr_too_low")),
    # issue 24: Adam 333x above the top of its usual range kills units in its first steps; plain SGD at lr 5e-4 for a
    # few epochs updates its weights 10x less than healthy runs do, and underfits
    Case("adam_huge", ["optimizer.lr=1", "trainer.max_epochs=15"], ("lr_out_of_range",)),
    Case("sgd_slow", ["optimizer=sgd", "optimizer.lr=5e-4", "trainer.max_epochs=5"], ("lr_too_low",)),
    # digits at data.fraction=0.05 with the default cnn and cosine schedule does not overfit by val/loss
    # (it falls to the end, 0.325 at epoch 99); a wide MLP at a constant lr does
    Case("overfit", ["data.fraction=0.05", "model=mlp", "model.width=512", "scheduler=none",
                     "callbacks.early_stopping=null", "trainer.max_epochs=100"], ("overfitting",)),
    Case("overfit_1d", ["data=mnist1d", "data.fraction=0.1", "model=mlp", "callbacks.early_stopping=null",
                        "trainer.max_epochs=60"], ("overfitting",)),
    Case("underfit", ["data=mnist1d", "model=mlp", "model.width=4", "model.depth=1", "trainer.max_epochs=20"],
         ("underfitting",)),
    # healthy: the default job and the other models and data, default epochs (30, early stopping on)
    Case("default", [], ()),
    Case("resnet", ["model=resnet"], ()),
    Case("mlp", ["model=mlp"], ()),
    Case("vit", ["model=vit"], ()),
    Case("mnist1d_cnn", ["data=mnist1d"], ()),
    Case("sgd", ["optimizer=sgd"], ()),  # plain SGD at its default lr: its first steps move the weights by 3%
    # issue 24: resumed runs. A healthy run stopped with Ctrl-C after epoch 18 of 20 and resumed (an older dlopt kept
    # only the records of epochs 18-20 and called it "lr too low"); a finished run of 10 epochs resumed with
    # optimizer=sgd (refused: it would change what was trained; an older dlopt rewrote its record) and then trained
    # on to 20 epochs
    Case("default_20", ["trainer.max_epochs=20"], ()),
    Case("resumed", ["trainer.max_epochs=20"], (), interrupt_after=18, reference="default_20"),
    Case("finished_resumed", ["trainer.max_epochs=10"], (), resumes=(("optimizer=sgd",), ("trainer.max_epochs=20",))),
]

SHORT = {"lr_out_of_range": "lr_far", "vanishing_gradients": "vanish", "exploding_gradients": "explode", "dead_units": "dead",
         "saturated_units": "satur", "lr_too_high": "lr_hi", "stuck": "stuck", "lr_too_low": "lr_lo",
         "underfitting": "underfit", "overfitting": "overfit", "not_converged": "not_conv",
         "eager_stopping": "eager", "too_few_steps": "steps"}

_print_lock = threading.Lock()
_start = time.perf_counter()


def say(text: str) -> None:
    with _print_lock:
        print(f"[{time.perf_counter() - _start:6.0f} s] {text}", flush=True)


def run(args: list[str], log: Path, check: bool = True) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("a") as out:
        code = subprocess.call([*dlopt(), *args], cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code and check:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"`dlopt {' '.join(args)}` exited with {code}; end of {log}:\n{tail}")
    return code


def interrupted(args: list[str], log: Path, folder: Path, epochs: int) -> None:
    """`dlopt train ARGS`, stopped with Ctrl-C (SIGINT) once its history.json holds `epochs` epochs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("a") as out:
        proc = subprocess.Popen([*dlopt(), *args], cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            try:
                done = len(json.loads((folder / "history.json").read_text()))
            except (OSError, ValueError):
                done = 0
            if done >= epochs:
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.05)
        proc.wait()
    if (folder / "metrics.json").is_file():
        raise RuntimeError(f"{folder} finished before it was interrupted at epoch {epochs}")


def case_resumes(case: Case, folder: Path, log: Path) -> None:
    """The case's resumes in order: each either trains on or is refused leaving the run folder byte for byte as
    it was (said in the log and in the run's RESUMES file)."""
    lines = []
    for overrides in case.resumes:
        before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        code = run(["train", f"resume={folder}", *overrides], log, check=False)
        after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        lines.append(f"resume {' '.join(overrides)}: exit {code}" +
                     ("" if not code else ", run folder unchanged" if after == before else ", RUN FOLDER CHANGED"))
        say(f"{case.name}: {lines[-1]}")
    (folder.parent / f"{case.name}.resumes").write_text("".join(f"{line}\n" for line in lines))


def thresholds() -> dict[str, float]:
    return yaml.safe_load((Path(config_dir()) / "diagnostics" / "default.yaml").read_text())["thresholds"]


def process(case: Case, keep: Path, try_healthy: bool) -> dict:
    """Train the case (unless done), doctor it, try its first remedy (unless tried); its doctor.json."""
    folder = keep / case.name
    log = keep / f"{case.name}.log"
    times = {}
    overrides = folder / ".hydra" / "overrides.yaml"
    if overrides.is_file() and yaml.safe_load(overrides.read_text()) != [*case.overrides, *QUIET]:
        say(f"{case.name}: {folder} was trained with other overrides; training again")
        shutil.rmtree(folder)
        shutil.rmtree(keep / f"{case.name}.try", ignore_errors=True)
    if not (folder / "metrics.json").is_file():
        say(f"{case.name}: training  dlopt train {' '.join(case.overrides)}")
        start = time.perf_counter()
        shutil.rmtree(folder, ignore_errors=True)
        if case.interrupt_after:
            interrupted(["train", *case.overrides, *QUIET, f"hydra.run.dir={folder}"], log, folder,
                        case.interrupt_after)
            run(["train", f"resume={folder}"], log)
        else:
            run(["train", *case.overrides, *QUIET, f"hydra.run.dir={folder}"], log)
        case_resumes(case, folder, log)
        times["train"] = time.perf_counter() - start
    report = keep / f"{case.name}.doctor"
    run(["doctor", f"run={folder}", f"hydra.run.dir={report}"], log)
    found = json.loads((report / doctor.REPORT).read_text())
    keys = [s["symptom"] for s in found["symptoms"]]
    say(f"{case.name}: doctor says {', '.join(keys) or 'healthy'}")
    tries = keep / f"{case.name}.try"
    first = " ".join(found["symptoms"][0]["remedies"][0]["overrides"]) if keys else None
    tried = json.loads((tries / doctor.REPORT).read_text()) if (tries / doctor.REPORT).is_file() else {}
    if keys and (case.sick or try_healthy) and [t["remedy"] for t in tried.get("tried", [])] != [first]:
        say(f"{case.name}: trying remedy 1 ({first}) beside the original")
        shutil.rmtree(tries, ignore_errors=True)
        start = time.perf_counter()
        code = run(["doctor", f"run={folder}", "try=true", "remedies=1", f"hydra.run.dir={tries}"], log, check=False)
        times["try"] = time.perf_counter() - start
        if code:
            say(f"{case.name}: doctor try=true exited with {code}; see {log}")
        tried = json.loads((tries / doctor.REPORT).read_text()) if (tries / doctor.REPORT).is_file() else {}
    if keys and "tried" in tried:
        found["tried"] = tried["tried"]
    say(f"{case.name}: done ({', '.join(f'{k} {v:.0f} s' for k, v in times.items()) or 'read back'})")
    return found


def report_lines(found: dict) -> list:
    """What a report says of a run, without where the run is."""
    return [(s["symptom"], s["evidence"], [r["overrides"] for r in s["remedies"]]) for s in found["symptoms"]]


def measures(folder: Path, t: dict[str, float]) -> dict[str, float | None]:
    """Every symptom's measure in a run, whether or not it is a symptom there."""
    d = doctor.examine(folder, t, str(folder))
    return {key: symptoms.measure(key, d.records, d.history, d.metrics, d.config, t) for key in symptoms.ORDER}


def show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.3g}" if value == 0 or 1e-3 <= abs(value) < 1e4 else f"{value:.1e}"


def fixed(row: dict, mode: str) -> tuple[bool, bool]:
    """(objective better, symptom gone) of a tried remedy; a diverged original (no objective) is beaten by
    any finite one."""
    before, after = row.get("objective_before"), row.get("objective_after")
    if after is None:
        better = False
    elif before is None:
        better = True
    else:
        better = after < before if mode != "max" else after > before
    return better, bool(row.get("symptom_gone"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="configurations processed at once (each 1 thread)")
    parser.add_argument("--keep", type=Path, help="where runs go, kept and reused (default: a temp folder)")
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--try-healthy", action="store_true",
                        help="also try the first remedy of a healthy configuration's false symptom")
    args = parser.parse_args()
    keep = args.keep or Path(tempfile.mkdtemp(prefix="dlopt_doctor_"))
    keep.mkdir(parents=True, exist_ok=True)
    cases = [c for c in CASES if not args.only or c.name in args.only.split(",")]
    if not cases:
        raise SystemExit(f"--only {args.only}: no such case; cases: {', '.join(c.name for c in CASES)}")
    say(f"dlopt at {version()}")
    say(f"{len(cases)} configurations, {args.jobs} at once, runs in {keep}")
    # the sick ones first: they also train remedies, so they are the long ones
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {c.name: pool.submit(process, c, keep, args.try_healthy) for c in cases}
        reports = {}
        for c in cases:
            try:
                reports[c.name] = futures[c.name].result()
            except RuntimeError as err:
                say(f"{c.name}: FAILED: {err}")
    t = thresholds()

    print()
    print("Every run: `dlopt train OVERRIDES` (with " + " ".join(QUIET) + "), then `dlopt doctor`; sick ones "
          "also `dlopt doctor try=true remedies=1` (the original trained again beside its first remedy, same "
          "seed and epochs). Healthy ones use the default 30 epochs with early stopping; sick ones the epochs shown.")
    head = (f"{'name':13s} {'expected':22s} {'diagnosed (doctor)':36s} {'first remedy':32s} "
            f"{'measure before -> after':30s} {'val/loss before -> after':25s} {'test/acc before -> after':25s} fixed")
    print(head)
    print("-" * len(head))
    tally = {"diagnosed": 0, "sick": 0, "clean": 0, "healthy": 0, "fixed": 0}
    details = []
    for c in cases:
        if c.name not in reports:
            print(f"{c.name:13s} failed")
            continue
        found = reports[c.name]
        folder = keep / c.name
        metrics = json.loads((folder / "metrics.json").read_text())
        keys = [s["symptom"] for s in found["symptoms"]]
        remedy = " ".join(found["symptoms"][0]["remedies"][0]["overrides"]) if keys and found["symptoms"][0]["remedies"] \
            else "-"
        tried = (found.get("tried") or [None])[0]
        ok = ""
        if c.sick:
            tally["sick"] += 1
            hit = any(k in c.expected for k in keys)
            tally["diagnosed"] += hit
        else:
            tally["healthy"] += 1
            tally["clean"] += not keys
        if tried:
            better, gone = fixed(tried, metrics.get("mode", "min"))
            ok = "yes" if better and gone else f"no ({'better' if better else 'not better'}, " \
                                               f"{'gone' if gone else 'still there'})"
            tally["fixed"] += c.sick and better and gone
            measure = f"{show(tried['measure_before'])} -> {show(tried['measure_after'])}"
            objective = f"{show(tried['objective_before'])} -> {show(tried['objective_after'])}"
            acc = f"{show(tried['test_acc_before'])} -> {show(tried['test_acc_after'])}"
        else:
            measure = show(found["symptoms"][0]["measure"]) if keys else "-"
            objective, acc = show(metrics.get("objective")), show(metrics.get("test/acc"))
            if c.sick:
                ok = "not tried"
        expected = "/".join(c.expected) if c.sick else "healthy"
        print(f"{c.name:13s} {expected[:22]:22s} {(','.join(keys) or 'healthy')[:36]:36s} {remedy[:32]:32s} "
              f"{measure:30s} {objective:25s} {acc:25s} {ok}")
        details.append((c, found, folder, tried, metrics))

    print()
    print("Overrides, how each run ended, every symptom's measure (whether or not over its threshold) and doctor's "
          "evidence:")
    print("  measures: vanish = first/last grad ratio (symptom < {vanishing:g}), explode = largest/median grad norm (> "
          "{exploding:g}), dead/satur = largest fraction (> {dead:g} / > {saturated:g}), lr_hi/lr_lo = top "
          "median update/weight ratio (> {update_high:g} / < {update_low:g}), stuck = best train loss/ln(classes) "
          "(> {stuck:g}), underfit = last train/acc (< {underfit:g}), overfit = last/best val/loss (> 1+{overfit:g}, "
          "gap > {gap:g}), not_conv = monitor change over the last quarter (> {converge:g}), eager = epochs run / "
          "max_epochs (< {eager:g})".format(**t))
    for c, found, folder, tried, metrics in details:
        print(f"{c.name}: dlopt train {' '.join(c.overrides) or '(defaults)'}")
        if c.interrupt_after:
            print(f"    Ctrl-C after epoch {c.interrupt_after}, then dlopt train resume=RUN")
        resumed = keep / f"{c.name}.resumes"
        for line in resumed.read_text().splitlines() if resumed.is_file() else []:
            print(f"    {line}")
        if c.reference in reports:
            same = report_lines(reports[c.name]) == report_lines(reports[c.reference])
            print(f"    doctor's report {'is' if same else 'is NOT'} the one of {c.reference} (trained without a break)")
        print(f"    ended: {metrics.get('stop_reason')}, {metrics.get('epochs')} epochs, best epoch "
              f"{metrics.get('best_epoch')}, train/acc {show(metrics.get('train/acc'))}, val/acc "
              f"{show(metrics.get('val/acc'))}, test/acc {show(metrics.get('test/acc'))}, {metrics.get('wall_time_s')} s")
        runs = [("original", folder)]
        if tried and tried.get("run"):
            runs.append((f"remedy ({tried['remedy']})", Path(tried["run"])))
        for label, run_folder in runs:
            m = measures(run_folder, t)
            print(f"    measures, {label}: " + "  ".join(f"{SHORT[k]} {show(v)}" for k, v in m.items()))
        for s in found["symptoms"]:
            print(f"    {s['symptom']} ({s['measure_name']} {show(s['measure'])}): {s['evidence']}")
            print("        remedies: " + " | ".join(" ".join(r["overrides"]) for r in s["remedies"]))
        if tried:
            after = doctor.examine(Path(tried["run"]), t, tried["run"]) if tried.get("run") else None
            if after is not None:
                print(f"    after remedy 1, doctor says: {', '.join(f.symptom for f in after.findings) or 'healthy'}")
                for f in after.findings:
                    print(f"        {f.symptom}: {f.evidence}")

    print()
    sick, healthy = tally["sick"], tally["healthy"]
    print(f"sick diagnosed with their pathology: {tally['diagnosed']}/{sick} (target: all)")
    print(f"healthy with zero symptoms:          {tally['clean']}/{healthy} (target: all)")
    print(f"first remedy fixed the run (val/loss better and symptom gone): {tally['fixed']}/{sick} (target: >= {sick - 1} of {sick})")
    print(f"wall time {time.perf_counter() - _start:.0f} s; runs in {keep}")


if __name__ == "__main__":
    main()
