"""Shared by the search benches: run the real `dlopt` command and read back the study it left."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)


def dlopt() -> list[str]:
    """The `dlopt` command of this Python environment."""
    script = Path(sys.executable).with_name("dlopt")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dlopt"]


def command(workdir: Path, args: list[str], log: Path, threads: int) -> float:
    """Run `dlopt ARGS` in workdir, its output in log; the wall time in seconds. A failure shows the log's end."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with log.open("a") as out:
        code = subprocess.call([*dlopt(), *args], cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise SystemExit(f"`dlopt {' '.join(args)}` exited with {code}; end of {log}:\n{tail}")
    return time.perf_counter() - start


def search(workdir: Path, name: str, overrides: list[str], threads: int) -> tuple[list[optuna.trial.FrozenTrial], float]:
    """Run (or, if its study is complete, read back) the search called `name`: its trials, and the wall time."""
    db = workdir / "outputs" / "train" / "search" / name / "study.db"
    wall = command(workdir, ["train", "-m", f"search.study_name={name}", *overrides], workdir / f"{name}.log", threads)
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.FAIL:
            print(f"  {name}: trial {t.number} failed: {t.user_attrs.get('error', '?')}")
    return trials, wall


def retrain(workdir: Path, name: str, params: dict, fixed: list[str], n: int, threads: int,
            seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of the objective of `params` trained again with n other weight seeds
    (seed + 1000 k), each a run kept in workdir/noise/NAME_wK and read back if it is there."""
    values = []
    for k in range(1, n + 1):
        run = workdir / "noise" / f"{name}_w{k}"
        if not (run / "metrics.json").is_file():
            overrides = [f"{key}={value}" for key, value in params.items()]
            command(workdir, ["train", *fixed, *overrides, f"seed={seed + 1000 * k}", "trainer.enable_progress_bar=false",
                              "callbacks.progress_bar=null", f"hydra.run.dir={run}"], workdir / f"{run.name}.log", threads)
        values.append(json.loads((run / "metrics.json").read_text())["objective"])
    return statistics.mean(values), statistics.stdev(values) if n > 1 else float("nan")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every search bench has: trial threads and a kept scratch folder."""
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the trials (1: fastest here)")
    parser.add_argument("--workdir", type=Path, help="scratch folder for the sweeps, kept (default: a temp folder)")


def workdir_of(args: argparse.Namespace, prefix: str) -> Path:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir
