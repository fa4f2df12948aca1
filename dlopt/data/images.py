"""data=image_folder: a user's own images, root/<class>/* or root/train|val|test/<class>/*.

Every file is scanned once at construction (its header, plus PIL's cheap ``verify``), so an
unreadable file, an empty class folder or mixed sizes fail at once with the path to fix. Then one
of two paths serves the same splits, classes and normalization statistics:

- in memory, when the decoded images fit in ``IN_MEMORY_BYTES`` (or ``data.in_memory=true``):
  every image is decoded once into one float tensor and served by ``InMemoryDataModule``, which
  slices batches without per-sample work (the fastest for small images);
- on disk otherwise (or ``data.in_memory=false``): ``FolderDataModule`` decodes each image when
  its batch is drawn, in ``data.num_workers`` DataLoader workers, so memory does not grow with
  the number of images.

torchvision finds the files (``find_classes``, ``make_dataset``) and converts them
(``transforms.v2``); what is written here is the scan, the split bookkeeping and the one-pass
statistics of the on-disk training split.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from typing_extensions import Unpack

from dlopt.data import sources
from dlopt.data.datamodule import NORMALIZE, DataModule, select
from dlopt.data.knobs import Loader, data_path
from dlopt.errors import UserError

log = logging.getLogger(__name__)

IN_MEMORY_BYTES = 2 * 1024**3  # data.in_memory=auto holds the decoded float32 images in memory up to this size
SPLITS = ("train", "val", "test")
_PASS_BATCH = 256  # images per batch of the loading and statistics passes


class UnreadableImage(UserError):
    """An image that fails to decode. A DataLoader worker re-raises it in the main process with
    the worker's traceback as its message; keep only the original message's line."""

    def __init__(self, message: str):
        if "\n" in message:
            message = message.strip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


def _reason(err: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(err, UnidentifiedImageError):
        return "PIL cannot identify it as an image"
    return " ".join(f"{type(err).__name__}: {err}".split())


def _unreadable(path: str, err: Exception) -> str:
    return (f"data.root: cannot read the image {path} ({_reason(err)}); "
            f"fix or remove it, or set data.skip_corrupt=true to skip unreadable files")


def _open_image(path: str, mode: str):
    from PIL import Image

    with Image.open(path) as img:
        return img.convert(mode)


class ImageFiles(Dataset):
    """One item per file: opened, converted to L (channels=1) or RGB, resized to
    image_size x image_size (antialiased; None keeps its size) and scaled to float32 in [0, 1].

    Items are (image, label); with ``tolerant=True`` they are (image, index, error message) and
    an unreadable file gives zeros and its message instead of raising (for the in-memory load).
    """

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, shape: tuple[int, int, int],
                 resize: bool, tolerant: bool = False):
        from torchvision.transforms import v2

        self.paths, self.labels = list(paths), torch.as_tensor(labels, dtype=torch.long)
        self.shape, self.tolerant = tuple(shape), tolerant
        self.mode = "L" if shape[0] == 1 else "RGB"
        steps = [v2.PILToTensor()]
        if resize:
            steps.append(v2.Resize(list(shape[1:]), antialias=True))
        self.transform = v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            x = self.transform(_open_image(path, self.mode))
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
            if not self.tolerant:
                raise UnreadableImage(_unreadable(path, err)) from err
            return torch.zeros(self.shape), i, _unreadable(path, err)
        return (x, i, "") if self.tolerant else (x, self.labels[i])


class _Part:
    """The readable image files of one folder of class folders (root, or root/train, ...)."""

    def __init__(self, folder: str, skip_corrupt: bool, skipped: list[str]):
        from PIL import Image
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        try:
            self.classes, class_to_idx = find_classes(folder)
        except FileNotFoundError as e:
            detail = " ".join(str(e).split()).rstrip(".")
            raise UserError(
                f"data.root: {folder} has no usable class folders ({detail}); "
                f"expected {folder}/<class>/<image>, one sub-folder of images per class"
            ) from e
        # allow_empty: ImageFolder would raise FileNotFoundError naming the class only; name the folder
        samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
        found = {label for _, label in samples}
        empty = [os.path.join(folder, c) for i, c in enumerate(self.classes) if i not in found]
        looked_for = f"looked for {', '.join(IMG_EXTENSIONS)}"
        if len(empty) == len(self.classes):
            raise UserError(
                f"data.root: {folder} has no usable class folders: no image files in {_some(empty)} "
                f"({looked_for}); expected {folder}/<class>/<image>, one sub-folder of images per class"
            )
        if empty:
            raise UserError(
                f"data.root: no image files in the class folder{'s' if len(empty) > 1 else ''} {_some(empty)} "
                f"({looked_for}); add images or remove the folder"
            )
        self.paths, labels, self.sizes = [], [], []
        for path, label in samples:
            try:
                with Image.open(path) as img:
                    size = img.size
                    img.verify()  # checks a PNG's chunks without decoding; cheap
            except Exception as err:
                if not skip_corrupt:
                    raise UserError(_unreadable(path, err)) from err
                skipped.append(path)
                continue
            self.paths.append(path)
            labels.append(label)
            self.sizes.append(size)
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.check_classes(folder)

    def check_classes(self, folder: str) -> None:
        missing = sorted(set(range(len(self.classes))) - set(self.labels.tolist()))
        if missing:
            names = [os.path.join(folder, self.classes[i]) for i in missing]
            raise UserError(f"data.root: no readable image is left in {_some(names)} after skipping unreadable files "
                            f"(data.skip_corrupt=true); add readable images or remove the folder")

    def keep(self, keep: torch.Tensor) -> None:
        self.paths = [self.paths[i] for i in keep.tolist()]
        self.labels, self.sizes = self.labels[keep], [self.sizes[i] for i in keep.tolist()]


def _some(items: Sequence[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _image_shape(parts: dict[str, _Part], image_size: Optional[int], channels: int) -> tuple[int, int, int]:
    """(C, H, W) of every image after conversion; image_size=None needs one size throughout."""
    if image_size is not None:
        return channels, image_size, image_size
    first = None
    for part in parts.values():
        for path, size in zip(part.paths, part.sizes):
            if first is None:
                first = (path, size)
            elif size != first[1]:
                (w0, h0), (w1, h1) = first[1], size
                raise UserError(
                    f"data.image_size=null keeps every image's own size, but {first[0]} is {w0}x{h0} and "
                    f"{path} is {w1}x{h1} (width x height); set data.image_size=N to resize every image to N x N"
                )
    w, h = first[1]
    return channels, h, w


def _split_indices(parts: dict[str, _Part], root: str, val_fraction, test_fraction, split_seed: int):
    """{split: (part name, indices into that part)}, stratified by label as sources.stratified_split does."""
    if set(parts) == {"root"}:
        y = parts["root"].labels
        idx = sources.stratified_split(torch.arange(len(y)), y, val_fraction, test_fraction, split_seed,
                                       name="image_folder")
        return {s: ("root", idx[2 * k]) for k, s in enumerate(SPLITS)}
    classes = parts["train"].classes
    for s in ("val", "test"):
        if s in parts and parts[s].classes != classes:
            only_train = sorted(set(classes) - set(parts[s].classes))
            only_s = sorted(set(parts[s].classes) - set(classes))
            raise UserError(
                f"data.root={root}: the class folders of train/ and {s}/ differ "
                f"(only in train/: {', '.join(only_train) or '-'}; only in {s}/: {', '.join(only_s) or '-'})"
            )
    y = parts["train"].labels
    everything = torch.arange(len(y))
    out = {s: (s, torch.arange(len(parts[s].labels))) for s in ("val", "test") if s in parts}
    if "val" in parts and "test" in parts:
        out["train"] = ("train", everything)
    elif "val" in parts:
        fraction = sources._check_fraction("data.test_fraction", test_fraction)
        tr, _, te, _ = sources._carve(everything, y, fraction, split_seed, "image_folder", "data.test_fraction", fraction)
        out["train"], out["test"] = ("train", tr), ("train", te)
    else:
        tr, _, va, _, te, _ = sources.stratified_split(
            everything, y, val_fraction, 0 if "test" in parts else test_fraction, split_seed, name="image_folder")
        out["train"], out["val"] = ("train", tr), ("train", va)
        if "test" not in parts:
            out["test"] = ("train", te)
    return out


def _warn_skipped(skipped: list[str]) -> None:
    if skipped:
        log.warning("data.skip_corrupt=true: skipped %d unreadable image file%s: %s", len(skipped),
                    "" if len(skipped) == 1 else "s", _some(skipped))


def image_folder(
    *,
    root=None,
    image_size=32,
    channels=3,
    in_memory="auto",
    skip_corrupt=False,
    val_fraction=0.15,
    test_fraction=0.15,
    split_seed=0,
    **loader: Unpack[Loader],
) -> DataModule:
    """A user's images: root/<class>/*, or root/train/<class>/* with optional root/val/ and root/test/
    (a missing one is carved from train/). In memory or read from disk; see the module docstring."""
    if channels not in (1, 3) or isinstance(channels, bool):
        raise UserError(f"data.channels={channels} is not valid; choose 1 (grayscale) or 3 (RGB)")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise UserError(f"data.image_size={image_size} is not valid; it must be a positive integer, "
                        f"or null to keep the images' own size")
    if not (in_memory == "auto" or isinstance(in_memory, bool)):
        raise UserError(f"data.in_memory={in_memory} is not valid; choose auto (in memory when the decoded images "
                        f"need at most {IN_MEMORY_BYTES // 1024**3} GiB), true or false")
    if not isinstance(skip_corrupt, bool):
        raise UserError(f"data.skip_corrupt={skip_corrupt} is not valid; choose true or false")
    root = data_path("dlopt.data.images.image_folder", root)
    folders = {s: os.path.join(root, s) for s in SPLITS if os.path.isdir(os.path.join(root, s))}
    if folders and "train" not in folders:
        raise UserError(
            f"data.root={root} has {'/ and '.join(folders)}/ but no train/; expected {root}/train/<class>/<image>"
        )
    skipped: list[str] = []
    parts = {s: _Part(folder, skip_corrupt, skipped) for s, folder in (folders or {"root": root}).items()}
    shape = _image_shape(parts, image_size, channels)
    count = sum(len(p.paths) for p in parts.values())
    need = count * math.prod(shape) * 4
    memory = need <= IN_MEMORY_BYTES if in_memory == "auto" else in_memory
    workers = loader.get("num_workers", 0)
    log.info("data=image_folder: %d images of %s, %.1f MiB decoded: %s", count, "x".join(map(str, shape)),
             need / 1024**2, "held in memory" if memory else f"read from disk by {workers} DataLoader workers")
    decoded = {}
    if memory:
        for name, part in parts.items():
            decoded[name] = _decode(part, shape, image_size is not None, skip_corrupt, skipped, workers)
            part.check_classes(folders.get(name, root))
    _warn_skipped(skipped)
    split = _split_indices(parts, root, val_fraction, test_fraction, split_seed)
    classes = parts["train" if folders else "root"].classes
    if memory:
        tensors = [t for s in SPLITS for t in (decoded[split[s][0]][split[s][1]], parts[split[s][0]].labels[split[s][1]])]
        return sources._module(tensors, classes, "image_folder", loader, split_seed)
    files = {s: ([parts[p].paths[i] for i in idx.tolist()], parts[p].labels[idx]) for s, (p, idx) in split.items()}
    loader = dict(loader)
    wanted, fraction = loader.pop("classes", None), loader.pop("fraction", 1.0)
    return FolderDataModule(files, classes, shape, resize=image_size is not None, wanted=wanted, fraction=fraction,
                            split_seed=split_seed, **{"name": "image_folder", **loader})


def _decode(part: _Part, shape, resize: bool, skip_corrupt: bool, skipped: list[str], workers: int) -> torch.Tensor:
    """Every image of part as one float32 tensor (N, C, H, W); drops unreadable files from part when skipping."""
    data = ImageFiles(part.paths, part.labels, shape, resize, tolerant=True)
    x = torch.empty(len(data), *shape)
    bad: list[int] = []
    for images, index, errors in DataLoader(data, batch_size=_PASS_BATCH, num_workers=workers):
        x[index] = images
        for i, message in zip(index.tolist(), errors):
            if message:
                if not skip_corrupt:
                    raise UserError(message)
                bad.append(i)
    if bad:
        skipped.extend(part.paths[i] for i in bad)
        keep = torch.tensor(sorted(set(range(len(data))) - set(bad)), dtype=torch.long)
        part.keep(keep)
        x = x[keep]
    return x


class FolderDataModule(DataModule):
    """Image files read from disk per batch by DataLoader workers.

    ``files`` maps train/val/test to (paths, labels); ``wanted`` (data.classes) and ``fraction``
    (data.fraction) are applied here with ``select``. ``shift`` and ``scale`` come from one pass over the training
    images, with the meaning and shapes of ``input_stats``.
    """

    def __init__(
        self,
        files: dict[str, tuple[list[str], torch.Tensor]],
        classes: Sequence[str],
        shape: tuple[int, int, int],
        *,
        resize: bool = True,
        wanted=None,
        fraction: float = 1.0,
        split_seed: int = 0,
        batch_size: int = 64,
        normalize: str = "standardize",
        num_workers: int = 0,
        seed: int = 0,
        name: str = "image_folder",
        class_weights: str = "none",
    ):
        if normalize not in NORMALIZE:
            raise UserError(f"data.normalize={normalize} is not valid; choose one of {', '.join(NORMALIZE)}")
        index, kept, labels = select({s: torch.as_tensor(y) for s, (_, y) in files.items()}, classes, wanted,
                                     fraction, split_seed, name)
        self.data = {s: ImageFiles([files[s][0][i] for i in index[s].tolist()], labels[s], shape, resize)
                     for s in SPLITS}
        for split, data in self.data.items():
            if len(data) == 0:
                raise UserError(f"data={name}: the {split} split has 0 inputs and 0 labels")
        super().__init__(classes=kept, train_labels=labels["train"], batch_size=batch_size,
                         num_workers=num_workers, seed=seed, name=name, class_weights=class_weights)
        self.shape = tuple(shape)
        self.shift, self.scale = self._train_stats(normalize)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.shape

    def train_samples(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.data["train"]
        items = [data[i] for i in range(min(n, len(data)))]
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    def _loader(self, split: str, shuffle: bool = False, persistent: bool = True, batch_size: int = 0) -> DataLoader:
        data = self.data[split]
        if split == "train" and shuffle and self.train_index is not None:  # the training epochs' resample
            data = Subset(data, self.train_index.tolist())
        return DataLoader(
            data,
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=persistent and self.num_workers > 0,
        )

    @property
    def train_count(self) -> int:
        return len(self.data["train"])

    def split_batches(self, split: str) -> DataLoader:
        return self._loader(split, persistent=False)

    def train_dataloader(self) -> DataLoader:  # (full_batch: one batch; data.min_batches is for in-memory data)
        return self._loader("train", shuffle=True, batch_size=self.train_batching(self.train_count)[0])

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def _train_stats(self, normalize: str) -> tuple[torch.Tensor, torch.Tensor]:
        """input_stats of the training images in one pass: per channel mean and (unbiased) std
        merged batch by batch (Chan et al.), or min and max."""
        channels = self.shape[0]
        if normalize == "none":
            return torch.zeros(channels, 1, 1), torch.ones(channels, 1, 1)
        n, mean, m2 = 0, torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
        low = torch.full((channels,), math.inf, dtype=torch.float64)
        high = torch.full((channels,), -math.inf, dtype=torch.float64)
        for x, _ in self._loader("train", persistent=False, batch_size=_PASS_BATCH):
            x = x.double().transpose(0, 1).reshape(channels, -1)
            k, batch_mean = x.shape[1], x.mean(dim=1)
            delta, total = batch_mean - mean, n + k
            m2 += ((x - batch_mean[:, None]) ** 2).sum(dim=1) + delta**2 * n * k / total
            mean += delta * k / total
            n = total
            low, high = torch.minimum(low, x.amin(dim=1)), torch.maximum(high, x.amax(dim=1))
        if normalize == "standardize":
            shift, scale = mean, (m2 / max(n - 1, 1)).sqrt()
        else:
            shift, scale = low, high - low
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return shift.reshape(channels, 1, 1).float(), scale.reshape(channels, 1, 1).float()
