"""The DataModule interface every data source gives a run, and the in-memory DataModule.

`DataModule` holds what the rest of a run needs (classes, input shape, normalization
statistics, class weights) and applies the training augmentation to whole batches on the
training device. `select` keeps the classes and the training fraction a user asked for.
Small datasets (digits, mnist1d, MNIST/CIFAR-sized tensors, a user's small image folder) are
held as whole tensors and served as slices per batch: a DataLoader over a TensorDataset would
index, collate and re-stack every sample, which costs more than the step itself on small nets.
Normalization statistics come from the training split only; the LightningModule keeps them as
buffers, so they travel inside every checkpoint.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional, Sequence

import lightning.pytorch as L
import numpy as np
import torch

from dlopt.errors import UserError

NORMALIZE = ("standardize", "minmax", "none")


class TensorBatches:
    """Batches sliced from whole tensors, reshuffled each epoch from ``seed + epoch``.

    Lightning calls ``sampler.set_epoch(epoch)`` at the start of every training epoch, so the
    order depends only on the seed and the epoch number (also after a resume). With several
    processes, each rank takes every ``world``-th sample of the shuffled order. ``passes``: an epoch
    goes over the samples that many times, each pass in an order of its own (data.min_batches).
    """

    def __init__(self, x, y, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1,
                 passes: int = 1):
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world, self.passes = rank, world, passes
        self.epoch = 0
        self.sampler, self.batch_sampler = self, None  # where Lightning looks for set_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.y) * self.passes / self.world) / self.batch_size)

    def _order(self) -> torch.Tensor | None:
        """Sample indices of this rank for this epoch; None means all samples in order."""
        n = len(self.y)
        if not self.shuffle and self.world == 1 and self.passes == 1:
            return None
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.cat([torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
                           for _ in range(self.passes)])
        n *= self.passes
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


CLASS_WEIGHTS = ("none", "balanced")


def balanced_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """scikit-learn's "balanced" class weights, n / (k * count), from training labels."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = y.cpu().numpy()
    weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=labels) \
        if len(np.unique(labels)) == num_classes else None
    if weights is None:
        missing = sorted(set(range(num_classes)) - set(labels.tolist()))
        raise UserError(f"data.class_weights=balanced needs every class in the training split; classes {missing} have none")
    return torch.as_tensor(weights, dtype=torch.float32)


def select(
    labels: dict[str, torch.Tensor], classes: Sequence[str], wanted, fraction: float, seed: int, name: str
) -> tuple[dict[str, torch.Tensor], list[str], dict[str, torch.Tensor]]:
    """Which samples of each split to keep for ``data.classes=wanted`` and ``data.fraction``.

    Returns (indices per split, kept class names, new labels per split). Kept classes are
    relabelled 0..k-1 in the dataset's class order; ``fraction`` keeps a stratified part of the
    training split only, so validation and test stay comparable across fractions.
    """
    classes = [str(c) for c in classes]
    keep = list(range(len(classes)))
    if wanted is not None:
        names = [str(c) for c in ([wanted] if isinstance(wanted, (str, int)) else wanted)]
        unknown = [c for c in names if c not in classes]
        if unknown:
            shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
            raise UserError(f"data.classes: {', '.join(unknown)} is not a class of data={name}; its classes are {shown}")
        if len(set(names)) < 2:
            raise UserError(f"data.classes={names} keeps fewer than 2 classes; name at least two")
        keep = [i for i, c in enumerate(classes) if c in names]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise UserError(f"data.fraction={fraction} is not valid: expected a fraction in (0, 1]")
    relabel = torch.full((len(classes),), -1, dtype=torch.long)
    relabel[keep] = torch.arange(len(keep))
    index, new_labels = {}, {}
    for split, y in labels.items():
        idx = torch.nonzero(relabel[y] >= 0).flatten()
        if split == "train" and fraction < 1:
            idx = _stratified_part(idx, y[idx], fraction, seed, len(keep))
        index[split], new_labels[split] = idx, relabel[y[idx]]
    return index, [classes[i] for i in keep], new_labels


def _stratified_part(idx: torch.Tensor, y: torch.Tensor, fraction: float, seed: int, num_classes: int) -> torch.Tensor:
    from sklearn.model_selection import train_test_split

    try:
        part, _ = train_test_split(idx.numpy(), train_size=fraction, stratify=y.numpy(), random_state=seed)
    except ValueError:
        raise UserError(
            f"data.fraction={fraction:g} of {len(idx)} training samples is too few to keep every one of "
            f"{num_classes} classes; raise data.fraction"
        ) from None
    return torch.from_numpy(np.sort(part))


