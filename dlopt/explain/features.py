"""What an explanation is made of: the interpretable features of an input (square patches of an image, segments of
a signal, the columns of a table), the samples to explain and the baseline a removed feature takes."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from dlopt.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Features:
    """The features of one input shape: `mask` (1, *shape) holds each input value's feature (Captum's
    feature_mask), `names` one name per feature."""

    kind: str  # image (C, H, W), signal (C, L) or table (F,)
    mask: torch.Tensor
    names: list[str]

    @property
    def count(self) -> int:
        return len(self.names)

    def totals(self, values: torch.Tensor) -> torch.Tensor:
        """(N, *shape) values per input value -> (N, features): the sum over each feature's values."""
        flat = values.detach().flatten(1).double()
        index = self.mask.flatten().to(flat.device)
        return torch.zeros(len(flat), self.count, dtype=torch.double).index_add_(1, index, flat).float()

    def means(self, values: torch.Tensor) -> torch.Tensor:
        """(N, *shape) -> (N, features): the mean over each feature's values (a perturbation method gives every
        value of a feature the feature's attribution)."""
        sizes = torch.bincount(self.mask.flatten(), minlength=self.count).float()
        return self.totals(values) / sizes

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        """(N, features) -> (N, *shape): each input value takes its feature's value."""
        return values[:, self.mask.flatten()].reshape(len(values), *self.mask.shape[1:])


def kind_of(shape: Sequence[int]) -> str:
    return {3: "image", 2: "signal", 1: "table"}[len(shape)]


def default_patch(shape: Sequence[int]) -> int:
    """A quarter of an image's side (a 4 x 4 grid when 4 divides it), a 16th of a signal: few enough features for LIME
    and KernelSHAP."""
    return max(1, min(shape[1:]) // 4) if len(shape) == 3 else max(1, shape[-1] // 16)


def features(shape: Sequence[int], patch: Optional[int], columns: Optional[list[str]] = None) -> Features:
    """The features of inputs of `shape`: patch x patch squares of an image, segments of `patch` steps of a signal
    (the last ones narrower when `patch` does not divide the input), one feature per column of a table (the one-hot
    values of a categorical column together, under the column's name)."""
    kind = kind_of(shape)
    if kind == "table":
        if patch is not None:
            log.info("explain.patch=%s is for images and signals; a table is explained by its columns", patch)
        names = list(dict.fromkeys(columns)) if columns else [f"x{i}" for i in range(shape[0])]
        index = [names.index(c) for c in columns] if columns else list(range(shape[0]))
        return Features(kind, torch.tensor(index).reshape(1, *shape), names)
    sides = list(shape[1:])
    patch = default_patch(shape) if patch is None else patch
    if patch > min(sides):
        raise UserError(f"explain.patch={patch} is larger than the input ({' x '.join(map(str, sides))}); give at "
                        f"most {min(sides)}")
    if any(side % patch for side in sides):
        log.info("explain.patch=%d does not divide the input (%s): the last %s narrower", patch,
                 " x ".join(map(str, sides)), "row and column of patches are" if kind == "image" else "segment is")
    cells = [math.ceil(side / patch) for side in sides]
    grids = torch.meshgrid(*[torch.arange(side) // patch for side in sides], indexing="ij")
    index = grids[0] * cells[1] + grids[1] if kind == "image" else grids[0]
    mask = index.expand(1, shape[0], *sides).clone()

    def span(i: int, side: int) -> str:
        first, last = i * patch, min(side, (i + 1) * patch) - 1
        return f"{first}" if first == last else f"{first}-{last}"

    if kind == "image":
        names = [f"rows {span(r, sides[0])} cols {span(c, sides[1])}" for r in range(cells[0]) for c in range(cells[1])]
    else:
        names = [f"t {span(i, sides[0])}" for i in range(cells[0])]
    return Features(kind, mask, names)


def pick(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of `n` samples, stratified: a seeded shuffle, then the classes in turn (first of each, second of
    each, ...)."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).numpy()
    labels = y.cpu().numpy()[order]
    turn = np.zeros(len(order), dtype=np.int64)
    for c in np.unique(labels):
        turn[labels == c] = np.arange(int((labels == c).sum()))
    return torch.from_numpy(order[np.lexsort((labels, turn))[:n]])


def baseline(name: str, x: torch.Tensor, train_x: torch.Tensor, kind: str, patch: int) -> torch.Tensor:
    """What a removed feature becomes, per sample: the training split's mean input, zero, or (images) the sample
    blurred at the scale of a patch."""
    if name == "mean":
        return train_x.mean(0, keepdim=True).expand_as(x).clone()
    if name == "zero":
        return torch.zeros_like(x)
    if kind != "image":
        raise UserError(f"explain.baseline=blur is for images; this run's inputs are a {kind}: choose mean or zero")
    from torchvision.transforms.functional import gaussian_blur

    size = min(2 * patch + 1, 2 * (min(x.shape[-2:]) // 2) - 1)
    return gaussian_blur(x, kernel_size=max(3, size), sigma=float(patch))
