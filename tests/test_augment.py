"""Tests of dlopt.data.augment, of where the DataModule applies it, of its config checks, of the augmentations
that change a data option's classes (data.label_changing: skipped when a preset asks for them, refused when the user
sets them) and of the augmentation preview (a table's samples as bars named by feature) of a real `dlopt train`
run: real tensors, real kornia and torchvision transforms, a real Trainer, the real command in a temporary folder."""

import csv
import math
import re

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dlopt.apps import config_dir
from dlopt.checks import check
from dlopt.data.augment import OFF, Augment, build_augment, keeping_labels
from dlopt.data.datamodule import InMemoryDataModule, input_stats
from dlopt.errors import UserError
from dlopt.hydra_glue import register_resolvers

PRESETS = ("none", "light", "standard", "strong", "randaugment", "mixup", "cutmix")
SHAPES = {"grey": (1, 8, 8), "rgb": (3, 8, 8), "signal": (2, 40), "vector": (10,)}
# preset -> the input kinds it fits (none fits all and builds nothing)
PRESET_FITS = {
    "none": {"grey", "rgb", "signal", "vector"},
    "light": {"grey", "rgb", "signal"},  # flip, crop
    "standard": {"grey", "rgb"},  # + rotation
    "strong": {"grey", "rgb"},  # + rotation, zoom, erasing, noise
    "randaugment": {"grey", "rgb"},
    "mixup": {"grey", "rgb", "signal", "vector"},
    "cutmix": {"grey", "rgb"},
}

DATA = ("digits", "mnist1d", "synthetic", "image_folder", "csv", "mnist", "fashion_mnist", "cifar10")
# what each data option declares, and why (conf/data/*.yaml)
DECLARED = {"digits": ["hflip_p", "vflip_p"], "mnist": ["hflip_p", "vflip_p"],  # a mirrored 2, an upside-down 6
            "fashion_mnist": ["vflip_p"], "cifar10": ["vflip_p"],  # mirror-symmetric classes, never upside down
            "mnist1d": ["hflip_p"],  # a time-reversed signal is another digit's pattern
            "synthetic": ["hflip_p", "vflip_p"],  # a flipped prototype is no class's prototype
            "csv": [], "image_folder": []}  # vectors take no flips; a folder of images declares nothing by default


def composed(*overrides):
    register_resolvers()  # conf/ calls dlopt's resolvers by name
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose("train", overrides=list(overrides))


def knobs_of(cfg):
    return OmegaConf.to_container(cfg.augmentation, resolve=True)


def flips(augment):
    return [type(step).__name__ for step in (augment.batch or []) if "Flip" in type(step).__name__]


def same_images(n, shape, seed=0):
    """n copies of one random (asymmetric) input."""
    img = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) + 0.5  # no zeros: padding shows
    return img.expand(n, *shape).clone()


def labels(n, k=10):
    return torch.arange(n) % k


def windows(img, padding):
    """Every crop of the zero-padded image back to its own size (what RandomCrop can return)."""
    h, w = img.shape[-2:]
    padded = F.pad(img, (padding, padding, padding, padding))
    return [padded[..., i : i + h, j : j + w] for i in range(2 * padding + 1) for j in range(2 * padding + 1)]


def distinct(batch):
    return len({tuple(sample.flatten().tolist()) for sample in batch})


# every preset


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_passes_the_checks_and_builds_on_the_shapes_it_fits(preset):
    cfg = composed(f"augmentation={preset}")
    check(cfg)
    knobs = knobs_of(cfg)
    assert set(knobs) == set(OFF)  # every preset starts from none: all knobs present
    for kind, shape in SHAPES.items():
        if kind not in PRESET_FITS[preset]:
            with pytest.raises(UserError) as err:
                build_augment(shape, 10, **knobs)
            message = str(err.value)
            assert "\n" not in message
            key = message.split("=")[0]
            assert key.startswith("augmentation.") and knobs[key.split(".", 1)[1]] != OFF[key.split(".", 1)[1]]
            continue
        augment = build_augment(shape, 10, **knobs)
        if preset == "none":
            assert augment is None
            continue
        assert isinstance(augment, Augment) and isinstance(augment, torch.nn.Module)
        torch.manual_seed(0)
        x = torch.rand(6, *shape)
        xa, ya = augment(x.clone(), labels(6))
        assert xa.shape == x.shape and xa.dtype == x.dtype and torch.isfinite(xa).all()
        assert ya.shape == ((6, 10) if preset in ("mixup", "cutmix") else (6,))


