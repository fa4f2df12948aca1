"""`dlopt train`: compose the config, train, test, write the run folder; returns the monitored metric.
`dlopt train resume=RUN_DIR` continues a run (see dlopt/apps/resume.py)."""

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dlopt.apps import app, task
from dlopt.apps import resume as resuming
from dlopt.errors import UserError


@task
def train(cfg: DictConfig, run_dir: Path) -> float:
    from dlopt.checks import check

    last = None
    if cfg.get("resume"):
        new = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
        cfg = resuming.resumed_config(cfg, run_dir, new)
        last = run_dir / "checkpoints" / "last.ckpt"
    check(cfg)
    from dlopt.training.run import train as run_training  # heavy imports (torch, Lightning) only now

    return run_training(cfg, run_dir, resume=last)


_main = app("train", train)


def main() -> None:
    try:
        sys.argv = [sys.argv[0], *resuming.redirect(sys.argv[1:])]
    except UserError as err:
        print(f"{sys.argv[0]}: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    _main()
