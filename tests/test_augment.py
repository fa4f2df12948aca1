"""Tests of dlopt.data.augment and of where the DataModule applies it, on real tensors and a real Trainer."""

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from dlopt.apps import config_dir
from dlopt.data.augment import Augment, build_augment
from dlopt.data.datamodule import InMemoryDataModule
from dlopt.errors import UserError


def same_images(n, shape, seed=0):
    """n copies of one random (asymmetric) image."""
    img = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) + 0.5  # no zeros: padding shows
    return img.expand(n, *shape).clone()


def windows(img, padding):
    """Every crop of the zero-padded image back to its own size (what RandomCrop can return)."""
    h, w = img.shape[-2:]
    padded = F.pad(img, (padding, padding, padding, padding))
    return [padded[..., i : i + h, j : j + w] for i in range(2 * padding + 1) for j in range(2 * padding + 1)]


def distinct(batch):
    return len({tuple(sample.flatten().tolist()) for sample in batch})


# build_augment


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (3, 32, 32), (2, 40), (10,)])
def test_nothing_switched_on_gives_none(in_shape):
    assert build_augment(in_shape) is None
    assert build_augment(in_shape, hflip_p=0.0, crop_padding=0) is None


@pytest.mark.parametrize("config, expected", [("none", False), ("basic", True)])
def test_the_augmentation_group_options_build(config, expected):
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        cfg = compose("train", overrides=[f"augmentation={config}"])
    augment = build_augment((1, 8, 8), **cfg.augmentation)
    assert (augment is not None) == expected


def test_crop_and_flip_draw_their_own_parameters_per_sample():
    torch.manual_seed(0)
    x = same_images(32, (3, 8, 8))
    out = build_augment((3, 8, 8), hflip_p=0.5, crop_padding=2)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert distinct(out) > 8  # 25 crops x 2 flips: a batch-wide draw would give 1
    candidates = windows(x[0], 2) + windows(x[0].flip(-1), 2)
    for sample in out:
        assert any(torch.equal(sample, c) for c in candidates)


def test_flip_alone_flips_some_samples_and_not_others():
    torch.manual_seed(1)
    x = same_images(40, (1, 6, 6))
    out = build_augment((1, 6, 6), hflip_p=0.5)(x)
    flipped = [torch.equal(s, x[0].flip(-1)) for s in out]
    kept = [torch.equal(s, x[0]) for s in out]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 5 < sum(flipped) < 35


def test_flip_with_probability_one_and_zero():
    x = torch.rand(4, 2, 5, 7)
    assert torch.equal(build_augment((2, 5, 7), hflip_p=1.0)(x), x.flip(-1))
    assert build_augment((2, 5, 7), hflip_p=0.0, crop_padding=1) is not None  # crop alone is on


def test_crop_alone_shifts_each_sample_on_its_own():
    torch.manual_seed(2)
    x = same_images(32, (1, 8, 8))
    out = build_augment((1, 8, 8), crop_padding=1)(x)
    assert out.shape == x.shape
    assert distinct(out) > 3
    candidates = windows(x[0], 1)
    assert all(any(torch.equal(s, c) for c in candidates) for s in out)


def test_signals_are_cropped_along_their_length_only():
    torch.manual_seed(3)
    x = same_images(32, (2, 40))
    augment = build_augment((2, 40), crop_padding=3)
    out = augment(x)
    assert out.shape == x.shape
    assert distinct(out) > 3
    padded = F.pad(x[0], (3, 3))
    shifts = [padded[:, k : k + 40] for k in range(7)]
    assert all(any(torch.equal(s, c) for c in shifts) for s in out)


def test_signals_flip_along_their_length():
    torch.manual_seed(4)
    x = same_images(32, (2, 40))
    out = build_augment((2, 40), hflip_p=0.5, crop_padding=2)(x)
    assert out.shape == x.shape
    assert distinct(out) > 5
    assert torch.equal(build_augment((2, 40), hflip_p=1.0)(x), x.flip(-1))


def test_vectors_raise_user_error_naming_augmentation():
    with pytest.raises(UserError, match="augmentation") as err:
        build_augment((10,), hflip_p=0.5)
    assert "augmentation=none" in str(err.value)
    with pytest.raises(UserError, match="augmentation"):
        build_augment((10,), crop_padding=1)


@pytest.mark.parametrize("p", [-0.1, 1.5, 2])
def test_probability_outside_0_1_raises(p):
    with pytest.raises(UserError, match=rf"augmentation\.hflip_p={p}"):
        build_augment((1, 8, 8), hflip_p=p)


def test_negative_padding_raises():
    with pytest.raises(UserError, match=r"augmentation\.crop_padding=-1"):
        build_augment((1, 8, 8), crop_padding=-1)


def test_augment_is_a_module_applied_per_sample():
    augment = build_augment((1, 8, 8), hflip_p=0.5, crop_padding=1)
    assert isinstance(augment, Augment) and isinstance(augment, torch.nn.Module)
    assert augment(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)


# where the DataModule applies it


class Record(L.LightningModule):
    """Keeps every input batch each stage sees."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = {"train": [], "val": [], "test": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"].append(batch)
        return (self.w * batch[0].sum()).sum()

    def validation_step(self, batch, batch_idx):
        self.seen["val"].append(batch)

    def test_step(self, batch, batch_idx):
        self.seen["test"].append(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_the_datamodule_augments_training_batches_only():
    g = torch.Generator().manual_seed(5)
    n = 12
    # sample i is a random image whose label is i, so every batch can be checked against its originals
    xs = [torch.rand(n, 1, 4, 6, generator=g) for _ in range(3)]
    ys = [torch.arange(n)] * 3
    dm = InMemoryDataModule(xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], classes=[str(i) for i in range(n)],
                            batch_size=5, normalize="none", augment=build_augment((1, 4, 6), hflip_p=1.0))
    module = Record()
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=2, accelerator="cpu")
    trainer.fit(module, datamodule=dm)
    trainer.validate(module, datamodule=dm, verbose=False)
    trainer.test(module, datamodule=dm, verbose=False)
    for split, x in zip(("train", "val", "test"), xs):
        assert module.seen[split], split
        for xb, yb in module.seen[split]:
            expected = x[yb].flip(-1) if split == "train" else x[yb]
            assert torch.equal(xb, expected), split
    assert sum(len(y) for _, y in module.seen["train"]) == 2 * n


def test_no_augment_leaves_training_batches_as_they_are():
    x, y = torch.rand(8, 1, 4, 4), torch.arange(8)
    dm = InMemoryDataModule(x, y, x, y, x, y, classes=[str(i) for i in range(8)], batch_size=4, normalize="none")
    module = Record()
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    trainer.fit(module, datamodule=dm)
    for xb, yb in module.seen["train"]:
        assert torch.equal(xb, x[yb])
