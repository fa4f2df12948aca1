"""Training-split augmentation from the `augmentation` config group, applied to whole batches.

Every sample draws its own random parameters, on the device the batch is on. Flips, affine
(rotation, translation, zoom), crops, colour jitter (brightness and contrast only, on grey
images) and random erasing come from kornia.augmentation, which draws parameters per sample for
a whole batch in one call:
torchvision.transforms.v2 draws one set per call, so a v2 transform would move a whole batch
alike, and a per-sample loop of v2 costs more than a small network's step (see
bench/data_path.py). The policies (RandAugment, TrivialAugment, AutoAugment) are torchvision's,
applied per sample because each sample should get its own operations. MixUp and CutMix are
torchvision's (one mixing weight per batch, as in their papers) and turn labels into class
probabilities. Gaussian noise is scaled by the data's normalization scale, so `noise_std` reads
in units of the normalized input for images, signals and vectors alike.

Signals (C, L) go through the 2-D transforms as (C, 1, L) images; vectors (F,) take only noise
and mixup. A transform that does not fit the data's shape is a UserError naming the key (all
such keys at once). A data option lists in `data.label_changing` the knobs whose transform would change what
class a sample is (a mirrored digit is another digit, or none): a preset's are switched off with one log line,
one the user set is a UserError (keeping_labels).
"""

from __future__ import annotations

import logging
from typing import Any, Collection, Optional, Sequence

import torch
from torch import nn

from dlopt.checks import CHOICES, refuse_label_changing
from dlopt.data.knobs import OFF
from dlopt.errors import UserError

log = logging.getLogger(__name__)

POLICIES = CHOICES["policy"]

# key -> the input kinds it works on
FITS = {
    "hflip_p": ("image", "signal"),
    "vflip_p": ("image",),
    "rotate_deg": ("image",),
    "translate": ("image", "signal"),
    "scale": ("image", "signal"),
    "crop_padding": ("image", "signal"),
    "resized_crop": ("image",),
    "color_jitter": ("image",),
    "erasing_p": ("image", "signal"),
    "policy": ("image",),
    "cutmix_alpha": ("image",),
    "noise_std": ("image", "signal", "vector"),
    "mixup_alpha": ("image", "signal", "vector"),
}


def keeping_labels(knobs: dict, label_changing: Collection[str], set_by_user: Collection[str], data: str) -> dict:
    """`knobs` with the transforms `label_changing` (data.label_changing) names switched off: one the user set
    (`set_by_user`: knob names from the command line) is a UserError, a preset's is skipped with one log line."""
    changing = refuse_label_changing(knobs, label_changing, set_by_user, data)
    listed = f"data.label_changing=[{','.join(label_changing)}], transforms that change what class a sample is"
    for key in changing:
        log.info("augmentation: %s skipped: data=%s lists it in %s", key, data, listed)
    return {**knobs, **{key: OFF[key] for key in changing}}


def _kind(in_shape: Sequence[int]) -> str:
    return {1: "vector", 2: "signal"}.get(len(in_shape), "image")


