"""One Hydra app per command. Only Hydra is imported at module level: `--help` and `--cfg`
never import torch; the task functions import the training code when they run."""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dlopt.errors import UserError, cause_of

log = logging.getLogger("dlopt")


def config_dir() -> str:
    """conf/ shipped inside the wheel (dlopt/conf), else the one at the root of a source checkout."""
    package = Path(__file__).resolve().parents[1]
    shipped = package / "conf"
    return str(shipped if shipped.is_dir() else package.parent / "conf")


def task(run: Callable[[DictConfig, Path], Any]) -> Callable[[DictConfig], Any]:
    """Wrap `run(cfg, run_dir)` as a Hydra task function that reports user errors in one line.

    A single run exits with status 2 after that line and, when it failed before writing
    anything but Hydra's own files, leaves no folder behind. In a sweep the failed run keeps its
    folder with the reason in error.txt, returns None, and the sweep goes on to the next run.
    """

    @functools.wraps(run)
    def task_function(cfg: DictConfig) -> Any:
        hydra = HydraConfig.get()
        run_dir = Path(hydra.runtime.output_dir)
        try:
            return run(cfg, run_dir)
        except Exception as err:
            user_error = cause_of(err, UserError)
            if user_error is None:
                raise
            log.error("%s", user_error)
            if hydra.mode == RunMode.MULTIRUN:
                (run_dir / "error.txt").write_text(f"{user_error}\n")
                return None
            if {p.name for p in run_dir.iterdir()} <= {".hydra", f"{hydra.job.name}.log"}:
                shutil.rmtree(run_dir, ignore_errors=True)
                if not any(run_dir.parent.iterdir()):
                    run_dir.parent.rmdir()  # the DATE folder it was alone in
            raise SystemExit(2) from None

    return task_function
