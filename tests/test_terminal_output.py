"""What dlopt shows on the terminal (issue 28). Off a terminal (CI, a pipe, a file: the `cli` fixture's stdout) no
progress bar is drawn and the run's epoch lines reach stdout as train.log has them; in a terminal (a pseudo-terminal
here) the bar is there as before. No library's warning reaches stderr for train, resume, tune-lr, a sweep and a
search (the run's log file keeps them), while dlopt's own warnings still do."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import warnings
from pathlib import Path

import pytest

from dlopt import terminal

BAR = ("\r", "it/s", "DataLoader", "Finding best initial lr", "Epoch 1/")  # what a TQDM bar leaves in a file
# a library's warning as Python prints it (FILE.py:LINE: [Category:] text) or as a log line of a logger not dlopt's
LIBRARY_WARNING = re.compile(r"\.py:\d+: |\b\w+Warning\b|\]\[(?!dlopt\]|dlopt\.)[\w.]+\]\[WARNING\]")
EPOCH_LINE = re.compile(r"^\[[^]]+\]\[dlopt\.training\.module\]\[INFO\] - epoch \d+/\d+: .*$", re.M)


def no_bar(text: str) -> None:
    assert not [piece for piece in BAR if piece in text], text[-3000:]


def no_library_warning(stderr: str) -> None:
    assert not [line for line in stderr.splitlines() if LIBRARY_WARNING.search(line)], stderr[-3000:]


def log_of(run_dir: Path) -> str:
    (log,) = Path(run_dir).glob("*.log")
    return log.read_text()


@pytest.fixture(scope="module")
def trained(cli, tmp_path_factory):
    """A two-epoch run off a terminal: its output, folder, and train.log as the run left it."""
    cwd = tmp_path_factory.mktemp("trained")
    result = cli.ok("train", *cli.TINY, "trainer.max_epochs=2", cwd=cwd)
    (run_dir,) = cli.run_dirs(cwd)
    return result, run_dir, log_of(run_dir)


@pytest.fixture(scope="module")
def resumed(cli, trained):
    """That run resumed for a third epoch, changing a key of how it runs (resume's HOW: callbacks.progress_bar)."""
    _, run_dir, _ = trained
    result = cli.ok("train", f"resume={run_dir}", "trainer.max_epochs=3", "callbacks.progress_bar.refresh_rate=5",
                    cwd=run_dir.parents[3])
    return result, run_dir


def test_off_a_terminal_a_run_prints_its_epoch_lines_as_its_log_has_them_and_no_bar(trained):
    result, _, log = trained
    no_bar(result.output)
    printed, logged = EPOCH_LINE.findall(result.stdout), EPOCH_LINE.findall(log)
    assert len(logged) == 2 and printed == logged, result.stdout[-3000:]
    assert "best epoch 2 of 2" in result.stdout


def test_a_run_and_its_resume_show_no_library_warning(trained, resumed):
    no_library_warning(trained[0].stderr)
    result, run_dir = resumed
    no_library_warning(result.stderr)
    assert "exists and is not empty" not in result.output  # Lightning's word on the run's own checkpoints
    no_bar(result.output)
    printed, logged = EPOCH_LINE.findall(result.stdout), EPOCH_LINE.findall(log_of(run_dir))
    assert len(logged) == 3 and printed == logged[2:], result.stdout[-3000:]
    assert "best epoch 3 of 3" in result.stdout


def test_tune_lr_shows_no_bar_no_library_warning_but_its_own_warning(cli, tmp_path):
    result = cli.ok("tune-lr", *cli.TINY, cwd=tmp_path)
    no_bar(result.output)
    no_library_warning(result.stderr)
    assert "weights_only" not in result.output and ".lr_find_" not in result.output  # Lightning's temporary checkpoint
    # the data runs out after 2 steps: dlopt's own warning says so, on stderr
    assert re.search(r"\]\[dlopt\.training\.lr_find\]\[WARNING\] - no lr suggested", result.stderr), result.stderr
    (run_dir,) = cli.run_dirs(tmp_path, "tune_lr")
    assert "`weights_only` was not set" in log_of(run_dir)  # the log file keeps Lightning's lines


def test_a_precision_lightning_replaces_is_told_by_dlopt_not_by_lightning(cli, tmp_path):
    result = cli.ok("train", *cli.TINY, "trainer.precision=16-mixed", cwd=tmp_path)
    no_library_warning(result.stderr)
    assert re.search(r"\]\[dlopt\.training\.run\]\[WARNING\] - trainer\.precision=16-mixed runs as "
                     r"precision=bf16-mixed on this machine", result.stderr), result.stderr
    (run_dir,) = cli.run_dirs(tmp_path)
    assert "bf16-mixed" in log_of(run_dir)  # Lightning's own reason, in the log file


def test_a_sweep_draws_no_bars_and_shows_no_library_warning(cli, tmp_path):
    result = cli.ok("train", "-m", "seed=1,2", *cli.TINY, cwd=tmp_path)
    no_bar(result.output)
    no_library_warning(result.stderr)
    assert result.stdout.count("best epoch 1 of 1") == 2


def test_a_search_shows_no_library_warning(cli, tmp_path):
    result = cli.ok("train", "-m", "search=random", "search.n_trials=3", *cli.TINY, cwd=tmp_path)
    no_bar(result.output)
    no_library_warning(result.stderr)
    no_library_warning(result.stdout)  # Hydra puts its console back after each launch: Optuna's heartbeat notice


def test_in_a_terminal_the_progress_bar_is_drawn_as_before(cli, tmp_path):
    """`dlopt train` with stdout and stderr on a pseudo-terminal of 120 columns (a fresh process: the preloaded one
    writes to files)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([cli.exe, "train", *cli.TINY], cwd=tmp_path, env=cli.env(), stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 5)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    for piece in ("Epoch 1/1", "it/s", "Validation DataLoader 0", "Testing DataLoader 0"):
        assert piece in text, text[-3000:]
    assert not EPOCH_LINE.search(text.replace("\r\n", "\n"))  # the bar shows those numbers: the line is the log's


def test_library_warnings_go_to_the_log_file_and_dlopt_warnings_to_stderr(tmp_path, capsys, monkeypatch):
    """terminal.set_up on a root logger as Hydra leaves it (a console on stdout, a log file), in process."""
    root, file = logging.getLogger(), logging.FileHandler(tmp_path / "run.log")
    saved = root.handlers[:], root.level
    root.handlers[:] = [logging.StreamHandler(sys.stdout), file]
    root.setLevel(logging.INFO)
    monkeypatch.setattr(terminal, "_interactive", None)
    try:
        terminal.set_up()
        assert terminal.interactive() is False  # pytest's captured stdout is no terminal
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library's warnings.warn", UserWarning)
        logging.getLogger("lightning.pytorch.some").warning("a library's logged warning")
        logging.getLogger("lightning.pytorch.some").error("a library's error")
        logging.getLogger("dlopt.training.run").warning("dlopt's own warning")
        logging.getLogger("dlopt").info("dlopt's own info")
    finally:
        logging.captureWarnings(False)
        file.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    out, err = capsys.readouterr()
    logged = (tmp_path / "run.log").read_text()
    for text in ("a library's warnings.warn", "a library's logged warning", "a library's error", "dlopt's own warning",
                 "dlopt's own info"):
        assert text in logged
    assert "a library's" not in out and "dlopt's own warning" not in out and "dlopt's own info" in out
    assert "a library's error" in err and "dlopt's own warning" in err
    assert "a library's warnings.warn" not in err and "a library's logged warning" not in err