def read_weights(path: str, n: int) -> np.ndarray:
    """The probabilities of data.sample_weights=PATH: a .npy array of n finite weights >= 0, not all 0 (read as
    data: no pickles)."""
    try:
        weights = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UserError(f"data.sample_weights={path} is not readable as a .npy array: "
                        f"{' '.join(str(err).split())[:120]}") from None
    if weights.shape != (n,) or not np.issubdtype(weights.dtype, np.number) or not np.isfinite(weights).all() \
            or (weights < 0).any() or weights.sum() <= 0:
        raise UserError(f"data.sample_weights={path} holds {weights.dtype} values of shape {weights.shape}; it needs "
                        f"{n} finite weights >= 0 (one per training sample), not all 0")
    return weights.astype(np.float64) / weights.sum()


def parse_fold(spec: Any) -> Optional[tuple[int, int]]:
    """(k, K) of a fold 'k/K' (data.fold, data.cv) with K >= 2 and 0 <= k < K; None when it is not one."""
    k, _, folds = str(spec).partition("/")
    if not (k.isdigit() and folds.isdigit() and 0 <= int(k) < int(folds) and int(folds) >= 2):
        return None
    return int(k), int(folds)


def stratified_fold(labels: torch.Tensor, k: int, folds: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the other samples, the samples of fold k) of scikit-learn's StratifiedKFold(folds, shuffled from seed);
    ValueError when a class has fewer samples than folds."""
    from sklearn.model_selection import StratifiedKFold

    y = labels.numpy()
    rest, held = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y))[k]
    return torch.from_numpy(rest), torch.from_numpy(held)


def _fold(fold: str, labels: torch.Tensor, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the samples to train on, the samples of fold k) for data.fold='k/K', of the training split."""
    parsed = parse_fold(fold)
    if parsed is None:
        raise UserError(f"data.fold={fold} is not valid: expected k/K with K >= 2 folds and 0 <= k < K, e.g. 0/5")
    try:
        return stratified_fold(labels, *parsed, split_seed)
    except ValueError as err:
        raise UserError(f"data.fold={fold}: {err}") from None