@pytest.mark.parametrize("preset, shape", [("randaugment", (2, 40)), ("cutmix", (2, 40)), ("standard", (2, 40)),
                                           ("randaugment", (10,)), ("light", (10,))])
def test_a_preset_that_does_not_fit_the_data_names_its_key_and_the_data_kind(preset, shape):
    knobs = knobs_of(composed(f"augmentation={preset}"))
    with pytest.raises(UserError, match=r"^augmentation\.\w+=") as err:
        build_augment(shape, 10, **knobs)
    assert ("signals" if len(shape) == 2 else "vectors") in str(err.value)
    assert str(tuple(shape)) in str(err.value)


@pytest.mark.parametrize("in_shape", list(SHAPES.values()))
def test_nothing_switched_on_gives_none(in_shape):
    assert build_augment(in_shape) is None
    assert build_augment(in_shape, **OFF) is None
    assert build_augment(in_shape, hflip_p=0.0, crop_padding=0, scale=None, policy="none") is None


def test_an_unknown_knob_is_a_user_error_naming_it():
    with pytest.raises(UserError, match=r"augmentation\.foo") as err:
        build_augment((1, 8, 8), foo=1)
    assert "hflip_p" in str(err.value)  # lists the knobs there are


# per-sample parameters on images


@pytest.mark.parametrize(
    "knobs, at_least",
    [
        ({"crop_padding": 2}, 9),  # 25 windows
        ({"rotate_deg": 30.0}, 28),
        ({"translate": 0.25}, 20),
        ({"scale": [0.7, 1.3]}, 20),
        ({"resized_crop": [0.3, 1.0]}, 9),
        ({"erasing_p": 0.8}, 9),
        ({"color_jitter": 0.4}, 28),
        ({"policy": "randaugment"}, 9),
        ({"policy": "trivialaugment"}, 5),
        ({"noise_std": 0.1}, 32),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_each_sample_draws_its_own_parameters(knobs, at_least):
    torch.manual_seed(0)
    x = same_images(32, (3, 8, 8))
    out, y = build_augment((3, 8, 8), **knobs)(x.clone(), labels(32))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(y, labels(32))
    assert distinct(out) >= at_least  # one draw for the whole batch would give 1


def test_flip_alone_flips_some_samples_and_not_others():
    torch.manual_seed(1)
    x = same_images(40, (1, 6, 6))
    out, _ = build_augment((1, 6, 6), hflip_p=0.5)(x, labels(40))
    flipped = [torch.equal(s, x[0].flip(-1)) for s in out]
    kept = [torch.equal(s, x[0]) for s in out]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 5 < sum(flipped) < 35


def test_vflip_flips_the_height():
    x = torch.rand(4, 2, 5, 7)
    assert torch.equal(build_augment((2, 5, 7), vflip_p=1.0)(x, labels(4))[0], x.flip(-2))


def test_flip_with_probability_one_and_zero():
    x = torch.rand(4, 2, 5, 7)
    out, y = build_augment((2, 5, 7), hflip_p=1.0)(x, labels(4))
    assert torch.equal(out, x.flip(-1)) and torch.equal(y, labels(4))
    assert build_augment((2, 5, 7), hflip_p=0.0) is None
    torch.manual_seed(0)
    img = same_images(32, (1, 6, 6))
    out, _ = build_augment((1, 6, 6), hflip_p=0.0, crop_padding=1)(img, labels(32))  # crop alone is on
    assert all(any(torch.equal(s, c) for c in windows(img[0], 1)) for s in out)  # never flipped


def test_crop_and_flip_give_exactly_one_of_the_padded_windows():
    torch.manual_seed(0)
    x = same_images(32, (3, 8, 8))
    out, _ = build_augment((3, 8, 8), hflip_p=0.5, crop_padding=2)(x, labels(32))
    assert distinct(out) > 8  # 25 crops x 2 flips
    candidates = windows(x[0], 2) + windows(x[0].flip(-1), 2)
    for sample in out:
        assert any(torch.equal(sample, c) for c in candidates)


def test_crop_alone_shifts_each_sample_on_its_own():
    torch.manual_seed(2)
    x = same_images(32, (1, 8, 8))
    out, _ = build_augment((1, 8, 8), crop_padding=1)(x, labels(32))
    assert out.shape == x.shape
    assert distinct(out) > 3
    candidates = windows(x[0], 1)
    assert all(any(torch.equal(s, c) for c in candidates) for s in out)


# signals (C, L) and vectors (F,)


def test_signals_are_cropped_along_their_length_only():
    torch.manual_seed(3)
    x = same_images(32, (2, 40))
    out, _ = build_augment((2, 40), crop_padding=3)(x, labels(32))
    assert out.shape == x.shape
    assert distinct(out) > 3
    padded = F.pad(x[0], (3, 3))
    shifts = [padded[:, k : k + 40] for k in range(7)]
    assert all(any(torch.equal(s, c) for c in shifts) for s in out)


def test_signals_flip_along_their_length():
    torch.manual_seed(4)
    x = same_images(32, (2, 40))
    out, _ = build_augment((2, 40), hflip_p=0.5, crop_padding=2)(x, labels(32))
    assert out.shape == x.shape
    assert distinct(out) > 5
    assert torch.equal(build_augment((2, 40), hflip_p=1.0)(x, labels(32))[0], x.flip(-1))


def test_signals_are_translated_along_their_length_only():
    torch.manual_seed(5)
    level = torch.tensor([1.0, 3.0]).reshape(1, 2, 1)
    x = level.expand(32, 2, 40).clone()  # each channel constant along its length
    out, _ = build_augment((2, 40), translate=0.2)(x, labels(32))
    assert out.shape == x.shape
    # shifts of at most 0.2 * 40 = 8 steps: the middle keeps its value; a shift across the
    # channel axis (or the 1-pixel height) would pull padding into every position
    torch.testing.assert_close(out[..., 9:31], x[..., 9:31])
    ends = torch.cat([out[..., :8], out[..., -8:]], -1)
    assert (ends < level - 1e-3).any(-1).any(-1).sum() > 16  # most samples were shifted
    assert distinct(out) > 16


@pytest.mark.parametrize("key, value", [("rotate_deg", 10.0), ("vflip_p", 0.5), ("color_jitter", 0.2),
                                        ("policy", "randaugment"), ("cutmix_alpha", 1.0),
                                        ("resized_crop", [0.5, 1.0])])
def test_image_only_knobs_on_signals_name_the_key_and_signals(key, value):
    with pytest.raises(UserError, match=rf"^augmentation\.{key}=") as err:
        build_augment((2, 40), **{key: value})
    assert "signals" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("key, value", [("hflip_p", 0.5), ("vflip_p", 0.5), ("rotate_deg", 10.0), ("translate", 0.1),
                                        ("scale", [0.9, 1.1]), ("crop_padding", 1), ("resized_crop", [0.5, 1.0]),
                                        ("color_jitter", 0.2), ("erasing_p", 0.5), ("policy", "autoaugment"),
                                        ("cutmix_alpha", 1.0)])
def test_only_noise_and_mixup_work_on_vectors(key, value):
    with pytest.raises(UserError, match=rf"^augmentation\.{key}=") as err:
        build_augment((10,), **{key: value})
    assert "vectors" in str(err.value)
    x = torch.rand(8, 10)
    out, y = build_augment((10,), 3, noise_std=0.1, mixup_alpha=0.4)(x, labels(8, 3))
    assert out.shape == (8, 10) and y.shape == (8, 3)


def test_colour_jitter_on_grey_images_jitters_brightness_and_contrast():
    torch.manual_seed(0)
    x = same_images(32, (1, 8, 8))
    out, _ = build_augment((1, 8, 8), color_jitter=0.4)(x.clone(), labels(32))
    assert out.shape == x.shape and distinct(out) > 28  # each sample its own brightness and contrast
    jitter = build_augment((1, 8, 8), color_jitter=0.2).batch[0]
    assert (jitter.brightness, jitter.contrast, jitter.saturation) == (0.2, 0.2, 0.0)  # no saturation in grey
    rgb = build_augment((3, 8, 8), color_jitter=0.2).batch[0]
    assert (rgb.brightness, rgb.contrast, rgb.saturation) == (0.2, 0.2, 0.2)


def test_every_knob_that_does_not_fit_is_named_in_one_line():
    with pytest.raises(UserError) as err:
        build_augment((1, 40), hflip_p=0.5, rotate_deg=15.0, color_jitter=0.2, noise_std=0.1)
    message = str(err.value)
    assert message.startswith("augmentation.rotate_deg=15.0 works on images; augmentation.color_jitter=0.2 works on "
                              "images, but the data gives signals of shape (1, 40)"), message
    assert "set augmentation.rotate_deg=0 augmentation.color_jitter=0 or" in message and "\n" not in message
    assert "hflip_p" not in message and "noise_std" not in message


# noise in units of the normalization scale


@pytest.mark.parametrize("shape", [(3, 4, 4), (2, 40), (5,)], ids=["images", "signals", "vectors"])
def test_noise_std_is_in_units_of_the_normalization_scale(shape):
    g = torch.Generator().manual_seed(0)
    spread = torch.tensor([0.5, 2.0, 4.0, 1.0, 8.0][: shape[0]])
    x = torch.randn(4000, *shape, generator=g) * spread.reshape(-1, *([1] * (len(shape) - 1)))
    _, scale = input_stats(x, "standardize")  # per channel (per feature for vectors), as build passes it
    torch.manual_seed(0)
    out, _ = build_augment(shape, noise_std=0.1, noise_scale=scale)(x.clone(), labels(4000))
    assert out.shape == x.shape
    normalized = ((out - x) / scale).transpose(0, 1).reshape(shape[0], -1)  # per channel / feature
    torch.testing.assert_close(normalized.std(1), torch.full((shape[0],), 0.1), rtol=0.03, atol=0)
    assert normalized.mean(1).abs().max() < 0.01
    raw = (out - x).transpose(0, 1).reshape(shape[0], -1).std(1)
    torch.testing.assert_close(raw, 0.1 * spread, rtol=0.05, atol=0)  # so the raw noise differs per channel


def test_noise_without_a_scale_is_in_raw_units():
    torch.manual_seed(0)
    x = torch.zeros(2000, 2, 40)
    out, _ = build_augment((2, 40), noise_std=0.3)(x, labels(2000))
    assert abs(out.std().item() - 0.3) < 0.01


# mixup and cutmix


def test_mixup_mixes_each_sample_with_the_previous_one_with_the_label_weight():
    torch.manual_seed(0)
    n = 12
    x, y = torch.rand(n, 3, 6, 6), torch.arange(n)  # every label distinct: the weights show
    augment = build_augment((3, 6, 6), num_classes=n, mixup_alpha=0.4)
    lams = set()
    for _ in range(4):
        out, soft = augment(x.clone(), y.clone())
        assert soft.dtype.is_floating_point and soft.shape == (n, n)
        torch.testing.assert_close(soft.sum(1), torch.ones(n))
        lam = soft[0, 0].item()
        lams.add(round(lam, 6))
        partner = y.roll(1, 0)  # torchvision's MixUp mixes sample i with sample i - 1
        expected = lam * F.one_hot(y, n) + (1 - lam) * F.one_hot(partner, n)
        torch.testing.assert_close(soft, expected.float())
        torch.testing.assert_close(out, lam * x + (1 - lam) * x.roll(1, 0), rtol=0, atol=1e-6)
    assert len(lams) > 1  # a new weight each batch


@pytest.mark.parametrize("shape", [(2, 40), (10,)], ids=["signals", "vectors"])
def test_mixup_works_on_signals_and_vectors(shape):
    torch.manual_seed(1)
    x, y = torch.rand(8, *shape), torch.arange(8)
    out, soft = build_augment(shape, num_classes=8, mixup_alpha=1.0)(x.clone(), y)
    lam = soft[0, 0].item()
    assert soft.shape == (8, 8) and out.shape == x.shape
    torch.testing.assert_close(out, lam * x + (1 - lam) * x.roll(1, 0), rtol=0, atol=1e-6)


def test_cutmix_pastes_a_box_from_the_previous_sample_and_weights_labels_by_area():
    torch.manual_seed(0)
    n = 10
    x, y = torch.rand(n, 3, 16, 16), torch.arange(n)
    augment = build_augment((3, 16, 16), num_classes=n, cutmix_alpha=1.0)
    pasted_any = False
    for _ in range(5):
        out, soft = augment(x.clone(), y.clone())
        own, other = out == x, out == x.roll(1, 0)
        assert (own | other).all()  # every pixel is the sample's own or its partner's
        pasted = (~own).any(1).float().mean((1, 2))  # fraction of positions taken from the partner
        pasted_any |= bool((pasted > 0).any())
        assert soft.shape == (n, n)
        torch.testing.assert_close(soft.sum(1), torch.ones(n))
        torch.testing.assert_close(soft[torch.arange(n), y.roll(1, 0)], pasted)
        torch.testing.assert_close(soft[torch.arange(n), y], 1 - pasted)
    assert pasted_any


def test_mixup_and_cutmix_together_pick_one_per_batch():
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8)
    augment = build_augment((1, 8, 8), num_classes=8, mixup_alpha=1.0, cutmix_alpha=1.0)
    kinds = set()
    for _ in range(12):
        out, soft = augment(x.clone(), y)
        kinds.add("cutmix" if ((out == x) | (out == x.roll(1, 0))).all() else "mixup")
    assert kinds == {"mixup", "cutmix"}


# device, dtype, shape


@pytest.mark.parametrize(
    "knobs",
    [{"hflip_p": 0.5, "crop_padding": 1, "rotate_deg": 10.0, "scale": [0.9, 1.1], "erasing_p": 0.5},
     {"policy": "randaugment"}, {"color_jitter": 0.3, "resized_crop": [0.5, 1.0]}, {"noise_std": 0.1},
     {"mixup_alpha": 0.2}, {"cutmix_alpha": 1.0}],
    ids=lambda k: ",".join(k),
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_augment_keeps_the_batch_shape_device_and_dtype(knobs, dtype):
    torch.manual_seed(0)
    augment = build_augment((3, 8, 8), 10, noise_scale=torch.full((3, 1, 1), 0.5), **knobs)
    x = torch.rand(5, 3, 8, 8, dtype=dtype)
    out, y = augment(x, labels(5))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_noise_keeps_a_half_precision_batch_in_its_dtype(dtype):
    augment = build_augment((3, 8, 8), noise_std=0.1, noise_scale=torch.full((3, 1, 1), 0.5))
    out, _ = augment(torch.rand(4, 3, 8, 8).to(dtype), labels(4))
    assert out.dtype == dtype


def test_noise_follows_the_batch_to_its_device():
    augment = build_augment((3, 8, 8), noise_std=0.1, noise_scale=torch.full((3, 1, 1), 0.5))
    out, _ = augment(torch.empty(4, 3, 8, 8, device="meta"), torch.zeros(4, dtype=torch.long, device="meta"))
    assert out.device.type == "meta" and out.shape == (4, 3, 8, 8)


def test_noise_trains_with_bf16_true_precision():
    from dlopt.training.run import build

    data, module = build(composed("model=mlp", "model.width=16", "augmentation.noise_std=0.1", "scheduler=none"))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, precision="bf16-true",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, datamodule=data)
    assert math.isfinite(module.history[-1]["train/loss"])


@pytest.mark.parametrize("shape, key, value", [((10,), "scale", [0.9, 1.1]), ((2, 40), "resized_crop", [0.5, 1.0])])
def test_the_suggested_override_is_accepted(shape, key, value):
    with pytest.raises(UserError) as err:
        build_augment(shape, **{key: value})
    suggestion = str(err.value).split("set ", 1)[1].split(" ")[0]
    assert suggestion.startswith(f"augmentation.{key}=")
    check(composed(suggestion))


# checks of the composed config


@pytest.mark.parametrize(
    "override",
    ["augmentation.hflip_p=1.5", "augmentation.hflip_p=-0.1", "augmentation.vflip_p=2", "augmentation.vflip_p=-1",
     "augmentation.erasing_p=1.01", "augmentation.erasing_p=-0.5", "augmentation.scale=[1.2,0.9]",
     "augmentation.scale=[0,1]", "augmentation.resized_crop=[0.5,1.5]", "augmentation.policy=foo",
     "augmentation.rotate_deg=-1", "augmentation.crop_padding=-1", "augmentation.crop_padding=1.5",
     "augmentation.color_jitter=2", "augmentation.noise_std=-0.1", "augmentation.mixup_alpha=-1",
     "augmentation.cutmix_alpha=-1", "augmentation.translate=1.0", "augmentation.hflip_p=true"],
)
def test_bad_values_are_rejected_naming_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(UserError) as err:
        check(composed("augmentation=standard", override))
    message = str(err.value)
    assert message.startswith(f"{key}=") and "\n" not in message
    if key.endswith("policy"):
        assert "randaugment" in message  # lists the valid ones


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


def record_trainer(**kw):
    return L.Trainer(**{"max_epochs": 2, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                        "enable_model_summary": False, "num_sanity_val_steps": 2, "accelerator": "cpu", **kw})


def test_the_datamodule_augments_training_batches_only():
    g = torch.Generator().manual_seed(5)
    n = 12
    # sample i is a random image whose label is i, so every batch can be checked against its originals
    xs = [torch.rand(n, 1, 4, 6, generator=g) for _ in range(3)]
    ys = [torch.arange(n)] * 3
    dm = InMemoryDataModule(xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], classes=[str(i) for i in range(n)],
                            batch_size=5, normalize="none")
    dm.augment = build_augment((1, 4, 6), hflip_p=1.0)
    module = Record()
    trainer = record_trainer()
    trainer.fit(module, datamodule=dm)
    trainer.validate(module, datamodule=dm, verbose=False)
    trainer.test(module, datamodule=dm, verbose=False)
    for split, x in zip(("train", "val", "test"), xs):
        assert module.seen[split], split
        for xb, yb in module.seen[split]:
            expected = x[yb].flip(-1) if split == "train" else x[yb]
            assert torch.equal(xb, expected), split
    assert sum(len(y) for _, y in module.seen["train"]) == 2 * n
    # the unaugmented samples the preview shows
    first_x, first_y = dm.train_samples(4)
    assert torch.equal(first_x, xs[0][:4]) and torch.equal(first_y, ys[0][:4])


