"""data.cv=K: K-fold cross-validation for data too small to spare one test split.

The samples are cut into K stratified folds (scikit-learn's StratifiedKFold, from data.split_seed); run k tests on
fold k and trains on the rest, less data.val_fraction for validation (early stopping, the best epoch). Every sample
is tested once. Each fold is a complete run folder, RUN/folds/k, with the config it trained (data.cv='k/K'), so
eval, doctor and explain open it like any run. RUN/metrics.json holds the folds' mean of every metric, the
objective too (what a sweep or a search compares), and their standard deviations under `cv.sd`.

In a search, fold 0 alone reports its epochs to the pruner: every trial's intermediate values are then the same
kind of curve, and a pruned fold 0 ends the trial.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import statistics
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning.pytorch as L
from omegaconf import DictConfig, OmegaConf

from dlopt.checks.values import number
from dlopt.saved_run import read_json, run_overrides
from dlopt.training import report

log = logging.getLogger(__name__)

FOLDS = "folds"  # RUN/folds/k: the run of fold k
SUMMED = ("wall_time_s", "process_wall_time_s", "steps")  # the whole cross-validation's: summed over the folds
SAME = ("classes", "params", "flops_per_sample", "seed", "threads", "batches_per_epoch", "passes_per_epoch")


def folds(cfg: DictConfig) -> Optional[int]:
    """K when the config asks for a K-fold cross-validation (data.cv=K); None for one run (or one fold, 'k/K')."""
    cv = (cfg.get("data") or {}).get("cv")
    return cv if isinstance(cv, int) and not isinstance(cv, bool) else None


def cross_validate(cfg: DictConfig, run_dir: Path, callbacks: Sequence[L.Callback] = (),
                   hparams: Optional[dict[str, Any]] = None, sweep: Optional[bool] = None) -> float:
    """Train the K folds one after the other in RUN/folds/k, write RUN/metrics.json; returns the folds' mean
    objective."""
    from dlopt.errors import UserError
    from dlopt.training.processes import NoRelaunch
    from dlopt.training.run import train

    k_folds = folds(cfg)
    devices = cfg.trainer.get("devices")
    one_process = NoRelaunch(UserError(  # Lightning's DDP starts ranks by running the command, all K folds, again
        f"data.cv={k_folds} trains its folds one after the other in this process, and trainer.devices={devices} "
        f"would start processes that run them all again; use trainer.devices=1, or train the folds as a sweep, "
        f"one fold per run: dlopt train -m data.cv={','.join(f'{k}/{k_folds}' for k in range(k_folds))} ..."))
    callbacks = [*callbacks, one_process]
    results = []
    for k in range(k_folds):
        fold_cfg = copy.deepcopy(cfg)
        fold_cfg.data.cv = f"{k}/{k_folds}"
        fold_dir = run_dir / FOLDS / str(k)
        log.info("cross-validation: fold %d of %d (data.cv=%d) in %s", k + 1, k_folds, k_folds, fold_dir)
        marks = [c for c in callbacks if k == 0 or not hasattr(c, "trial")]  # the pruner follows fold 0 only
        _record_config(run_dir, fold_dir, fold_cfg)
        try:
            train(fold_cfg, fold_dir, callbacks=marks, hparams=hparams, sweep=sweep)
        except BaseException:
            if not (fold_dir / "metrics.json").is_file() and k == 0 and not any(fold_dir.glob("checkpoints/*")):
                shutil.rmtree(run_dir / FOLDS, ignore_errors=True)  # failed before it trained: leave no trace
            raise
        results.append(read_json(fold_dir / "metrics.json", str(fold_dir)) or {})
        if any(getattr(c, "pruned", False) for c in marks):
            log.info("cross-validation: fold %d was pruned; the trial ends", k + 1)
            break
    metrics = summary(results, k_folds)
    report.write_json(metrics, run_dir / "metrics.json")
    sd = metrics["cv"]["sd"]
    log.info("%s: %d-fold cross-validation: %s=%.4f ± %.4f; test/acc=%.4f ± %.4f -> %s", run_dir.name, k_folds,
             cfg.monitor, metrics["objective"], sd.get("objective", math.nan), metrics.get("test/acc", math.nan),
             sd.get("test/acc", math.nan), run_dir)
    return metrics["objective"]


def _record_config(run_dir: Path, fold_dir: Path, fold_cfg: DictConfig) -> None:
    """fold_dir/.hydra as Hydra writes a run's: the fold's config, the run's overrides with data.cv=k/K, and the
    run's hydra.yaml, so that every command opens the fold as a run of its own."""
    import yaml

    hydra = fold_dir / ".hydra"
    hydra.mkdir(parents=True, exist_ok=True)
    (hydra / "config.yaml").write_text(OmegaConf.to_yaml(fold_cfg))
    overrides = [o for o in run_overrides(run_dir, str(run_dir)) if not o.lstrip("+~").startswith("data.cv=")]
    (hydra / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"data.cv={fold_cfg.data.cv}"]))
    if (run_dir / ".hydra" / "hydra.yaml").is_file():
        shutil.copyfile(run_dir / ".hydra" / "hydra.yaml", hydra / "hydra.yaml")


def summary(results: list[dict[str, Any]], k_folds: int) -> dict[str, Any]:
    """The cross-validation's metrics: each number the folds share, as their mean (a total for times and steps),
    its sample standard deviation in cv.sd; what the folds say otherwise, per fold."""
    first = results[0]
    numbers = [k for k, v in first.items()
               if number(v, finite=True) and all(number(r.get(k), finite=True) for r in results)]
    out: dict[str, Any] = {}
    sd: dict[str, float] = {}
    for key in numbers:
        values = [float(r[key]) for r in results]
        if key in SUMMED:
            out[key] = round(sum(values), 3) if key != "steps" else int(sum(values))
        elif key in SAME or len(set(values)) == 1:  # the same in every fold (often the epochs): as the folds say it
            out[key] = first[key]
            if key not in SAME and len(values) > 1:
                sd[key] = 0.0
        else:
            out[key] = statistics.fmean(values)
            if len(values) > 1:
                sd[key] = statistics.stdev(values)
    reasons = [r.get("stop_reason") for r in results]
    out.update({
        "monitor": first.get("monitor"),
        "mode": first.get("mode"),
        "stopped_early": any(r.get("stopped_early") for r in results),
        "pruned": any(r.get("pruned") for r in results),
        "stop_reason": reasons[0] if len(set(reasons)) == 1 else "; ".join(
            f"fold {k}: {reason}" for k, reason in enumerate(reasons)),
        "warnings": [f"fold {k}: {w}" for k, r in enumerate(results) for w in r.get("warnings") or []],
        "cv": {"folds": k_folds, "trained": len(results), "sd": sd, "runs": f"{FOLDS}/0..{k_folds - 1}",
               "per_fold": {key: [r.get(key) for r in results] for key in ("objective", "test/acc", "best_epoch")
                            if key in first}},
    })
    return out
