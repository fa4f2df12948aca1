"""Accuracy, negative log-likelihood and expected calibration error of predicted class probabilities (numpy)."""

from __future__ import annotations

import numpy as np

BINS = 15  # as val/ece and test/ece of every run (dlopt.training.module.CalibrationError)
FLOOR = 1e-12  # the smallest probability NLL takes: a vote's zero share would be infinitely wrong


def calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """The expected calibration error: bins [0, 1/bins), ..., [(bins-1)/bins, 1] of the top confidence, the sum of
    |accuracy - confidence| weighted by each bin's share of the samples."""
    confidence, correct = probabilities.max(1), probabilities.argmax(1) == labels
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(abs(correct[index == b].mean() - confidence[index == b].mean()) * (index == b).mean()
                     for b in range(bins) if (index == b).any()))


def scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """acc, nll (mean negative log-probability of the true class) and ece."""
    true = probabilities[np.arange(len(labels)), labels]
    return {"acc": float((probabilities.argmax(1) == labels).mean()),
            "nll": float(-np.log(np.maximum(true, FLOOR)).mean()),
            "ece": calibration_error(probabilities, labels)}