def test_mixed_labels_reach_training_only():
    torch.manual_seed(0)
    n = 16
    x, y = torch.rand(n, 3, 4, 4), torch.arange(n) % 4
    dm = InMemoryDataModule(x, y, x, y, x, y, classes=list("abcd"), batch_size=8, normalize="none")
    dm.augment = build_augment((3, 4, 4), num_classes=4, mixup_alpha=1.0)
    module = Record()
    trainer = record_trainer(max_epochs=1)
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)
    for _, yb in module.seen["train"]:
        assert yb.dtype.is_floating_point and yb.shape == (8, 4)
        torch.testing.assert_close(yb.sum(1), torch.ones(8))
    for split in ("val", "test"):
        assert module.seen[split]
        for i, (xb, yb) in enumerate(module.seen[split]):  # in order (2 batches a pass), untouched, integer labels
            start = 8 * (i % 2)
            assert torch.equal(xb, x[start : start + 8]) and torch.equal(yb, y[start : start + 8])


def test_no_augment_leaves_training_batches_as_they_are():
    x, y = torch.rand(8, 1, 4, 4), torch.arange(8)
    dm = InMemoryDataModule(x, y, x, y, x, y, classes=[str(i) for i in range(8)], batch_size=4, normalize="none")
    assert dm.augment is None
    module = Record()
    trainer = record_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    for xb, yb in module.seen["train"]:
        assert torch.equal(xb, x[yb])


