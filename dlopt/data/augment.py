"""Training-split augmentation built from the `augmentation` config group with torchvision.transforms.v2.

Transforms are applied to each sample of a batch on its own, so every sample draws its own
random parameters (a v2 transform called on a whole batch would crop or flip all of it alike).
"""

from __future__ import annotations

from typing import Optional

import torch
from torchvision.transforms import v2

from dlopt.errors import UserError


class Augment(torch.nn.Module):
    """Applies `transform` to every sample of a batch; signals (C, L) are handled as (C, 1, L) images."""

    def __init__(self, transform: v2.Transform, signal: bool):
        super().__init__()
        self.transform, self.signal = transform, signal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.signal:
            x = x.unsqueeze(2)
        x = torch.stack([self.transform(sample) for sample in x])
        return x.squeeze(2) if self.signal else x


def build_augment(in_shape: tuple[int, ...], hflip_p: float = 0.0, crop_padding: int = 0) -> Optional[Augment]:
    """The augmentation for inputs of `in_shape`, or None when nothing is switched on."""
    if not 0.0 <= hflip_p <= 1.0:
        raise UserError(f"augmentation.hflip_p={hflip_p} must be a probability in [0, 1]")
    if crop_padding < 0:
        raise UserError(f"augmentation.crop_padding={crop_padding} must be >= 0")
    if hflip_p == 0 and crop_padding == 0:
        return None
    if len(in_shape) == 1:
        raise UserError(
            f"augmentation=crop/flip needs images or signals, but the data gives vectors of shape {tuple(in_shape)}; "
            "use augmentation=none"
        )
    signal = len(in_shape) == 2
    size = (1, in_shape[-1]) if signal else tuple(in_shape[-2:])
    steps = []
    if crop_padding:
        steps.append(v2.RandomCrop(size, padding=[crop_padding, 0] if signal else crop_padding))
    if hflip_p:
        steps.append(v2.RandomHorizontalFlip(hflip_p))
    return Augment(v2.Compose(steps), signal)
