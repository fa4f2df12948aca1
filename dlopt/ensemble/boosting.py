"""SAMME (multi-class AdaBoost; Zhu, Zou, Rosset & Hastie 2009) over trained networks, in numpy.

Member m trains on a resample of the training split drawn with the sample weights w (boosting by resampling, the
variant for learners that take no weights; in dlopt the loss, mixup and class weights stay as they are); then, with
its predictions on the whole training split,
    err = sum(w * wrong) / sum(w),   alpha = log((1 - err) / err) + log(K - 1),   w <- w * exp(alpha * wrong)
and boosting stops when err >= 1 - 1/K (no better than chance: the member is left out) or err = 0 (a perfect member
is the ensemble: it is kept alone, as scikit-learn's AdaBoostClassifier does). The members vote, weighted by alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Round:
    error: float  # the member's weighted training error
    alpha: Optional[float]  # its vote's weight; None when it is left out (no better than chance)
    weights: np.ndarray  # the sample weights for the next member (sum 1)
    stop: Optional[str]  # why boosting stops after this member, or None


def uniform(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def samme(weights: np.ndarray, probabilities: np.ndarray, labels: np.ndarray) -> Round:
    """One SAMME round: the member's weighted error, its alpha, and the next member's sample weights."""
    classes = probabilities.shape[1]
    wrong = probabilities.argmax(1) != labels
    error = float(np.sum(weights * wrong) / np.sum(weights))
    if error >= 1 - 1 / classes - 1e-12:  # chance, up to rounding
        return Round(error, None, weights, f"its weighted training error {error:.4f} is no better than chance "
                                           f"(1 - 1/{classes} = {1 - 1 / classes:.4f}): left out, boosting stops")
    if error <= 0:
        return Round(error, 1.0, weights, "it classifies every training sample right: boosting stops")
    alpha = float(np.log((1 - error) / error) + np.log(classes - 1))
    new = weights * np.exp(alpha * wrong)
    return Round(error, alpha, new / new.sum(), None)