def test_the_preview_does_not_change_the_training_random_stream(tmp_path):
    from dlopt.training.run import preview_augmentation

    x, y = torch.rand(16, 3, 8, 8), torch.arange(16) % 4
    dm = InMemoryDataModule(x, y, x, y, x, y, classes=list("abcd"), batch_size=8, normalize="none")
    dm.augment = build_augment((3, 8, 8), num_classes=4, hflip_p=0.5, rotate_deg=10.0, mixup_alpha=0.2)
    torch.manual_seed(3)
    state = torch.get_rng_state()
    preview_augmentation(dm, tmp_path, logger=None)
    assert torch.equal(torch.get_rng_state(), state)
    assert (tmp_path / "augmentations.png").stat().st_size > 1000


# augmentations that change the classes (data.label_changing): the declaration


@pytest.mark.parametrize("data", DATA)
def test_every_data_option_declares_its_label_changing_augmentations(data):
    cfg = composed(f"data={data}")
    assert list(cfg.data.label_changing) == DECLARED[data]
    assert set(cfg.data.label_changing) <= set(OFF)


def test_a_declaration_that_names_no_augmentation_knob_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"^data\.label_changing=") as err:
        check(composed("data.label_changing=[flips]"))
    assert "\n" not in str(err.value) and "hflip_p" in str(err.value)  # lists the knobs
    check(composed("data.label_changing=[]"))
    check(composed("data.label_changing=[rotate_deg]"))