class Augment(nn.Module):
    """(x, y) -> (x, y) for a training batch; y becomes class probabilities when mixing is on."""

    def __init__(self, in_shape: Sequence[int], policy: Optional[nn.Module], batch: Optional[nn.Module],
                 noise_std: float, noise_scale: Optional[torch.Tensor], mix: Optional[nn.Module]):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.policy, self.batch, self.mix = policy, batch, mix
        self.noise_std = noise_std
        scale = torch.ones(in_shape[0] if len(in_shape) > 1 else in_shape) if noise_scale is None else noise_scale
        scale = scale.reshape(1, 1, -1) if len(in_shape) == 1 else scale.reshape(-1, 1, 1)  # as (C, H, W)
        self.register_buffer("noise_scale", scale, persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape
        as_images = (len(x), *self.in_shape[:-1], 1, self.in_shape[-1]) if len(self.in_shape) == 2 \
            else (len(x), 1, 1, *self.in_shape) if len(self.in_shape) == 1 else shape  # (N, C, H, W)
        x = x.reshape(as_images)
        if self.policy is not None:  # torchvision's policies work on uint8 images, one sample at a time
            images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
            x = torch.stack([self.policy(image) for image in images]).to(x.dtype) / 255
        if self.batch is not None:
            x = self.batch(x)
        if self.noise_std:
            x = x + self.noise_std * self.noise_scale.to(x) * torch.randn_like(x)
        if self.mix is not None:
            x, y = self.mix(x, y)
        return x.reshape(shape), y


def build_augment(in_shape: Sequence[int], num_classes: int = 10, noise_scale: Optional[torch.Tensor] = None,
                  **knobs: Any) -> Optional[Augment]:
    """The augmentation the `augmentation` config asks for on inputs of `in_shape`, or None when all is off.

    `noise_scale` is the data's normalization scale (per channel or feature), so that `noise_std`
    is in normalized units; without it the noise is in raw units.
    """
    unknown = sorted(set(knobs) - set(OFF))
    if unknown:
        raise UserError(f"augmentation.{unknown[0]} is not an augmentation knob; the knobs are {', '.join(OFF)}")
    on = {k: v for k, v in knobs.items() if v not in (0, None, "none", False) and v != OFF[k]}
    if not on:
        return None
    kind = _kind(in_shape)
    unfit = [key for key in on if kind not in FITS[key]]
    if unfit:  # every one of them in one line, so that one retry suffices
        names = {"image": "images", "signal": "1-D signals", "vector": "vectors"}
        what = "; ".join(f"augmentation.{key}={on[key]} works on {' and '.join(names[k] for k in FITS[key])}"
                         for key in unfit)
        fix = " ".join(f"augmentation.{key}={'null' if OFF[key] is None else OFF[key]}" for key in unfit)
        shown = {"vector": "vectors", "signal": "signals"}.get(kind, f"{in_shape[0]}-channel images")
        raise UserError(f"{what}, but the data gives {shown} of shape {tuple(in_shape)}; set {fix} "
                        "or choose another augmentation")
    if on.get("policy", "none") not in POLICIES:
        raise UserError(f"augmentation.policy={on['policy']} is not valid; choose one of {', '.join(POLICIES)}")
    return Augment(in_shape, _policy(on.get("policy")), _batch_transforms(in_shape, on),
                   float(on.get("noise_std", 0.0)), noise_scale, _mix(on, num_classes))


def _batch_transforms(in_shape: Sequence[int], on: dict) -> Optional[nn.Module]:
    """kornia's per-sample transforms, in the usual order: geometry, colour, erasing."""
    import kornia.augmentation as K

    signal = len(in_shape) == 2
    size = (1, in_shape[-1]) if signal else tuple(in_shape[-2:])
    steps: list[nn.Module] = []
    if on.get("resized_crop"):
        steps.append(K.RandomResizedCrop(size, scale=tuple(on["resized_crop"])))
    if on.get("crop_padding"):
        pad = on["crop_padding"]
        steps.append(K.RandomCrop(size, padding=(pad, 0) if signal else pad))
    if on.get("hflip_p"):
        steps.append(K.RandomHorizontalFlip(p=on["hflip_p"]))
    if on.get("vflip_p"):
        steps.append(K.RandomVerticalFlip(p=on["vflip_p"]))
    if on.get("rotate_deg") or on.get("translate") or on.get("scale"):
        shift = float(on.get("translate", 0.0))
        steps.append(K.RandomAffine(degrees=float(on.get("rotate_deg", 0.0)),
                                    translate=(shift, 0.0 if signal else shift) if shift else None,
                                    scale=tuple(on["scale"]) if on.get("scale") else None, p=1.0))
    if on.get("color_jitter"):  # grey images: brightness and contrast only
        s = float(on["color_jitter"])
        steps.append(K.ColorJitter(brightness=s, contrast=s, saturation=s if in_shape[0] == 3 else 0.0, p=1.0))
    if on.get("erasing_p"):
        steps.append(K.RandomErasing(p=on["erasing_p"]))
    if not steps:
        return None
    return nn.Sequential(*steps)


def _policy(name: Optional[str]) -> Optional[nn.Module]:
    if name in (None, "none"):
        return None
    from torchvision.transforms import v2

    return {"randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide,
            "autoaugment": v2.AutoAugment}[name]()


def _mix(on: dict, num_classes: int) -> Optional[nn.Module]:
    from torchvision.transforms import v2

    mixes = []
    if on.get("mixup_alpha"):
        mixes.append(v2.MixUp(alpha=float(on["mixup_alpha"]), num_classes=num_classes))
    if on.get("cutmix_alpha"):
        mixes.append(v2.CutMix(alpha=float(on["cutmix_alpha"]), num_classes=num_classes))
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)  # both on: one of them per batch
