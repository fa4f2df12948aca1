"""What the tests share: the real `dlopt` command (the `cli` and `in_process` fixtures), and how the suite runs.

- Many test files use the session-wide `cli` fixture: `Cli.run` runs the installed `dlopt` command in a temporary
  folder (never in the repo) and returns its exit status and output; `Cli.train` adds tiny training overrides
  (`Cli.TINY`) and returns the run folder it made; files share finished runs through module-scoped fixtures.
- A test that checks what a command refuses or prints, and needs no process of its own (it trains nothing, changes
  no environment, checks no imports), uses the `in_process` fixture instead: `InProcess.run` calls the console
  script's entry point, `dlopt.cli.main`, in the test process and returns the same `Result` as `Cli.run`, so the
  assertions read the same; it puts back what the command changed in the process (`process_state`).
- Tests with neither fixture run in process too, a level lower: they compose the config with Hydra and call
  dlopt's functions (as `train(cfg, run_dir)`).
- A fresh `dlopt` spends seconds importing torch and Lightning, so each test process starts one fork server at its
  first `cli` call (tests/preload.py, client `Preloaded`, whose reader thread collects the answers) and each call is
  a fork of it: a process of its own, with its own folder, environment and output. A fresh process runs the call
  instead when it changes the environment (`env=`, which torch may have read at import; `Cli.imported` does),
  when asked (`fresh=True`), and always with DLOPT_TEST_PRELOAD=0.
- pyproject's addopts run the tests in pytest-xdist workers, one per core, each file whole in one worker
  (`-n auto --dist loadfile`), so a module's fixtures train once; `-n 0` runs them in this process.
- The test processes and every `dlopt` they start use one intra-op thread (OMP_NUM_THREADS=1 unless set).
- Every test that uses `cli` is marked slow (`pytest_collection_modifyitems`): `-m "not slow"` is the quick subset.
  Tests that use `in_process` are marked `in_process`, and slow only when they also use `cli` (through a fixture of
  finished runs) or are marked slow by hand.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from preload import exit_status

# One intra-op thread in the test processes and in every `dlopt` they start (inherited), unless the caller chose:
# the tests run in parallel workers (pytest-xdist, pyproject's addopts), and two workers of two threads each on two
# cores made trainings several times slower, not faster.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        tail = "\n".join(self.output.splitlines()[-40:])
        return f"$ {' '.join(self.args)}\nexit {self.returncode} after {self.seconds:.1f}s\n{tail}"


def _strict_json(path: Path) -> dict:
    """metrics.json parsed as standard JSON: NaN/Infinity are not JSON and fail here."""

    def reject(constant: str):
        raise ValueError(f"{path} holds the non-JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


class Preloaded:
    """The client of tests/preload.py: one server per test process, started at the first `dlopt` call."""

    SERVER = Path(__file__).with_name("preload.py")

    def __init__(self, exe: str, env: dict[str, str]):
        self.exe, self.env, self.server = exe, env, None

    def start(self) -> None:
        self.log = tempfile.TemporaryFile("w+")
        self.server = subprocess.Popen([sys.executable, str(self.SERVER), self.exe], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=self.log, text=True, env=self.env)
        self.answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self.read, args=(self.server.stdout,), daemon=True).start()
        self.answer("ready", timeout=600)

    def read(self, stream) -> None:
        for line in stream:
            self.answers.put(line)
        self.answers.put("")  # the server has ended

    def answer(self, key: str, timeout: float):
        line = self.answers.get(timeout=timeout)
        if not line:
            self.log.seek(0)
            raise RuntimeError(f"the preloaded dlopt (tests/preload.py) has ended:\n{self.log.read()[-4000:]}")
        return json.loads(line)[key]

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        """`argv` in a fork of the server, answered as subprocess.run answers: its exit status, stdout and stderr;
        a timeout kills it and what it started (its process group) and raises subprocess.TimeoutExpired."""
        if self.server is None:
            self.start()
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            out.touch()
            err.touch()
            request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            self.server.stdin.write(json.dumps(request) + "\n")
            self.server.stdin.flush()
            pid = self.answer("pid", timeout=60)
            try:
                status = self.answer("status", timeout=timeout)
            except queue.Empty:
                os.killpg(pid, signal.SIGKILL)
                self.answer("status", timeout=60)
                raise subprocess.TimeoutExpired(argv, timeout, out.read_text(), err.read_text()) from None
            return subprocess.CompletedProcess(argv, status, out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))

    def close(self) -> None:
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait(timeout=60)


class Cli:
    """Runs `dlopt` and finds what it wrote under a cwd."""

    TINY = (
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    )

    def __init__(self):
        exe = Path(sys.executable).with_name("dlopt")  # the venv that runs pytest
        self.exe = str(exe) if exe.exists() else shutil.which("dlopt")
        assert self.exe, "the dlopt command is not installed"
        self.preloaded = Preloaded(self.exe, self.env()) if os.environ.get("DLOPT_TEST_PRELOAD", "1") != "0" else None

    @staticmethod
    def env(offline: bool = False) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("HYDRA_FULL_ERROR", None)  # it would turn every one-line error into a traceback
        if offline:  # any download attempt fails at once, with or without a network
            for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
                env[key] = "http://127.0.0.1:9"
            for key in ("no_proxy", "NO_PROXY"):
                env.pop(key, None)
        return env

    def run(self, *args: str, cwd: Path, timeout: float = 300, offline: bool = False,
            env: dict[str, str | None] | None = None, fresh: bool = False) -> Result:
        """`dlopt ARGS` in cwd; `env` adds to its environment (None: removes the variable).

        A fork of the preloaded `dlopt` (tests/preload.py) runs it, as a process of its own with its own folder,
        environment and output, without seconds of imports. A fresh process runs it when asked (`fresh`), when the
        call changes the environment (`env`), which torch may have read at import, and with DLOPT_TEST_PRELOAD=0."""
        argv = [self.exe, *map(str, args)]
        start = time.perf_counter()
        full = {k: v for k, v in {**self.env(offline), **(env or {})}.items() if v is not None}
        if not fresh and env is None and self.preloaded is not None:
            proc = self.preloaded.run(argv, cwd, full, timeout)
        else:
            proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full)
        return Result(argv, proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)

    def imported(self, *args: str, cwd: Path, timeout: float = 300) -> tuple[Result, set[str]]:
        """`dlopt ARGS` with Python's import log (PYTHONPROFILEIMPORTTIME): its result (without the log) and the
        top-level packages it imported. What "before torch is imported" means, checked without a clock."""
        result = self.run(*args, cwd=cwd, timeout=timeout, env={"PYTHONPROFILEIMPORTTIME": "1"})
        log = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
        packages = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in log}
        stderr = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("import time:"))
        assert log, f"no import log: {result.describe()}"
        return Result(result.args, result.returncode, result.stdout, stderr, result.seconds), packages

    def python(self, code: str, cwd: Path, timeout: float = 60) -> Result:
        argv = [sys.executable, "-c", code]
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=self.env())
        return Result(argv, proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)

    def ok(self, *args: str, cwd: Path, timeout: float = 300, fresh: bool = False) -> Result:
        result = self.run(*args, cwd=cwd, timeout=timeout, fresh=fresh)
        assert result.returncode == 0, result.describe()
        assert "Traceback" not in result.output, result.describe()
        return result

    def train(self, *overrides: str, cwd: Path, flags: tuple[str, ...] = (), timeout: float = 300,
              fresh: bool = False) -> Path:
        """`dlopt train FLAGS TINY OVERRIDES` in cwd (later overrides win); the one new run folder.

        Hydra flags (--config-dir DIR) go first: argparse takes no flag after the first override.
        """
        before = set(self.run_dirs(cwd))
        result = self.ok("train", *flags, *self.TINY, *overrides, cwd=cwd, timeout=timeout, fresh=fresh)
        new = [d for d in self.run_dirs(cwd) if d not in before]
        assert len(new) == 1, f"expected one new run folder, got {new}\n{result.describe()}"
        return new[0]

    @staticmethod
    def run_dirs(cwd: Path, command: str = "train") -> list[Path]:
        """Single-run folders outputs/COMMAND/DATE/TIME (not sweeps or searches), oldest first."""
        root = Path(cwd) / "outputs" / command
        if not root.is_dir():
            return []
        return sorted(d for d in root.glob("*/*") if d.is_dir() and d.parent.name not in ("multirun", "search"))

    @staticmethod
    def sweep_dirs(cwd: Path, command: str = "train") -> list[Path]:
        return sorted(d for d in (Path(cwd) / "outputs" / command / "multirun").glob("*/*") if d.is_dir())

    @staticmethod
    def metrics(run_dir: Path) -> dict:
        return _strict_json(Path(run_dir) / "metrics.json")

    @staticmethod
    def config(run_dir: Path) -> dict:
        return yaml.safe_load((Path(run_dir) / ".hydra" / "config.yaml").read_text())

    @staticmethod
    def assert_finite(metrics: dict) -> None:
        for key, value in metrics.items():
            if isinstance(value, float):
                assert math.isfinite(value), f"{key}={value}"
        for key in [k for k in metrics if k.endswith(("/acc", "/f1"))]:
            assert 0.0 <= metrics[key] <= 1.0, f"{key}={metrics[key]}"

    @staticmethod
    def image_tree(root: Path, classes=("ant", "bee", "cat"), per_class: int = 8) -> Path:
        """per_class small random RGB PNGs (12x10) in root/<class>/."""
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        for name in classes:
            (root / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / name / f"{i}.png")
        return root


@contextlib.contextmanager
def process_state(cwd: Path, argv: list[str]) -> Iterator[None]:
    """The block runs in `cwd` with sys.argv `argv` (and without HYDRA_FULL_ERROR, as `Cli.env`); afterwards this
    process is as it was before it, whatever a dlopt command changed in it:
    - Hydra's global state: GlobalHydra (initialized by hydra.main, which `initialize_config_dir` then refuses) is
      cleared before and after, HydraConfig is put back;
    - logging: the handlers Hydra's job_logging and dlopt.terminal install (console, the run's log file, stderr)
      are closed, and every logger's handlers, filters, level and flags put back, as are the warnings' capture
      (logging.captureWarnings) and dlopt.terminal's choice of a progress bar;
    - sys.argv (dlopt.hydra_glue.run sets it), os.environ (HYDRA_FULL_ERROR, PL_GLOBAL_SEED, ...), the cwd;
    - what a process keeps per command: dlopt.folders' folders named, claimed and created (keyed by relative paths,
      and removed by `discard`), the runs listing's cache of search commands;
    - the random states of random, and of numpy and torch (with torch's thread count) if already imported."""
    import random

    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from dlopt import folders

    def loggers() -> list[logging.Logger]:
        return [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger))]

    saved = [(logger, logger.level, logger.disabled, logger.propagate, list(logger.handlers), list(logger.filters))
             for logger in loggers()]
    import warnings

    from dlopt import terminal

    captured = getattr(warnings.showwarning, "__module__", None) == "logging"  # logging.captureWarnings(True)
    interactive = terminal._interactive
    raise_exceptions = logging.raiseExceptions
    handlers = {handler for *_, attached, _ in saved for handler in attached}
    environ, hydra_config, state = dict(os.environ), HydraConfig.instance().cfg, random.getstate()
    numpy, torch = sys.modules.get("numpy"), sys.modules.get("torch")  # not imported here: a command may not
    numpy_state = numpy.random.get_state() if numpy else None
    torch_state = (torch.get_num_threads(), torch.get_rng_state()) if torch else None
    GlobalHydra.instance().clear()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(cwd)
            patch.setattr(sys, "argv", list(argv))
            patch.delenv("HYDRA_FULL_ERROR", raising=False)
            for name in ("_created", "_named", "_claimed", "_refused"):
                patch.setattr(folders, name, type(getattr(folders, name))())
            yield
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = hydra_config
        for handler in {h for logger in loggers() for h in logger.handlers} - handlers:
            handler.close()
        for logger, level, disabled, propagate, attached, filters in saved:
            logger.setLevel(level)
            logger.disabled, logger.propagate, logger.handlers, logger.filters = disabled, propagate, attached, filters
        if not captured:  # dlopt.terminal.set_up captures them: put back warnings.showwarning and logging's own note
            logging.captureWarnings(False)
        terminal._interactive = interactive
        logging.raiseExceptions = raise_exceptions
        for logger in set(loggers()) - {logger for logger, *_ in saved}:  # created by the command
            logger.handlers = []
        os.environ.clear()
        os.environ.update(environ)
        random.setstate(state)
        if numpy:
            numpy.random.set_state(numpy_state)
        if torch:
            torch.set_num_threads(torch_state[0])
            torch.set_rng_state(torch_state[1])
        if "dlopt.runs.listing" in sys.modules:
            sys.modules["dlopt.runs.listing"].search_command.cache_clear()