@pytest.mark.parametrize("data", ["cifar10", "fashion_mnist"])
def test_mirror_symmetric_classes_keep_a_presets_horizontal_flip(data):
    cfg = composed(f"data={data}", "augmentation=standard")
    knobs = keeping_labels(knobs_of(cfg), cfg.data.label_changing, (), data)
    assert knobs == knobs_of(cfg) and knobs["hflip_p"] == 0.5
    assert flips(build_augment((3, 32, 32), **knobs)) == ["RandomHorizontalFlip"]
    with pytest.raises(UserError, match=r"^augmentation\.vflip_p=0\.5 refused: data=" + data):
        keeping_labels({**knobs, "vflip_p": 0.5}, cfg.data.label_changing, ["vflip_p"], data)


@pytest.mark.parametrize("data, preset", [("digits", "standard"), ("digits", "light"), ("digits", "strong"),
                                          ("mnist", "standard"), ("mnist1d", "light"), ("synthetic", "light")])
def test_a_presets_label_changing_flip_is_skipped_and_the_rest_kept(data, preset, caplog):
    cfg = composed(f"data={data}", f"augmentation={preset}")
    with caplog.at_level("INFO", logger="dlopt.data.augment"):
        knobs = keeping_labels(knobs_of(cfg), cfg.data.label_changing, (), data)
    assert knobs == {**knobs_of(cfg), "hflip_p": 0}
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"augmentation: hflip_p skipped: data={data} lists it in data.label_changing=")


