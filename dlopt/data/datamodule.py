"""The in-memory DataModule every built-in dataset uses.

Small datasets (digits, mnist1d, MNIST/CIFAR-sized tensors, a user's small image folder) are
held as whole tensors and served as slices per batch: a DataLoader over a TensorDataset would
index, collate and re-stack every sample, which costs more than the step itself on small nets.
Normalization statistics come from the training split only; the LightningModule keeps them as
buffers, so they travel inside every checkpoint.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import lightning.pytorch as L
import torch

from dlopt.errors import UserError

NORMALIZE = ("standardize", "minmax", "none")


class TensorBatches:
    """Batches sliced from whole tensors, reshuffled each epoch from ``seed + epoch``.

    Lightning calls ``sampler.set_epoch(epoch)`` at the start of every training epoch, so the
    order depends only on the seed and the epoch number (also after a resume). With several
    processes, each rank takes every ``world``-th sample of the shuffled order.
    """

    def __init__(self, x, y, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1):
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world = rank, world
        self.epoch = 0
        self.sampler, self.batch_sampler = self, None  # where Lightning looks for set_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.y) / self.world) / self.batch_size)

    def _order(self) -> torch.Tensor | None:
        """Sample indices of this rank for this epoch; None means all samples in order."""
        n = len(self.y)
        if not self.shuffle and self.world == 1:
            return None
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch)) \
            if self.shuffle else torch.arange(n)
        if self.world > 1:  # as DistributedSampler: repeat a few samples so every rank gets as many
            order = torch.cat([order, order[: -n % self.world]])[self.rank :: self.world]
        return order.to(self.x.device)

    def __iter__(self):
        order = self._order()
        for start in range(0, len(self.y) if order is None else len(order), self.batch_size):
            if order is None:
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            else:
                idx = order[start : start + self.batch_size]
                yield self.x[idx], self.y[idx]


def input_stats(x: torch.Tensor, normalize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) so that (x - shift) / scale is normalized; per channel, or per feature for vectors."""
    if normalize not in NORMALIZE:
        raise UserError(f"data.normalize={normalize} is not valid; choose one of {', '.join(NORMALIZE)}")
    shape = (1, *x.shape[1:]) if x.dim() == 2 else (1, x.shape[1]) + (1,) * (x.dim() - 2)
    if normalize == "none":
        return torch.zeros(shape[1:]), torch.ones(shape[1:])
    dims = [d for d in range(x.dim()) if d != 1] if x.dim() > 2 else [0]
    x = x.double()
    if normalize == "standardize":
        shift, scale = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
    else:
        shift = x.amin(dim=dims, keepdim=True)
        scale = x.amax(dim=dims, keepdim=True) - shift
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # constant features stay as they are
    return shift.reshape(shape[1:]).float(), scale.reshape(shape[1:]).float()


class InMemoryDataModule(L.LightningDataModule):
    """Train/val/test splits held as tensors: x float32 of shape (N, *in_shape), y int64 labels."""

    def __init__(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
        *,
        classes: Sequence[str],
        batch_size: int = 64,
        normalize: str = "standardize",
        num_workers: int = 0,
        seed: int = 0,
        name: str = "data",
        augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    ):
        super().__init__()
        self.splits = {
            "train": (x_train.float(), y_train.long()),
            "val": (x_val.float(), y_val.long()),
            "test": (x_test.float(), y_test.long()),
        }
        for split, (x, y) in self.splits.items():
            if len(x) != len(y) or len(y) == 0:
                raise UserError(f"data={name}: the {split} split has {len(x)} inputs and {len(y)} labels")
        self.classes = list(classes)
        self.batch_size, self.seed, self.name = batch_size, seed, name
        self.num_workers = num_workers  # tensors are sliced in the main process; kept for a uniform config
        self.augment = augment
        self.shift, self.scale = input_stats(x_train, normalize)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.splits["train"][0].shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def setup(self, stage: Optional[str] = None) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device.type != "cpu":  # keep whole splits on the accelerator: no per-batch copy
            self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}

    def _batches(self, split: str, shuffle: bool) -> TensorBatches:
        x, y = self.splits[split]
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        return TensorBatches(x, y, self.batch_size, shuffle, seed=self.seed, rank=rank, world=world)

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            x, y = batch
            return self.augment(x), y
        return batch
