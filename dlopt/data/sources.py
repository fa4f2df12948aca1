"""The built-in datasets: each function loads one source into an InMemoryDataModule.

Hydra instantiates them from ``conf/data/<name>.yaml``. Each takes its own keyword-only
arguments plus ``**loader`` (batch_size, normalize, num_workers, seed), which goes unchanged to
``InMemoryDataModule``. Inputs are shaped (C, H, W) for images, (C, L) for 1-D signals and (F,)
for vectors. Nothing here downloads unless the user asks for a torchvision dataset that is not
on disk yet; a download that cannot happen fails with one line saying where to put the files.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from urllib.error import URLError

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from typing_extensions import Unpack

from dlopt.data.datamodule import InMemoryDataModule, parse_fold, select, stratified_fold
from dlopt.data.knobs import Loader
from dlopt.errors import UserError


def _module(splits, classes, name: str, loader: dict, split_seed: int = 0) -> InMemoryDataModule:
    """An InMemoryDataModule of (x_tr, y_tr, x_va, y_va, x_te, y_te), keeping only the
    classes and the training fraction that ``loader`` asks for (data.classes, data.fraction)."""
    loader = dict(loader)
    wanted, fraction = loader.pop("classes", None), loader.pop("fraction", 1.0)
    pairs = dict(zip(("train", "val", "test"), zip(splits[0::2], splits[1::2])))
    index, classes, labels = select({s: torch.as_tensor(y) for s, (_, y) in pairs.items()}, classes, wanted,
                                    fraction, split_seed, name)
    kept = [t for s, (x, _) in pairs.items() for t in (torch.as_tensor(x)[index[s]], labels[s])]
    return InMemoryDataModule(*kept, classes=classes, **{"name": name, **loader})


def _check_fraction(key: str, value, allow_zero: bool = False) -> float:
    low_ok = (lambda v: v >= 0) if allow_zero else (lambda v: v > 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low_ok(value) and value < 1):
        raise UserError(f"{key}={value} is not valid; it must be a number in {'[0' if allow_zero else '(0'}, 1)")
    return float(value)


def _carve(x, y, fraction: float, seed: int, name: str, key: str, value: float):
    """Split off a stratified `fraction` of (x, y), set by the user's key=value: (x_rest, y_rest, x_part, y_part)."""
    y_np = y.numpy()
    problem = f"data={name}: a stratified split of {len(y_np)} samples with {key}={value:g}"
    try:
        rest, part = train_test_split(np.arange(len(y_np)), test_size=fraction, stratify=y_np, random_state=seed)
    except ValueError as e:
        counts = np.unique(y_np, return_counts=True)[1]
        raise UserError(
            f"{problem} is impossible (the smallest class has {counts.min()} samples); "
            f"add samples to every class or change {key}"
        ) from e
    labels = set(y_np.tolist())
    for idx in (rest, part):
        if set(y_np[idx].tolist()) != labels:
            raise UserError(f"{problem} leaves a split without some classes; add samples to every class or change {key}")
    rest, part = torch.from_numpy(rest), torch.from_numpy(part)
    return x[rest], y[rest], x[part], y[part]


def cv_fold(cv, y, seed: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the other samples, the samples of fold k) for data.cv='k/K': fold k of scikit-learn's StratifiedKFold over
    all samples, from `seed` (data.split_seed); the K folds' test splits cover every sample once."""
    parsed = parse_fold(cv)
    if parsed is None:
        raise UserError(f"data.cv={cv} is not valid: expected K >= 2 folds (data.cv=5: all five, one run each) or "
                        "one fold k/K with 0 <= k < K, e.g. 0/5")
    smallest = int(np.unique(y.numpy(), return_counts=True)[1].min())
    if parsed[1] > smallest:
        raise UserError(f"data.cv={parsed[1]} is more folds than data={name}'s smallest class has samples "
                        f"({smallest}): each fold needs every class; choose data.cv={max(2, smallest)} or fewer")
    return stratified_fold(y, *parsed, seed)