def test_the_user_can_declare_flips_fine_or_label_changing():
    cfg = composed("augmentation.hflip_p=0.5", "data.label_changing=[]")  # digits, declared flip-safe by the user
    assert keeping_labels(knobs_of(cfg), cfg.data.label_changing, ["hflip_p"], "digits")["hflip_p"] == 0.5
    cfg = composed("data=image_folder", "augmentation=light")  # a folder of images: flips on unless declared
    assert keeping_labels(knobs_of(cfg), cfg.data.label_changing, (), "image_folder")["hflip_p"] == 0.5
    cfg = composed("data=image_folder", "augmentation=light", "data.label_changing=[hflip_p]")
    assert keeping_labels(knobs_of(cfg), cfg.data.label_changing, (), "image_folder")["hflip_p"] == 0


def test_both_flips_set_by_the_user_are_refused_in_one_line():
    with pytest.raises(UserError) as err:
        keeping_labels({**OFF, "hflip_p": 0.5, "vflip_p": 0.2}, ["hflip_p", "vflip_p"], ["hflip_p", "vflip_p"],
                       "digits")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("augmentation.hflip_p=0.5 and augmentation.vflip_p=0.2 refused: data=digits")
    assert "augmentation.hflip_p=0 augmentation.vflip_p=0" in message and "data.label_changing=[]" in message


