"""Knobs of the data and augmentation groups that are judged torch-free, so that dlopt.checks tells a mistake in them
before torch is imported; the code that builds the data and the transforms uses the same functions and tables.

- OFF: each augmentation knob's value that switches its transform off (dlopt.data.augment builds the transforms;
  data.label_changing is checked against it).
- `data_path(cfg.data)`: the file or folder a data option reads (data=csv's data.path, data=image_folder's
  data.root) is given and exists.
- Loader: the knobs every data source passes on to its DataModule (checks.check_arguments reads them).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from typing_extensions import TypedDict  # typing's own TypedDict does not take Unpack before Python 3.11

from dlopt.errors import UserError

OFF = {"hflip_p": 0, "vflip_p": 0, "rotate_deg": 0, "translate": 0, "scale": None, "crop_padding": 0,
       "resized_crop": None, "color_jitter": 0, "erasing_p": 0, "policy": "none", "cutmix_alpha": 0,
       "noise_std": 0, "mixup_alpha": 0}


# a data option's _target_ -> the key naming what it reads, whether that is a file or a folder, and the line for a
# config that does not give it
PATHS = {
    "dlopt.data.table.csv": ("path", "file", "data=csv needs data.path=FILE and data.target=COLUMN (a CSV file with a "
                             "header row, and the column that holds the class labels)"),
    "dlopt.data.images.image_folder": ("root", "folder", "data=image_folder needs data.root=PATH (a folder with one "
                                       "sub-folder of images per class)"),
}


def data_path(target: str, value: Any) -> str | None:
    """The absolute path of the file or folder the data option `target` reads from `value` (its key's value), None
    for an option that reads none of the user's; UserError (one line naming the key) when it is not given or is not
    there. A relative path starts at the folder dlopt runs in."""
    if target not in PATHS:
        return None
    key, kind, needs = PATHS[target]
    if value is None:
        raise UserError(needs)
    shown = str(value)
    path = os.path.abspath(os.path.expanduser(shown))
    if kind == "folder" and not os.path.isdir(path):
        raise UserError(f"data.{key}={path} does not exist or is not a folder")
    if kind == "file" and os.path.isdir(path):
        raise UserError(f"data.{key}={shown}: {path} is a folder; expected a CSV file")
    if kind == "file" and not os.path.isfile(path):
        raise UserError(f"data.{key}={shown}: {path} does not exist; expected a CSV file (a relative path starts at "
                        "the folder dlopt runs in)")
    return path


class Loader(TypedDict, total=False):
    """The data group's knobs that every data source passes on (`**loader: Unpack[Loader]`) to the DataModule it
    builds, beside its own arguments; dlopt.checks.check_arguments reads them from that annotation."""

    classes: Optional[Sequence[Any]]  # data.classes: a subset of the classes, relabelled 0..k-1
    fraction: float  # data.fraction: the stratified fraction of the training split kept
    batch_size: int
    normalize: str
    num_workers: int
    seed: int
    class_weights: str
    min_batches: int