class InProcess:
    """Runs `dlopt ARGS` in this process, as the console script does: `dlopt.cli.main(ARGS)`. For tests of what a
    command refuses or prints that need no process of their own: seconds faster than `Cli.run` (no fork, no
    process start), with the same `Result`. Not for a command that trains, changes the environment torch read at
    import, starts processes or handles signals: those stay with `cli`."""

    EXE = str(Path(sys.executable).with_name("dlopt"))  # sys.argv[0], as for the console script
    TINY, run_dirs, sweep_dirs = Cli.TINY, staticmethod(Cli.run_dirs), staticmethod(Cli.sweep_dirs)  # as `cli`'s

    def __init__(self, capfd: pytest.CaptureFixture[str]):
        self.capfd = capfd

    def run(self, *args: str, cwd: Path) -> Result:
        """`dlopt ARGS` in cwd: its exit status (main's return value, or SystemExit's; 1 and the traceback on stderr
        for any other exception, as Python's own exit), and what it wrote to stdout and stderr (file descriptors
        included)."""
        from dlopt.cli import main

        argv = [self.EXE, *map(str, args)]
        self.capfd.readouterr()  # what the test printed before: not the command's
        start = time.perf_counter()
        with process_state(Path(cwd), argv):
            try:
                status = exit_status(main(argv[1:]))
            except SystemExit as stop:
                status = exit_status(stop.code)
            except Exception:
                traceback.print_exc()
                status = 1
            sys.stdout.flush()
            sys.stderr.flush()
        out, err = self.capfd.readouterr()
        return Result(argv, status, out, err, time.perf_counter() - start)



@pytest.fixture(scope="session")
def cli():
    cli = Cli()
    yield cli
    if cli.preloaded is not None:
        cli.preloaded.close()


@pytest.fixture
def in_process(capfd) -> InProcess:
    """`in_process.run("train", ..., cwd=tmp_path)`: `dlopt ...` run in this process (InProcess)."""
    return InProcess(capfd)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "in_process: runs dlopt's entry point in the test process (the in_process "
                                       "fixture, see tests/conftest.py)")


def pytest_collection_modifyitems(items) -> None:
    """`python -m pytest -m "not slow"` is the quick subset: every test that starts the real `dlopt` command (through
    the `cli` fixture, directly or through a fixture of finished runs) is slow, since each start costs seconds of
    imports, as are the in-process tests marked slow by hand. A test using `in_process` is marked in_process: the
    entry point in the test process costs no process start (slow only if it also uses `cli`)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "cli" in fixtures:
            item.add_marker(pytest.mark.slow)
        if "in_process" in fixtures:
            item.add_marker(pytest.mark.in_process)