def test_build_skips_a_presets_flip_on_digits_and_records_the_augmentation_as_built():
    from dlopt.training.run import build

    cfg = composed("augmentation=standard")
    data, module = build(cfg)
    assert flips(data.augment) == []
    assert [type(s).__name__ for s in data.augment.batch] == ["RandomCrop", "RandomAffine"]
    assert module.config["augmentation"] == {**knobs_of(cfg), "hflip_p": 0}
    with pytest.raises(UserError, match=r"^augmentation\.hflip_p=0\.5 refused"):
        build(composed("augmentation.hflip_p=0.5"), set_by_user=["augmentation.hflip_p"])


# augmentations.png of a table


def table(path, rows=60):
    g = torch.Generator().manual_seed(0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["age", "income", "colour", "label"])
        for i in range(rows):
            writer.writerow([int(torch.randint(18, 80, (1,), generator=g)), float(torch.rand(1, generator=g)) * 9e4,
                             ["red", "green", "blue"][i % 3], "ab"[i % 2]])
    return path


def test_a_tables_samples_are_bars_labelled_with_the_feature_names(tmp_path):
    from dlopt.data.table import csv as csv_data
    from dlopt.training.report import plot_samples, pyplot

    data = csv_data(path=str(table(tmp_path / "t.csv")), target="label", categorical=["colour"], seed=0)
    names = ["age", "income", "colour=blue", "colour=green", "colour=red"]
    assert data.feature_names == names and data.columns == ["age", "income", "colour", "colour", "colour"]
    x, y = data.train_samples(4)
    augment = build_augment(data.in_shape, data.num_classes, data.scale, noise_std=0.2)
    fig = plot_samples([("original", x, list("abcd")), ("augmented 1", augment(x, y)[0], list("abcd"))], "t",
                       names=data.feature_names)
    axes = fig.axes
    assert len(axes) == 8
    assert [t.get_text() for t in axes[0].get_yticklabels()] == names  # the first of each row names the bars
    assert [t.get_text() for t in axes[4].get_yticklabels()] == names
    assert all(len(ax.patches) == 5 and not ax.lines[1:] for ax in axes)  # one bar per feature, no joined lines
    pyplot().close(fig)


def test_signals_stay_lines_and_images_stay_pictures():
    from dlopt.training.report import plot_samples, pyplot

    fig = plot_samples([("original", torch.rand(3, 2, 40), list("abc"))], "t")
    assert all(len(ax.lines) == 2 and not ax.patches and not ax.images for ax in fig.axes)
    pyplot().close(fig)
    fig = plot_samples([("original", torch.rand(3, 1, 8, 8), list("abc"))], "t")
    assert all(len(ax.images) == 1 and not ax.lines for ax in fig.axes)
    pyplot().close(fig)


