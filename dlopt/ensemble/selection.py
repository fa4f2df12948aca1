"""Which members an ensemble of finished runs takes, with what weight, and how their predictions combine.

- top_k: the k best runs by the sweep's monitor, each weighted 1.
- greedy: ensemble selection (Caruana et al. 2004; the default of AutoGluon and auto-sklearn): start from the run with
  the lowest validation NLL, then `rounds - 1` times add, with replacement, the run whose addition gives the average
  the lowest validation NLL; a run's weight is how often it was added. Validation predictions only: the test split
  stays unseen until the ensemble is scored.
"""

from __future__ import annotations

import numpy as np

from dlopt.ensemble.scores import scores

SELECTIONS = ("greedy", "top_k")
COMBINES = ("mean", "vote")


def combine(probabilities: list[np.ndarray], weights: np.ndarray, how: str = "mean") -> np.ndarray:
    """The weighted mean of the members' probabilities, or (vote) each class's weighted share of the members'
    top classes."""
    weights = np.asarray(weights, dtype=np.float64)
    if how == "vote":
        probabilities = [np.eye(p.shape[1])[p.argmax(1)] for p in probabilities]
    return sum(w * p for w, p in zip(weights, probabilities) if w) / weights.sum()


def top_k(objectives: list[float | None], k: int, mode: str) -> np.ndarray:
    """Weight 1 for the k best objectives (a run without one ranks last), 0 for the rest."""
    worst = np.inf if mode == "min" else -np.inf
    values = np.array([worst if v is None else v for v in objectives], dtype=np.float64)
    order = np.argsort(values if mode == "min" else -values, kind="stable")
    weights = np.zeros(len(values))
    weights[order[:k]] = 1
    return weights


def greedy(probabilities: list[np.ndarray], labels: np.ndarray, rounds: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Counts per member after `rounds` rounds of greedy selection on validation NLL, and the counts after each
    round (for the curve of the ensemble against its size)."""
    def nll(p: np.ndarray) -> float:
        return scores(p, labels)["nll"]

    counts = np.zeros(len(probabilities))
    counts[int(np.argmin([nll(p) for p in probabilities]))] = 1
    steps = [counts.copy()]
    total = sum(c * p for c, p in zip(counts, probabilities))
    for _ in range(rounds - 1):
        best = int(np.argmin([nll((total + p) / (counts.sum() + 1)) for p in probabilities]))
        counts[best] += 1
        total = total + probabilities[best]
        steps.append(counts.copy())
    return counts, steps
