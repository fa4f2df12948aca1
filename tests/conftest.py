"""What the tests share: the real `dlopt` command (the `cli` fixture), and how the suite runs.

- Most test files use the session-wide `cli` fixture: `Cli.run` runs the installed `dlopt` command in a temporary
  folder (never in the repo) and returns its exit status and output; `Cli.train` adds tiny training overrides
  (`Cli.TINY`) and returns the run folder it made; files share finished runs through module-scoped fixtures.
  Tests without it (whole files, and many in the files that use it) run in process: they compose the config with
  Hydra and call dlopt's functions (as `train(cfg, run_dir)`).
- A fresh `dlopt` spends seconds importing torch and Lightning, so each test process starts one fork server at its
  first call (tests/preload.py, client `Preloaded`, whose reader thread collects the answers) and each call is a
  fork of it: a process of its own, with its own folder, environment and output. A fresh process runs the call
  instead when it changes the environment (`env=`, which torch may have read at import; `Cli.imported` does),
  when asked (`fresh=True`), and always with DLOPT_TEST_PRELOAD=0.
- pyproject's addopts run the tests in pytest-xdist workers, one per core, each file whole in one worker
  (`-n auto --dist loadfile`), so a module's fixtures train once; `-n 0` runs them in this process.
- The test processes and every `dlopt` they start use one intra-op thread (OMP_NUM_THREADS=1 unless set).
- Every test that uses `cli` is marked slow (`pytest_collection_modifyitems`): `-m "not slow"` is the quick subset.
"""

from __future__ import annotations

import json
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
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

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


@pytest.fixture(scope="session")
def cli():
    cli = Cli()
    yield cli
    if cli.preloaded is not None:
        cli.preloaded.close()


def pytest_collection_modifyitems(items) -> None:
    """`python -m pytest -m "not slow"` is the quick subset: every test that starts the real `dlopt` command (through
    the `cli` fixture, directly or through a fixture of finished runs) is slow, since each start costs seconds of
    imports, as are the in-process tests marked slow by hand."""
    for item in items:
        if "cli" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
