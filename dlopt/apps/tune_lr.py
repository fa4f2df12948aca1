"""`dlopt tune-lr [train overrides]`: a learning-rate range test on the run `dlopt train` would make."""

import shlex
from pathlib import Path
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dlopt import threads
from dlopt.apps import app, task
from dlopt.checks import validate


def train_command(overrides: list[str]) -> str:
    """`dlopt train` with the user's overrides, less those of the range test and the lr it replaces."""
    keep = [o for o in overrides if not o.lstrip("+~").startswith(("lr_find.", "lr_find=", "optimizer.lr="))]
    return " ".join(["dlopt train", *map(shlex.quote, keep)])


@task
def tune_lr(cfg: DictConfig, run_dir: Path) -> Optional[float]:
    validate(cfg, "tune_lr")
    threads.use(cfg.threads)
    from dlopt.training.lr_find import find  # heavy imports (torch, Lightning) only now

    return find(cfg, run_dir, command=train_command(list(HydraConfig.get().overrides.task)))


main = app("tune_lr", tune_lr)
