"""How far an explanation can be trusted, measured on the model itself.

- The deletion curve: the features are set to the baseline in the order of their attribution, most positive first,
  and the probability of the target is recorded after each 5% of them; the same for random orders. An attribution
  that points at what the model uses makes the probability fall sooner: its area under the curve is below random's.
- The model-randomization check (Adebayo et al. 2018): the rank correlation between the attributions of the trained
  network and of the same network with its weights drawn again. An explanation that does not change is not
  explaining the model.
- precision@K against a known truth: the share of the K truly informative features among the K ranked highest.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch

from dlopt.explain.features import Features

FRACTIONS = torch.linspace(0, 1, 21)  # of the features removed
RANDOM_ORDERS = 10


def deletion(forward: Callable, x: torch.Tensor, target: torch.Tensor, order: torch.Tensor, features: Features,
             baseline: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N, len(FRACTIONS)): the probability of `target` when the first round(fraction * features) features of each
    sample's `order` (N, features) take the baseline's values."""
    counts = (FRACTIONS * features.count).round().long()
    inputs = []
    for k in counts.tolist():
        removed = torch.zeros(order.shape, dtype=torch.bool).scatter_(1, order[:, :k], True)
        inputs.append(torch.where(features.spread(removed), baseline, x))
    batch = torch.stack(inputs, 1).flatten(0, 1)
    with torch.no_grad():
        probs = torch.cat([forward(part) for part in batch.split(batch_size)])
    return probs.reshape(len(x), len(counts), -1).gather(2, target[:, None, None].expand(-1, len(counts), 1))[..., 0]


def random_orders(n: int, count: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, count, generator=g).argsort(1) for _ in range(RANDOM_ORDERS)]


def area(curve: torch.Tensor) -> float:
    """The area under the mean curve over the fraction of features removed (0..1)."""
    return float(torch.trapezoid(curve.mean(0), FRACTIONS))


def randomized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of the module whose network has its weights drawn again (every layer's reset_parameters)."""
    twin = copy.deepcopy(module)
    torch.manual_seed(seed)
    for layer in twin.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return twin.eval()


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean over samples of the Spearman correlation of |a| and |b| (N, features); 0 where either is constant."""
    from scipy.stats import spearmanr

    values = []
    for row_a, row_b in zip(a.abs().numpy(), b.abs().numpy()):
        constant = np.ptp(row_a) == 0 or np.ptp(row_b) == 0
        values.append(0.0 if constant else float(spearmanr(row_a, row_b).statistic))
    return float(np.mean(values))


def truth(features: Features, informative: int) -> list[int]:
    """The features that hold any of the first `informative` input values (data=synthetic data.informative=K)."""
    return sorted(set(features.mask.flatten()[:informative].tolist()))


def precision_at_k(scores: torch.Tensor, relevant: list[int]) -> float:
    """The share of `relevant` among the len(relevant) features of the highest `scores`."""
    top = scores.argsort(descending=True)[:len(relevant)].tolist()
    return len(set(top) & set(relevant)) / len(relevant)
