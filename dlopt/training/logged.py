"""The metrics a run logs, by name, declared once and torch-free: the Classifier (dlopt.training.module) logs these
every epoch and at the test; the monitor check (dlopt.checks) refuses a monitor outside them before training."""

from __future__ import annotations

SPLITS = ("train", "val", "test")
# each split's epoch metrics, in the order they are logged: the loss, then the scores (macro F1 and calibration
# error on held-out splits only: on the training split they would only slow each step)
EPOCH_METRICS: dict[str, tuple[str, ...]] = {
    "train": ("loss", "acc"),
    "val": ("loss", "acc", "f1", "ece"),
    "test": ("loss", "acc", "f1", "ece"),
}
L1_METRIC = "train/l1"  # the L1 penalty, logged after train's metrics when regularization.l1 is set
PROGRESS = ("loss", "acc")  # the metrics of train and val that the progress bar and the epoch log line show


def monitorable(l1: bool = False) -> list[str]:
    """What every epoch of training logs, in its order (train/, then val/): what a monitor may name. `l1`: the run
    sets regularization.l1."""
    return [*(f"train/{name}" for name in EPOCH_METRICS["train"]), *([L1_METRIC] if l1 else []),
            *(f"val/{name}" for name in EPOCH_METRICS["val"])]