def stratified_split(x, y, val_fraction: float, test_fraction: float, seed: int, *, name: str = "data", cv=None):
    """Stratified (x_tr, y_tr, x_va, y_va, x_te, y_te); test_fraction=0 carves no test split (empty). `cv`
    ('k/K', data.cv): the test split is fold k of K (cv_fold) in place of test_fraction; validation takes
    val_fraction of all samples from the rest."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    val_fraction = _check_fraction("data.val_fraction", val_fraction)
    if cv is not None:
        rest, held = cv_fold(cv, y, seed, name)
        share = val_fraction * len(y) / len(rest)
        if share >= 1:
            raise UserError(f"data.val_fraction={val_fraction:g} leaves no training data in a fold of data.cv={cv}; "
                            "lower it")
        x_tr, y_tr, x_va, y_va = _carve(x[rest], y[rest], share, seed, name, "data.val_fraction", val_fraction)
        return x_tr, y_tr, x_va, y_va, x[held], y[held]
    test_fraction = _check_fraction("data.test_fraction", test_fraction, allow_zero=True)
    if val_fraction + test_fraction >= 1:
        raise UserError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:g} leaves no training data; "
            "their sum must be below 1"
        )
    if test_fraction > 0:
        x, y, x_te, y_te = _carve(x, y, test_fraction, seed, name, "data.test_fraction", test_fraction)
    else:
        x_te, y_te = x[:0], y[:0]
    x_tr, y_tr, x_va, y_va = _carve(
        x, y, val_fraction / (1 - test_fraction), seed, name, "data.val_fraction", val_fraction
    )
    return x_tr, y_tr, x_va, y_va, x_te, y_te


def digits(*, val_fraction=0.15, test_fraction=0.15, split_seed=0, cv=None,
           **loader: Unpack[Loader]) -> InMemoryDataModule:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images), offline; pixels scaled from 0..16 to [0, 1]
    like every other image source, so that augmentation and `data.normalize=none` see the usual range."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy(data.images).float().unsqueeze(1) / 16
    y = torch.from_numpy(data.target).long()
    splits = stratified_split(x, y, val_fraction, test_fraction, split_seed, name="digits", cv=cv)
    return _module(splits, range(10), "digits", loader, split_seed)


def mnist1d(*, num_samples=5000, val_fraction=0.15, split_seed=42, **loader: Unpack[Loader]) -> InMemoryDataModule:
    """MNIST-1D signals of length 40 generated locally (its own 80/20 train/test split); split_seed=42 and
    num_samples=5000 give the published dataset."""
    from mnist1d.data import get_dataset_args, make_dataset

    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 100:
        raise UserError(f"data.num_samples={num_samples} is not valid; it must be an integer of at least 100")
    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, split_seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)  # reseeds numpy's and Python's global RNGs
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = torch.from_numpy(data["x"]).float().unsqueeze(1)
    y = torch.from_numpy(data["y"]).long()
    x_tr, y_tr, x_va, y_va, _, _ = stratified_split(x, y, val_fraction, 0, split_seed, name="mnist1d")
    x_te = torch.from_numpy(data["x_test"]).float().unsqueeze(1)
    y_te = torch.from_numpy(data["y_test"]).long()
    return _module((x_tr, y_tr, x_va, y_va, x_te, y_te), range(10), "mnist1d", loader, split_seed)


def synthetic(
    *,
    shape=(1, 8, 8),
    num_classes=10,
    num_samples=1024,
    noise=1.0,
    informative=None,
    val_fraction=0.15,
    test_fraction=0.15,
    split_seed=0,
    cv=None,
    **loader: Unpack[Loader],
) -> InMemoryDataModule:
    """One random prototype per class plus Gaussian noise, in any shape: (F,), (C, L) or (C, H, W).
    `informative=K`: the prototypes differ only in the first K input values (in C-order: the first features, the
    start of a signal, the top rows of an image); the rest is noise alone, a known truth for explanations."""
    dims = [shape] if isinstance(shape, int) else shape
    if (
        not isinstance(dims, Sequence)
        or isinstance(dims, str)
        or not 1 <= len(dims) <= 3
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims)
    ):
        raise UserError(f"data.shape={shape} is not valid; give 1 to 3 positive integers: [F], [C, L] or [C, H, W]")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UserError(f"data.num_classes={num_classes} is not valid; it must be an integer of at least 2")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise UserError(f"data.noise={noise} is not valid; it must be a number >= 0 (the noise's standard deviation)")
    fractions = [_check_fraction("data.val_fraction", val_fraction), _check_fraction("data.test_fraction", test_fraction)]
    smallest = min(*fractions, 1 - sum(fractions))
    need = math.ceil(num_classes / smallest) + 2 if smallest > 0 else None
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or (need and num_samples < need):
        raise UserError(
            f"data.num_samples={num_samples} is not valid; with {num_classes} classes and these fractions it must be "
            f"an integer of at least {need}, so that every split gets every class"
        )
    size = math.prod(dims)
    if informative is not None and (isinstance(informative, bool) or not isinstance(informative, int)
                                    or not 1 <= informative <= size):
        raise UserError(f"data.informative={informative} is not valid; give null (every input value carries the "
                        f"class) or an integer from 1 to {size}, the input values of data.shape={list(dims)}")
    g = torch.Generator().manual_seed(split_seed)
    prototypes = torch.randn(num_classes, *dims, generator=g)
    if informative is not None:
        prototypes.view(num_classes, -1)[:, informative:] = 0
    y = torch.arange(num_samples) % num_classes
    x = prototypes[y] + noise * torch.randn(num_samples, *dims, generator=g)
    splits = stratified_split(x, y, val_fraction, test_fraction, split_seed, name="synthetic", cv=cv)
    return _module(splits, range(num_classes), "synthetic", loader, split_seed)


IDX_FILES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
# dataset option -> (torchvision class name, folder under root that torchvision reads, files it needs)
TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw", IDX_FILES),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", IDX_FILES),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "data_batch_1, ..., data_batch_5, test_batch, batches.meta"),
}


def torchvision_dataset(
    *, dataset, root="~/.cache/dlopt/data", download=True, val_fraction=0.1, split_seed=0,
    **loader: Unpack[Loader],
) -> InMemoryDataModule:
    """MNIST, Fashion-MNIST or CIFAR-10 from torchvision, held whole in memory as float32 in [0, 1]."""
    import torchvision.datasets

    if dataset not in TORCHVISION:
        raise UserError(f"data.dataset={dataset} is not valid; choose one of {', '.join(TORCHVISION)}")
    cls_name, folder, files = TORCHVISION[dataset]
    cls = getattr(torchvision.datasets, cls_name)
    root = os.path.abspath(os.path.expanduser(str(root)))

    def load(train: bool):
        try:
            return cls(root, train=train, download=False)
        except RuntimeError as e:  # files absent or corrupt
            if not download:
                raise UserError(
                    f"data={dataset}: {cls_name} is not in {root} and data.download=false. "
                    f"Put the files in {os.path.join(root, folder)}/ ({files}) or set data.root=PATH to a folder that has them."
                ) from e
        try:
            return cls(root, train=train, download=True)
        except (URLError, OSError, RuntimeError) as e:
            raise UserError(
                f"data={dataset}: {cls_name} is not in {root} and could not be downloaded (offline?). "
                f"Put the files in {os.path.join(root, folder)}/ ({files}) or set data.root=PATH to a folder that has them."
            ) from e

    def tensors(ds):
        x = torch.as_tensor(ds.data)
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # (N, H, W) or (N, H, W, C) -> (N, C, H, W)
        return x.contiguous().float().div_(255), torch.as_tensor(ds.targets, dtype=torch.long)

    train, test = load(True), load(False)
    x, y = tensors(train)
    x_tr, y_tr, x_va, y_va, _, _ = stratified_split(x, y, val_fraction, 0, split_seed, name=dataset)
    return _module((x_tr, y_tr, x_va, y_va, *tensors(test)), train.classes, dataset, loader, split_seed)
