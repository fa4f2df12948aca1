"""Ctrl-C at any moment (issue 28): one line on stderr and exit status 130, never a traceback. A training run that
saved an epoch keeps its folder, which says how to continue (interrupted.txt; `dlopt runs` lists it as interrupted,
not running), and the line's resume command continues it; interrupted earlier, nothing is left behind.

Ctrl-C is SIGINT to the command's process group, as a terminal sends it. Each test waits for what it is about (a
checkpoint on disk, the run folder made) before sending it, never for a number of seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

RESUME = "continue with: dlopt train resume="


def interrupted(cli, cwd: Path, ready, *args: str) -> tuple[int, str, str]:
    """Start `dlopt ARGS` in its own process group, send it SIGINT once `ready()` holds, and return its exit status,
    stdout and stderr."""
    proc = subprocess.Popen([cli.exe, *args], cwd=cwd, env=cli.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        while not ready() and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, f"dlopt {' '.join(args)} ended before it could be interrupted:\n" \
                                    f"{proc.communicate()[1][-3000:]}"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out, err


def only_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_ctrl_c_while_training_keeps_the_run_and_says_how_to_continue(cli, tmp_path):
    checkpoint = lambda: any(tmp_path.glob("outputs/train/*/*/checkpoints/last.ckpt"))  # noqa: E731
    status, out, err = interrupted(cli, tmp_path, checkpoint, "train", "trainer.max_epochs=100000",
                                   "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "diagnostics=none")
    assert status == 130, err
    line = only_line(err)
    (run,) = cli.run_dirs(tmp_path)
    assert line == f"dlopt train: interrupted; {run.resolve()} keeps the last finished epoch (checkpoints/last.ckpt); " \
                   f"{RESUME}{run.resolve()}"
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out, out[-2000:]
    assert RESUME in (run / "interrupted.txt").read_text()
    listed = cli.ok("runs", "format=json", cwd=tmp_path)
    assert '"status": "interrupted"' in listed.stdout, listed.stdout

    resumed = cli.ok(*line.partition("continue with: dlopt ")[2].split(), "trainer.max_epochs=1", cwd=tmp_path)
    assert resumed.stdout.splitlines()[-1].endswith(f"results in {run.resolve()}"), resumed.describe()
    assert cli.metrics(run)["epochs"] >= 1
    listed = cli.ok("runs", "format=json", cwd=tmp_path)
    assert '"status": "done"' in listed.stdout, listed.stdout


def logged(folder: Path, text: str) -> bool:
    return any(text in log.read_text(errors="replace") for log in folder.glob("outputs/*/*/*/*.log"))


@pytest.mark.parametrize("command, ready", [
    ("train", ".hydra"),  # Hydra is making the run folder, or the run has just started
    ("train", "model:"),  # in the first epoch, which data.min_batches makes long
    ("tune-lr", ".hydra"),
])
def test_ctrl_c_before_anything_was_saved_leaves_nothing_behind(cli, tmp_path, command, ready):
    started = (lambda: any(tmp_path.glob("outputs/*/*/*/.hydra/config.yaml"))) if ready == ".hydra" else \
        (lambda: logged(tmp_path, ready))
    longer = "lr_find.num_training=100000" if command == "tune-lr" else "trainer.max_epochs=100000"
    status, out, err = interrupted(cli, tmp_path, started, command, longer, "data.min_batches=100000")
    assert status == 130, err
    assert "Traceback" not in out + err, err[-3000:]
    line = only_line(err)
    if RESUME in line:  # the first epoch ended before the signal came (a very slow start): the other outcome, whole
        (run,) = cli.run_dirs(tmp_path)
        assert command == "train" and (run / "interrupted.txt").is_file(), line
        return
    # the run had started (its task said so) or Hydra was still making its folder (the command said so)
    assert line in (f"dlopt {command}: interrupted before anything was saved; nothing is left behind",
                    f"dlopt {command}: interrupted before a run started: nothing of it was saved"), line
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir()), \
        sorted(map(str, (tmp_path / "outputs").rglob("*")))
