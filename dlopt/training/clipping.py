"""Gradient norms for the logs, and adaptive gradient clipping (AGC).

Clipping by global norm or by value is Lightning's (`trainer.gradient_clip_val`,
`trainer.gradient_clip_algorithm`). AGC (Brock et al. 2021, "High-Performance Large-Scale Image
Recognition Without Normalization") clips each unit's gradient relative to the size of its
weights; torch and Lightning do not have it, and timm's copy would bring a large dependency for
ten lines, so it is written here.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor


def grad_norm(parameters: Iterable[torch.nn.Parameter]) -> float:
    """The global L2 norm of the gradients (what norm clipping compares with gradient_clip_val)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def _unitwise_norm(x: Tensor) -> Tensor:
    """The L2 norm of each output unit (row of a Linear, filter of a Conv); of the whole tensor for biases."""
    if x.dim() <= 1:
        return x.norm(2)
    return x.norm(2, dim=tuple(range(1, x.dim())), keepdim=True)


@torch.no_grad()
def adaptive_clip_grad(parameters: Iterable[torch.nn.Parameter], factor: float, eps: float = 1e-3) -> None:
    """Scale each unit's gradient down to at most `factor` times its weight norm (weights smaller
    than `eps` count as `eps`, so that zero-initialized units can still move)."""
    for p in parameters:
        if p.grad is None:
            continue
        max_norm = _unitwise_norm(p).clamp(min=eps) * factor
        norm = _unitwise_norm(p.grad)
        scale = (max_norm / norm.clamp(min=1e-6)).clamp(max=1.0)
        p.grad.mul_(scale)
