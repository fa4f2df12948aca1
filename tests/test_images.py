"""Tests of dlopt.data.images (data=image_folder) on real PNG/JPEG files written in tmp_path: no mocks."""

import io
import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dlopt.data import images
from dlopt.data.datamodule import InMemoryDataModule
from dlopt.data.images import FolderDataModule, image_folder
from dlopt.errors import UserError

PATHS = [True, False]  # data.in_memory: the in-memory path, then the on-disk path
PATH_IDS = ["in_memory", "on_disk"]


def make_image_tree(folder, classes=("cat", "dog", "owl"), per_class=6, size=(10, 12)):
    """per_class small PNGs (width x height = size, alternating RGB and greyscale) in folder/<class>/."""
    rng = np.random.default_rng(0)
    w, h = size
    for c in classes:
        (folder / c).mkdir(parents=True)
        for i in range(per_class):
            if i % 2:
                img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L")
            else:
                img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")
            img.save(folder / c / f"{i}.png")
    return folder


def split_x(dm, split):
    """All inputs of a split as one tensor, from either kind of DataModule (in its order)."""
    if isinstance(dm, InMemoryDataModule):
        return dm.splits[split][0]
    return torch.stack([x for x, _ in (dm.data[split][i] for i in range(len(dm.data[split])))])


def split_y(dm, split):
    return dm.splits[split][1] if isinstance(dm, InMemoryDataModule) else dm.data[split].labels


def sizes(dm):
    return {split: len(split_y(dm, split)) for split in ("train", "val", "test")}


def labels(dm, split):
    return set(split_y(dm, split).tolist())


def load(root, in_memory=True, **kwargs):
    return image_folder(root=root, in_memory=in_memory, **{"num_workers": 0, **kwargs})


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


# layouts (moved from test_data_sources.py, now on both paths)


@pytest.mark.parametrize("in_memory", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_single_tree(tmp_path, channels, in_memory):
    make_image_tree(tmp_path)
    dm = load(str(tmp_path), in_memory, image_size=16, channels=channels)
    assert isinstance(dm, InMemoryDataModule if in_memory else FolderDataModule)
    assert dm.classes == ["cat", "dog", "owl"]
    assert dm.in_shape == (channels, 16, 16)
    assert sum(sizes(dm).values()) == 18
    for split in ("train", "val", "test"):
        x = split_x(dm, split)
        assert x.shape[1:] == (channels, 16, 16)
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert labels(dm, split) == {0, 1, 2}


@pytest.mark.parametrize("in_memory", PATHS, ids=PATH_IDS)
def test_train_val_test_folders(tmp_path, in_memory):
    make_image_tree(tmp_path / "train")
    make_image_tree(tmp_path / "val", per_class=2)
    make_image_tree(tmp_path / "test", per_class=3)
    dm = load(tmp_path, in_memory, image_size=8, channels=3)
    assert dm.classes == ["cat", "dog", "owl"]
    assert sizes(dm) == {"train": 18, "val": 6, "test": 9}
    assert dm.in_shape == (3, 8, 8)


@pytest.mark.parametrize("in_memory", PATHS, ids=PATH_IDS)
def test_carves_test_when_only_val_is_given(tmp_path, in_memory):
    make_image_tree(tmp_path / "train")
    make_image_tree(tmp_path / "val", per_class=2)
    dm = load(tmp_path, in_memory, image_size=8, channels=1, test_fraction=0.2)
    assert sizes(dm)["val"] == 6
    assert sizes(dm)["train"] + sizes(dm)["test"] == 18
    assert labels(dm, "test") == {0, 1, 2}


def test_carves_val_when_only_test_is_given(tmp_path):
    make_image_tree(tmp_path / "train", per_class=10)
    make_image_tree(tmp_path / "test", per_class=2)
    dm = load(tmp_path, image_size=8)
    assert sizes(dm)["test"] == 6
    assert sizes(dm)["train"] + sizes(dm)["val"] == 30
    assert labels(dm, "val") == {0, 1, 2}


def test_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    make_image_tree(tmp_path / "pics")
    assert load("~/pics", image_size=4).in_shape == (3, 4, 4)


def test_errors(tmp_path):
    with pytest.raises(UserError, match=r"data=image_folder needs data.root=PATH"):
        image_folder()
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match=str(missing)):
        image_folder(root=str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=str(empty)) as err:
        image_folder(root=str(empty))
    assert "<class>" in one_line(err) and "has no usable class folders" in str(err.value)
    (empty / "cat").mkdir()  # the only class folder, without images
    with pytest.raises(UserError, match="has no usable class folders") as err:
        image_folder(root=str(empty))
    assert str(empty / "cat") in one_line(err) and "<class>/<image>" in str(err.value)
    with pytest.raises(UserError, match="data.channels"):
        image_folder(root=str(empty), channels=2)
    (tmp_path / "only_val" / "val").mkdir(parents=True)
    with pytest.raises(UserError, match="but no train/"):
        image_folder(root=str(tmp_path / "only_val"))