# end to end: the real command


@pytest.fixture(scope="module")
def standard_run(cli, tmp_path_factory):
    return cli.train("augmentation=standard", cwd=tmp_path_factory.mktemp("standard"))


def test_a_run_with_augmentation_leaves_a_preview_png(cli, standard_run):
    from PIL import Image

    path = standard_run / "augmentations.png"
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width >= 300 and height >= 200
        low, high = image.convert("L").getextrema()
        assert high - low > 100  # a drawing, not a blank canvas
    assert cli.config(standard_run)["augmentation"]["rotate_deg"] == 10.0
    cli.assert_finite(cli.metrics(standard_run))


def test_a_run_with_augmentation_logs_the_preview_to_tensorboard(standard_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(standard_run.rglob("events.out.tfevents.*"))
    assert files
    tags = set()
    for path in files:
        events = EventAccumulator(str(path.parent), size_guidance={"images": 0})
        events.Reload()
        tags |= set(events.Tags()["images"])
        if "augmentations" in events.Tags()["images"]:
            image = events.Images("augmentations")[0]
            assert image.width >= 300 and image.height >= 200
    assert "augmentations" in tags


def test_mixup_on_signals_trains_with_finite_metrics(cli, tmp_path):
    run = cli.train("augmentation=mixup", "data=mnist1d", "data.num_samples=1000", "model=cnn", cwd=tmp_path)
    metrics = cli.metrics(run)
    cli.assert_finite(metrics)
    assert {"train/loss", "train/acc", "val/loss", "test/acc"} <= set(metrics)
    assert cli.config(run)["augmentation"]["mixup_alpha"] == 0.2
    assert (run / "augmentations.png").is_file()


def test_colour_jitter_on_signals_exits_2_in_one_line_and_leaves_no_run(in_process, tmp_path):
    result = in_process.run("train", *in_process.TINY, "data=synthetic", "data.shape=[2,40]",
                            "augmentation.color_jitter=0.2", cwd=tmp_path)
    assert result.returncode == 2, result.describe()
    assert "Traceback" not in result.output, result.describe()
    lines = [line for line in result.output.splitlines() if "augmentation.color_jitter" in line]
    assert len(lines) == 1, result.describe()
    assert "works on images" in lines[0] and "signals of shape (2, 40)" in lines[0]
    assert in_process.run_dirs(tmp_path) == []


def test_digits_with_the_standard_preset_skips_the_flip_in_one_line(cli, tmp_path):
    run = cli.train("data=digits", "augmentation=standard", cwd=tmp_path)
    log = (run / "train.log").read_text()
    lines = [line for line in log.splitlines() if "skipped" in line]
    assert len(lines) == 1 and "augmentation: hflip_p skipped: data=digits" in lines[0], log
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    built = checkpoint["dlopt"]["config"]["augmentation"]
    assert built["hflip_p"] == 0 and built["crop_padding"] == 2 and built["rotate_deg"] == 10.0
    assert cli.config(run)["augmentation"]["hflip_p"] == 0.5  # what was asked: the preset's
    cli.assert_finite(cli.metrics(run))


def test_a_users_flip_on_digits_exits_2_in_one_line_and_leaves_no_run(in_process, tmp_path):
    result = in_process.run("train", *in_process.TINY, "augmentation.hflip_p=0.5", "data=digits", cwd=tmp_path)
    assert result.returncode == 2, result.describe()
    assert "Traceback" not in result.output, result.describe()
    lines = [line for line in result.stderr.splitlines() if "augmentation.hflip_p" in line]
    assert len(lines) == 1, result.describe()
    assert re.search(r"augmentation\.hflip_p=0\.5 refused: data=digits lists it in data\.label_changing="
                     r"\[hflip_p,vflip_p\]", lines[0]), lines[0]
    assert "set augmentation.hflip_p=0, or data.label_changing=[]" in lines[0]
    assert in_process.run_dirs(tmp_path) == []


def test_a_csv_run_draws_its_preview(cli, tmp_path):
    path = table(tmp_path / "t.csv")
    run = cli.train("data=csv", f"data.path={path}", "data.target=label", "data.categorical=[colour]", "model=mlp",
                    "augmentation=mixup", "augmentation.noise_std=0.1", cwd=tmp_path)
    assert (run / "augmentations.png").stat().st_size > 5000
