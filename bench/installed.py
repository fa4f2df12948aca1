"""What benches that run the installed `dlopt` command share (no torch import): the command, the overrides
that keep its output quiet, and the commit the figures are of."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null"]


def version() -> str:
    """The commit of dlopt the figures are of, and the files of dlopt/ and conf/ changed since."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], check=False, cwd=Path(__file__).parent, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""
    changed = git("status", "--porcelain", "--", "dlopt", "conf").splitlines()
    head = git("log", "-1", "--format=%h %s")[:80] or "unknown commit"
    return head + (f" + uncommitted changes in {', '.join(c[3:] for c in changed)}" if changed else "")


def dlopt() -> list[str]:
    script = Path(sys.executable).with_name("dlopt")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dlopt"]


def call(argv: list[str], log: Path, threads: int = 1) -> float:
    """Run argv (cwd: the log's folder, output appended to the log) with `threads` OMP threads; its wall time.
    Exit with the log's last lines on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        code = subprocess.call(argv, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"`{' '.join(argv[-6:])}` exited with {code}; end of {log}:\n{tail}")
    return time.perf_counter() - start