def test_class_mismatch_names_the_classes(tmp_path):
    make_image_tree(tmp_path / "train")
    make_image_tree(tmp_path / "val", classes=("cat", "dog", "emu"), per_class=2)
    with pytest.raises(UserError, match=r"only in train/: owl; only in val/: emu"):
        load(tmp_path)


def test_too_few_images_for_the_split(tmp_path):
    make_image_tree(tmp_path, per_class=2)
    with pytest.raises(UserError, match="data.test_fraction") as err:
        load(tmp_path)
    one_line(err)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"in_memory": "sometimes"}, "data.in_memory=sometimes is not valid; choose auto"),
        ({"skip_corrupt": "yes"}, "data.skip_corrupt=yes is not valid; choose true or false"),
        ({"image_size": 0}, "data.image_size=0 is not valid"),
        ({"normalize": "zscore", "in_memory": False}, "data.normalize=zscore is not valid"),
    ],
)
def test_bad_values(tmp_path, kwargs, needle):
    make_image_tree(tmp_path)
    with pytest.raises(UserError) as err:
        image_folder(root=tmp_path, **kwargs)
    assert needle in one_line(err)


# the two paths


@pytest.mark.parametrize("normalize", ["standardize", "minmax"])
def test_both_paths_give_the_same_data(tmp_path, normalize):
    make_image_tree(tmp_path, per_class=10)
    memory = load(tmp_path, True, image_size=8, normalize=normalize)
    disk = load(tmp_path, False, image_size=8, normalize=normalize, num_workers=2, batch_size=5)
    assert (memory.classes, memory.in_shape) == (disk.classes, disk.in_shape)
    assert sizes(memory) == sizes(disk)
    for split in ("train", "val", "test"):  # the same files in the same order
        assert torch.equal(split_y(memory, split), split_y(disk, split))
        assert torch.allclose(split_x(memory, split), split_x(disk, split))
    assert disk.shift.shape == memory.shift.shape == (3, 1, 1)
    assert torch.allclose(memory.shift, disk.shift, atol=1e-5)
    assert torch.allclose(memory.scale, disk.scale, atol=1e-5)
    x, y = next(iter(disk.train_dataloader()))
    assert x.shape == (5, 3, 8, 8) and x.dtype == torch.float32
    assert y.shape == (5,) and y.dtype == torch.int64
    xs, ys = disk.train_samples(4)
    assert torch.equal(xs, split_x(disk, "train")[:4]) and torch.equal(ys, split_y(disk, "train")[:4])


def test_disk_path_shuffles_the_training_split_by_seed(tmp_path):
    make_image_tree(tmp_path, per_class=10)

    def order(seed):
        dm = load(tmp_path, False, image_size=4, seed=seed, batch_size=100, normalize="none")
        return next(iter(dm.train_dataloader()))[1], next(iter(dm.val_dataloader()))[1]

    (train0, val0), (train0b, val0b), (train1, val1) = order(0), order(0), order(1)
    assert torch.equal(train0, train0b) and not torch.equal(train0, train1)
    assert torch.equal(val0, val1)  # validation keeps the file order


def test_normalize_none_on_disk(tmp_path):
    make_image_tree(tmp_path)
    dm = load(tmp_path, False, image_size=4, channels=1, normalize="none")
    assert torch.equal(dm.shift, torch.zeros(1, 1, 1)) and torch.equal(dm.scale, torch.ones(1, 1, 1))


def test_auto_chooses_memory_below_the_limit_and_disk_above(tmp_path, monkeypatch, caplog):
    make_image_tree(tmp_path)
    caplog.set_level(logging.INFO, logger="dlopt.data.images")
    assert isinstance(image_folder(root=tmp_path, in_memory="auto", num_workers=0), InMemoryDataModule)
    assert "18 images of 3x32x32" in caplog.text and "held in memory" in caplog.text
    monkeypatch.setattr(images, "IN_MEMORY_BYTES", 18 * 3 * 32 * 32 * 4 - 1)
    assert isinstance(image_folder(root=tmp_path, in_memory="auto", num_workers=0), FolderDataModule)
    assert "read from disk" in caplog.text


def test_native_size(tmp_path):
    make_image_tree(tmp_path, size=(10, 12))  # 10 wide, 12 high
    for in_memory in PATHS:
        assert load(tmp_path, in_memory, image_size=None).in_shape == (3, 12, 10)


def test_mixed_sizes_need_an_image_size(tmp_path):
    make_image_tree(tmp_path, classes=("cat", "dog"), size=(10, 12))
    Image.new("RGB", (20, 16)).save(tmp_path / "dog" / "big.png")
    with pytest.raises(UserError) as err:
        load(tmp_path, image_size=None)
    message = one_line(err)
    assert str(tmp_path / "cat" / "0.png") in message and "10x12" in message
    assert str(tmp_path / "dog" / "big.png") in message and "20x16" in message
    assert "data.image_size=N" in message
    assert load(tmp_path, image_size=8).in_shape == (3, 8, 8)  # resizing makes them fit


# bad files


