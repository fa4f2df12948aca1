"""Tests of dlopt.data.sources on real (tiny, local) data: no downloads, no mocks."""

import random
import struct

import numpy as np
import pytest
import torch

from dlopt.data import sources
from dlopt.errors import UserError


def sizes(dm):
    return {split: len(y) for split, (_, y) in dm.splits.items()}


def labels(dm, split):
    return set(dm.splits[split][1].tolist())


def write_idx(raw, prefix, n, seed):
    """Tiny MNIST-format files: n 28x28 uint8 images (magic 2051) and n labels (magic 2049)."""
    rng = np.random.default_rng(seed)
    raw.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
    targets = (np.arange(n) % 10).astype(np.uint8)
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + targets.tobytes())


# digits


def test_digits_shapes_and_stratified_splits():
    dm = sources.digits(batch_size=32)
    assert dm.in_shape == (1, 8, 8)
    assert dm.classes == [str(c) for c in range(10)]
    assert sum(sizes(dm).values()) == 1797
    x = dm.splits["train"][0]
    assert x.dtype == torch.float32 and x.min() == 0 and x.max() == 1
    for split in ("train", "val", "test"):
        assert labels(dm, split) == set(range(10))


def test_digits_split_seed_decides_the_split():
    a, b, c = sources.digits(split_seed=1), sources.digits(split_seed=1), sources.digits(split_seed=2)
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split][0], b.splits[split][0])
        assert torch.equal(a.splits[split][1], b.splits[split][1])
    assert not torch.equal(a.splits["val"][0], c.splits["val"][0])


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"val_fraction": 0}, "data.val_fraction"),
        ({"test_fraction": 1.5}, "data.test_fraction"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "data.val_fraction + data.test_fraction"),
    ],
)
def test_digits_bad_fractions(kwargs, key):
    with pytest.raises(UserError, match=key.replace("+", r"\+")) as err:
        sources.digits(**kwargs)
    assert "\n" not in str(err.value)


# mnist1d


def test_mnist1d_shapes_and_global_rng_untouched():
    np.random.seed(123)
    random.seed(123)
    np_state, py_state = np.random.get_state(), random.getstate()
    dm = sources.mnist1d(num_samples=1000, split_seed=3)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    assert random.getstate() == py_state
    assert dm.in_shape == (1, 40)
    assert dm.num_classes == 10
    assert sizes(dm) == {"train": 680, "val": 120, "test": 200}
    assert labels(dm, "val") == set(range(10))


def test_mnist1d_default_is_the_published_dataset_whatever_the_run_seed():
    """conf/data/mnist1d.yaml: split_seed 42, mnist1d's own default, gives the published 4000/1000 signals; the
    run's seed does not change the data."""
    from hydra import compose, initialize_config_dir
    from mnist1d.data import get_dataset_args, make_dataset

    from dlopt.apps import config_dir
    from dlopt.hydra_glue import register_resolvers
    from dlopt.training.run import _data

    published = make_dataset(get_dataset_args())  # the package's defaults: seed 42, 5000 samples
    register_resolvers()  # conf/ calls dlopt's resolvers by name
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        data = [_data(compose("train", [f"seed={seed}", "data=mnist1d"])) for seed in (0, 7)]
    assert sizes(data[0]) == sizes(data[1]) == {"train": 3400, "val": 600, "test": 1000}
    for dm in data:
        assert np.array_equal(dm.splits["test"][0].squeeze(1).numpy(), published["x_test"].astype(np.float32))
        assert np.array_equal(dm.splits["test"][1].numpy(), published["y_test"])


# synthetic


@pytest.mark.parametrize("shape", [[20], [2, 30], (3, 16, 16)])
def test_synthetic_shapes(shape):
    dm = sources.synthetic(shape=shape, num_classes=4, num_samples=200)
    assert dm.in_shape == tuple(shape)
    assert dm.num_classes == 4
    assert sum(sizes(dm).values()) == 200
    for split in ("train", "val", "test"):
        assert labels(dm, split) == set(range(4))


def test_synthetic_is_learnable_by_nearest_class_mean():
    dm = sources.synthetic(shape=[16], num_classes=5, num_samples=500, noise=0.5)
    (x, y), (xt, yt) = dm.splits["train"], dm.splits["test"]
    means = torch.stack([x[y == c].mean(0) for c in range(5)])
    assert (torch.cdist(xt, means).argmin(1) == yt).float().mean() > 0.9


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"shape": [1, 2, 3, 4]}, "data.shape"),
        ({"shape": [0, 8]}, "data.shape"),
        ({"shape": "8x8"}, "data.shape"),
        ({"num_classes": 1}, "data.num_classes"),
        ({"num_samples": 20}, "data.num_samples"),
        ({"noise": -1}, "data.noise"),
    ],
)
def test_synthetic_bad_values(kwargs, key):
    with pytest.raises(UserError, match=key) as err:
        sources.synthetic(**kwargs)
    assert "\n" not in str(err.value)


# torchvision datasets (offline: download=False everywhere)


@pytest.mark.parametrize(
    "dataset, folder",
    [("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw"), ("cifar10", "cifar-10-batches-py")],
)
def test_torchvision_missing_files_say_where_to_put_them(tmp_path, dataset, folder):
    with pytest.raises(UserError) as err:
        sources.torchvision_dataset(dataset=dataset, root=str(tmp_path), download=False)
    msg = str(err.value)
    assert f"data={dataset}:" in msg and f"{tmp_path / folder}/" in msg and "data.root=PATH" in msg
    assert "\n" not in msg


def test_torchvision_unknown_dataset():
    with pytest.raises(UserError, match="mnist, fashion_mnist, cifar10"):
        sources.torchvision_dataset(dataset="imagenet", download=False)


@pytest.mark.parametrize("dataset, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_idx_files_load_offline(tmp_path, dataset, folder):
    write_idx(tmp_path / folder / "raw", "train", 200, seed=0)
    write_idx(tmp_path / folder / "raw", "t10k", 30, seed=1)
    dm = sources.torchvision_dataset(dataset=dataset, root=str(tmp_path), download=False, val_fraction=0.1)
    assert sizes(dm) == {"train": 180, "val": 20, "test": 30}
    assert dm.in_shape == (1, 28, 28)
    assert dm.num_classes == 10
    assert labels(dm, "val") == set(range(10))
    x = dm.splits["test"][0]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and x.max() > 0.9
