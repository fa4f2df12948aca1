"""One Hydra app per command. Only Hydra is imported at module level: `--help` and `--cfg`
never import torch; the task functions import the training code when they run."""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from dlopt.errors import UserError

log = logging.getLogger("dlopt")


def config_dir() -> str:
    """conf/ shipped inside the wheel (dlopt/conf), else the one at the root of a source checkout."""
    package = Path(__file__).resolve().parents[1]
    shipped = package / "conf"
    return str(shipped if shipped.is_dir() else package.parent / "conf")


class DloptError(CompactHydraException):
    """Hydra prints a CompactHydraException's message alone, without a traceback."""


def _user_error(err: BaseException) -> UserError | None:
    while err is not None:  # Hydra's instantiate wraps what the target raised
        if isinstance(err, UserError):
            return err
        err = err.__cause__ or err.__context__
    return None


def task(run: Callable[[DictConfig, Path], Any]) -> Callable[[DictConfig], Any]:
    """Wrap `run(cfg, run_dir)` as a Hydra task function that reports user errors in one line.

    A single run exits with status 2 after that line; in a sweep the job fails as a Hydra job
    does, so the sweeper sees it. A run that fails before it has written anything but Hydra's
    own files leaves no folder behind.
    """

    @functools.wraps(run)
    def task_function(cfg: DictConfig) -> Any:
        hydra = HydraConfig.get()
        run_dir = Path(hydra.runtime.output_dir)
        try:
            return run(cfg, run_dir)
        except Exception as err:
            user_error = _user_error(err)
            if user_error is None:
                raise
            log.error("%s", user_error)
            if {p.name for p in run_dir.iterdir()} <= {".hydra", f"{hydra.job.name}.log"}:
                shutil.rmtree(run_dir, ignore_errors=True)
                if not any(run_dir.parent.iterdir()):
                    run_dir.parent.rmdir()  # the DATE folder it was alone in
            if hydra.mode == RunMode.MULTIRUN:
                raise DloptError(str(user_error)) from None
            raise SystemExit(2) from None

    return task_function