def test_empty_class_folder_is_named(tmp_path):
    make_image_tree(tmp_path)
    (tmp_path / "emu").mkdir()
    (tmp_path / "emu" / "notes.txt").write_text("no images here\n")
    with pytest.raises(UserError) as err:
        load(tmp_path)
    message = one_line(err)
    assert str(tmp_path / "emu") in message and ".png" in message and ".jpg" in message


@pytest.mark.parametrize("in_memory", PATHS, ids=PATH_IDS)
def test_corrupt_file_is_named_or_skipped(tmp_path, caplog, in_memory):
    make_image_tree(tmp_path)
    bad = tmp_path / "dog" / "x.png"
    bad.write_bytes(b"this is not a PNG" * 8)
    with pytest.raises(UserError) as err:
        load(tmp_path, in_memory)
    message = one_line(err)
    assert str(bad) in message and "data.skip_corrupt=true" in message
    caplog.set_level(logging.WARNING, logger="dlopt.data.images")
    dm = load(tmp_path, in_memory, skip_corrupt=True)
    assert sum(sizes(dm).values()) == 18
    assert "skipped 1 unreadable image file" in caplog.text and str(bad) in caplog.text


def truncated_jpeg(path):
    """A JPEG whose header is fine (it passes the scan) but whose data stops halfway."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # cut after the header
    Image.fromarray(pixels).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def test_file_that_fails_to_decode_in_memory(tmp_path, caplog):
    make_image_tree(tmp_path)
    bad = tmp_path / "owl" / "cut.jpg"
    truncated_jpeg(bad)
    with pytest.raises(UserError) as err:
        load(tmp_path, True, num_workers=2)
    assert str(bad) in one_line(err) and "image file is truncated" in str(err.value)
    caplog.set_level(logging.WARNING, logger="dlopt.data.images")
    dm = load(tmp_path, True, skip_corrupt=True)
    assert sum(sizes(dm).values()) == 18
    assert "skipped 1 unreadable image file" in caplog.text and str(bad) in caplog.text


def test_file_that_fails_to_decode_on_disk_names_it_from_a_worker(tmp_path):
    make_image_tree(tmp_path / "train")
    make_image_tree(tmp_path / "val", per_class=2)
    make_image_tree(tmp_path / "test", per_class=2)
    bad = tmp_path / "val" / "owl" / "cut.jpg"
    truncated_jpeg(bad)
    dm = load(tmp_path, False, num_workers=2)  # statistics come from train/ only
    with pytest.raises(UserError) as err:
        list(dm.val_dataloader())
    assert str(bad) in one_line(err) and "image file is truncated" in str(err.value)
    assert "data.skip_corrupt=true" in str(err.value)


def test_a_class_with_only_unreadable_files(tmp_path):
    make_image_tree(tmp_path, classes=("cat", "dog"))
    (tmp_path / "emu").mkdir()
    (tmp_path / "emu" / "a.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="no readable image is left in .*emu") as err:
        load(tmp_path, skip_corrupt=True)
    one_line(err)


# data.classes / data.fraction / data.class_weights


def test_classes_subset_on_disk(tmp_path):
    make_image_tree(tmp_path, classes=("ant", "bee", "cat", "dog"), per_class=10)
    memory = load(tmp_path, True, image_size=4, classes=["bee", "dog"], fraction=0.5, class_weights="balanced")
    disk = load(tmp_path, False, image_size=4, classes=["bee", "dog"], fraction=0.5, class_weights="balanced")
    assert disk.classes == memory.classes == ["bee", "dog"]
    assert sizes(disk) == sizes(memory)
    for split in ("train", "val", "test"):
        assert labels(disk, split) == {0, 1}
        assert torch.equal(split_y(disk, split), split_y(memory, split))
        assert all(f"/{('bee', 'dog')[int(y)]}/" in p for p, y in zip(disk.data[split].paths, split_y(disk, split)))
    assert torch.allclose(disk.class_weights, memory.class_weights)
    assert torch.allclose(disk.shift, memory.shift, atol=1e-5)


def test_unknown_class_on_disk(tmp_path):
    make_image_tree(tmp_path)
    with pytest.raises(UserError) as err:
        load(tmp_path, False, classes=["cat", "yak"])
    assert "data.classes: yak is not a class of data=image_folder; its classes are cat, dog, owl" in one_line(err)


# end to end: the installed `dlopt` command


@pytest.mark.slow
def test_trains_from_disk_and_skips_a_corrupt_file(cli, tmp_path):
    root = cli.image_tree(tmp_path / "pics", classes=("ant", "bee", "cat"), per_class=8)
    (root / "bee" / "x.png").write_bytes(b"\x89PNG but not really")
    run_dir = cli.train("data=image_folder", f"data.root={root}", "data.in_memory=false", "data.num_workers=2",
                        "data.skip_corrupt=true", "model=cnn", cwd=tmp_path)
    metrics = cli.metrics(run_dir)
    cli.assert_finite(metrics)
    assert metrics["val/loss"] == pytest.approx(math.log(3), abs=0.5)  # three classes, barely trained
    log = next(run_dir.glob("*.log")).read_text()
    assert "read from disk by 2 DataLoader workers" in log
    assert f"skipped 1 unreadable image file: {root / 'bee' / 'x.png'}" in log
