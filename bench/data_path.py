"""dlopt's data path with augmentation vs a DataLoader over a TensorDataset with per-sample transforms.

Both runs train the same config with the same Lightning loop; only the training data path
differs. dlopt's path slices whole tensors per batch and augments the batch on the device, each
sample with its own random parameters (dlopt/data/augment.py). The reference is what a
practitioner writes by hand: a torch DataLoader over a TensorDataset whose __getitem__ applies
the equivalent torchvision.transforms.v2 pipeline to one sample, collated into batches, with
num_workers=0 and with 2 persistent workers (this machine has 2 cores). The first epoch is a
warm-up and is dropped; each run gives its median epoch time, and the ratio printed is the median
over repeats of the reference's epoch time / dlopt's (above 1: dlopt is faster). Repeat r trains
with seed r, and the median test accuracy of each path is printed, to show that they learn alike.

An epoch's time includes the network's steps, which are the same on both paths; "data only"
times serving one epoch of augmented training batches without the network, which is what the
paths differ in.

    python bench/data_path.py [--epochs 6] [--repeats 3] [--preset standard]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import EpochTimer, config, median
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from dlopt.data.datamodule import InMemoryDataModule
from dlopt.training import run

CASES = {  # name -> overrides: digits (8x8 grey) and a CIFAR-sized synthetic set (3x32x32)
    "digits 1x8x8": ("data=digits",),
    # data.min_batches=1: one pass per epoch, as the reference DataLoader serves (its 2,099 training samples make 17
    # batches of 128, so the default min_batches=20 would pass over them twice on dlopt's path only)
    "cifar-sized 3x32x32": ("data=synthetic", "data.shape=[3,32,32]", "data.num_samples=3000", "data.noise=2.0",
                            "data.batch_size=128", "data.min_batches=1"),
}


def per_sample_pipeline(aug, size) -> v2.Compose:
    """The torchvision v2 transforms that do for one sample what the augmentation config asks."""
    steps = []
    if aug.crop_padding:
        steps.append(v2.RandomCrop(size, padding=aug.crop_padding))
    if aug.hflip_p:
        steps.append(v2.RandomHorizontalFlip(aug.hflip_p))
    if aug.rotate_deg or aug.scale or aug.translate:
        steps.append(v2.RandomAffine(aug.rotate_deg, translate=(aug.translate,) * 2 if aug.translate else None,
                                     scale=tuple(aug.scale) if aug.scale else None,
                                     interpolation=v2.InterpolationMode.BILINEAR))  # as kornia's, in dlopt
    if aug.erasing_p:
        steps.append(v2.RandomErasing(aug.erasing_p))
    if aug.noise_std:
        steps.append(v2.GaussianNoise(sigma=aug.noise_std, clip=False))
    return v2.Compose(steps)


class Transformed(Dataset):
    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(self.x[i]), self.y[i]


class LoaderReference(InMemoryDataModule):
    """The same splits, served for training by a DataLoader with per-sample transforms."""

    def __init__(self, data: InMemoryDataModule, pipeline: v2.Compose, workers: int, normalize: str):
        pairs = [t for split in ("train", "val", "test") for t in data.splits[split]]
        super().__init__(*pairs, classes=data.classes, batch_size=data.batch_size, normalize=normalize, seed=data.seed)
        self.pipeline, self.workers = pipeline, workers

    def on_after_batch_transfer(self, batch, dataloader_idx):
        return batch  # augmented per sample in the DataLoader already

    def train_dataloader(self):
        x, y = self.splits["train"]
        return DataLoader(Transformed(x, y, self.pipeline), batch_size=self.batch_size, shuffle=True,
                          num_workers=self.workers, persistent_workers=self.workers > 0,
                          generator=torch.Generator().manual_seed(self.seed))


def served_by(data: InMemoryDataModule, workers: int | None, cfg) -> InMemoryDataModule:
    """dlopt's own DataModule (workers=None), or the reference over the same splits."""
    if workers is None:
        return data
    return LoaderReference(data, per_sample_pipeline(cfg.augmentation, data.in_shape[-2:]), workers,
                           cfg.data.normalize)


def epochs_and_accuracy(cfg, workers: int | None) -> tuple[float, float]:
    """(median epoch time, test accuracy) of one run; workers=None is dlopt's own path."""
    data = served_by(run.build(cfg)[0], workers, cfg)  # the configured DataModule, as `dlopt train` builds it
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        run.train(cfg, Path(tmp), callbacks=[timer], data=data)
        accuracy = json.loads((Path(tmp) / "metrics.json").read_text())["test/acc"]
    return median(timer.times[1:]), accuracy


def data_only(data, workers: int | None, cfg) -> float:
    """Seconds to serve one epoch of augmented training batches (median of 3, after a warm-up)."""
    data = served_by(data, workers, cfg)
    loader = data.train_dataloader()
    times = []
    for _ in range(4):
        start = time.perf_counter()
        for x, y in loader:
            if workers is None:
                data.augment(x, y)
        times.append(time.perf_counter() - start)
    return median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default="standard", help="augmentation option (standard, strong, light)")
    args = parser.parse_args()
    for case, overrides in CASES.items():
        cfg = config(*overrides, f"augmentation={args.preset}", f"trainer.max_epochs={args.epochs}",
                     "callbacks.early_stopping=null", "trainer.enable_progress_bar=false", "callbacks.progress_bar=null")
        paths = (("dlopt", None), ("loader w=0", 0), ("loader w=2", 2))
        results = {name: [] for name, _ in paths}
        for repeat in range(args.repeats):  # interleaved, so drifts in machine load hit all alike
            cfg.seed = repeat
            for name, workers in paths:
                results[name].append(epochs_and_accuracy(cfg, workers))
        data = run.build(cfg)[0]
        served = {name: data_only(data, workers, cfg) for name, workers in paths}
        print(f"{case}, augmentation={args.preset}, {args.epochs} epochs, {args.repeats} repeats")
        ours = [t for t, _ in results["dlopt"]]
        for name, rows in results.items():
            times, accs = [t for t, _ in rows], [a for _, a in rows]
            ratio = median(t / o for t, o in zip(times, ours))
            print(f"  {name:11s}: {median(times) * 1e3:8.1f} ms/epoch  "
                  f"test/acc {median(accs):.3f} ({min(accs):.3f}-{max(accs):.3f})  "
                  f"epoch time / dlopt's {ratio:.2f}   data only {served[name] * 1e3:7.1f} ms/epoch, "
                  f"/ dlopt's {served[name] / served['dlopt']:.1f}")


if __name__ == "__main__":
    main()