class DataModule(L.LightningDataModule):
    """What every dlopt data source gives a run: class names, input shape, normalization
    statistics of the training split (``shift``, ``scale``), optional class weights, and the
    training augmentation, applied to whole batches on the training device."""

    def __init__(self, *, classes: Sequence[str], train_labels: torch.Tensor, batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0, name: str = "data", class_weights: str = "none",
                 min_batches: int = 1):
        super().__init__()
        if class_weights not in CLASS_WEIGHTS:
            raise UserError(f"data.class_weights={class_weights} is not valid; choose one of {', '.join(CLASS_WEIGHTS)}")
        self.classes = [str(c) for c in classes]
        self.batch_size, self.num_workers, self.seed, self.name = batch_size, num_workers, seed, name
        # data.min_batches: an epoch passes over a small training split several times, so that it is at least
        # this many batches; full_batch (optimizer=lbfgs): one batch of the whole split, one pass per epoch
        self.min_batches, self.full_batch = min_batches, False
        self.class_weights = balanced_weights(train_labels, len(self.classes)) if class_weights == "balanced" else None
        self.augment: Optional[Callable] = None  # (x, y) -> (x, y); y may become soft labels (mixup)
        self.shift = self.scale = None  # set by the subclass from its training split
        # vectors read from a table: the column each input value comes from (a one-hot column's values share it)
        self.columns: Optional[list[str]] = None
        self.feature_names: Optional[list[str]] = None  # and each input value's name (a one-hot one's: column=value)
        # the training samples an epoch draws from (data.bootstrap, data.sample_weights, data.fold); None: the whole
        # split; and the samples data.fold leaves out
        self.train_index: Optional[torch.Tensor] = None
        self.fold_index: Optional[torch.Tensor] = None
        self.train_labels = train_labels.cpu()

    @property
    def train_count(self) -> int:
        """How many samples the (whole) training split holds."""
        raise NotImplementedError

    def resample(self, seed: int, split_seed: int = 0, bootstrap: bool = False, sample_weights: Optional[str] = None,
                 fold: Optional[str] = None) -> None:
        """data.bootstrap, data.sample_weights: train on n draws with replacement from the n training samples
        (uniform, or with probabilities proportional to the weights in the .npy file), drawn once from `seed`.
        data.fold='k/K': train on the samples outside fold k of a stratified K-fold split (from `split_seed`).
        Normalization statistics and class weights stay those of the whole split, which split_batches still serves."""
        if fold is not None:
            if bootstrap or sample_weights is not None:
                raise UserError(f"data.fold={fold} leaves a fold out, data.bootstrap and data.sample_weights draw a "
                                "resample: choose one")
            self.train_index, self.fold_index = _fold(str(fold), self.train_labels, split_seed)
        elif bootstrap or sample_weights is not None:
            n = self.train_count
            p = None if sample_weights is None else read_weights(str(sample_weights), n)
            self.train_index = torch.from_numpy(np.random.default_rng(seed).choice(n, size=n, replace=True, p=p))

    def train_batching(self, count: int, world: int = 1) -> tuple[int, int]:
        """(batch size, passes per epoch) for `count` training samples over `world` processes: whole passes, enough
        for data.min_batches batches; with full_batch the whole split in one batch, once."""
        if self.full_batch:
            return max(1, math.ceil(count / world)), 1
        share = max(1, math.ceil(count / world))  # this process's samples
        # the fewest whole passes that make min_batches batches: ceil(share * passes / batch_size) >= min_batches
        return self.batch_size, max(1, math.ceil(((self.min_batches - 1) * self.batch_size + 1) / share))

    @property
    def in_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def train_samples(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` training (inputs, labels), unaugmented, on the CPU (for the augmentation preview)."""
        raise NotImplementedError

    def split_batches(self, split: str) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The whole split (train, val or test) in its fixed order, unaugmented, in batches: what one process sees
        without a trainer, for predictions and explanations."""
        raise NotImplementedError

    def overfitting(self) -> bool:
        """trainer.overfit_batches is set: training sees the same first batches every epoch, unshuffled and
        unaugmented, so that a network able to learn drives their loss to 0."""
        return self.trainer is not None and self.trainer.overfit_batches > 0

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.augment is not None and self.trainer is not None and self.trainer.training and not self.overfitting():
            return self.augment(*batch)
        return batch


class InMemoryDataModule(DataModule):
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
        class_weights: str = "none",
        min_batches: int = 1,
    ):
        splits = {
            "train": (x_train.float(), y_train.long()),
            "val": (x_val.float(), y_val.long()),
            "test": (x_test.float(), y_test.long()),
        }
        for split, (x, y) in splits.items():
            if len(x) != len(y) or len(y) == 0:
                raise UserError(f"data={name}: the {split} split has {len(x)} inputs and {len(y)} labels")
        # tensors are sliced in the main process, so num_workers has nothing to do here
        super().__init__(classes=classes, train_labels=splits["train"][1], batch_size=batch_size,
                         num_workers=num_workers, seed=seed, name=name, class_weights=class_weights,
                         min_batches=min_batches)
        self.splits = splits
        self.shift, self.scale = input_stats(splits["train"][0], normalize)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.splits["train"][0].shape[1:])

    def train_samples(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.splits["train"]
        return x[:n].cpu(), y[:n].cpu()

    @property
    def train_count(self) -> int:
        return len(self.splits["train"][1])

    def split_batches(self, split: str) -> TensorBatches:
        return TensorBatches(*self.splits[split], self.batch_size, shuffle=False)

    def setup(self, stage: Optional[str] = None) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device.type != "cpu":  # keep whole splits on the accelerator: no per-batch copy
            self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}

    def _batches(self, split: str, shuffle: bool) -> TensorBatches:
        x, y = self.splits[split]
        if split == "train" and self.train_index is not None:
            index = self.train_index.to(x.device)
            x, y = x[index], y[index]
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        batch_size, passes = self.train_batching(len(y), world) if split == "train" else (self.batch_size, 1)
        return TensorBatches(x, y, batch_size, shuffle, seed=self.seed, rank=rank, world=world, passes=passes)

    def train_dataloader(self) -> TensorBatches:
        # Lightning turns off a DataLoader's shuffling for overfit_batches; these batches shuffle themselves
        return self._batches("train", shuffle=not self.overfitting())

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", shuffle=False)
