"""Issue 16, items 10 and 15: augmentations that change a data option's classes (data.label_changing) are skipped
when a preset asks for them and refused when the user sets them; augmentations.png draws a table's samples as bars
labelled with the feature names. Real configs, real DataModules, the real `dlopt train` in a temporary folder."""

import csv
import re

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dlopt.apps import config_dir
from dlopt.checks import check
from dlopt.data.augment import OFF, build_augment, keeping_labels
from dlopt.errors import UserError

DATA = ("digits", "mnist1d", "synthetic", "image_folder", "csv", "mnist", "fashion_mnist", "cifar10")
# what each data option declares, and why (conf/data/*.yaml)
DECLARED = {"digits": ["hflip_p", "vflip_p"], "mnist": ["hflip_p", "vflip_p"],  # a mirrored 2, an upside-down 6
            "fashion_mnist": ["vflip_p"], "cifar10": ["vflip_p"],  # mirror-symmetric classes, never upside down
            "mnist1d": ["hflip_p"],  # a time-reversed signal is another digit's pattern
            "synthetic": ["hflip_p", "vflip_p"],  # a flipped prototype is no class's prototype
            "csv": [], "image_folder": []}  # vectors take no flips; a folder of images declares nothing by default


def composed(*overrides):
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose("train", overrides=list(overrides))


def knobs_of(cfg):
    return OmegaConf.to_container(cfg.augmentation, resolve=True)


def flips(augment):
    return [type(step).__name__ for step in (augment.batch or []) if "Flip" in type(step).__name__]


# the declaration


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


# end to end: the real command


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


def test_a_users_flip_on_digits_exits_2_in_one_line_and_leaves_no_run(cli, tmp_path):
    result = cli.run("train", *cli.TINY, "augmentation.hflip_p=0.5", "data=digits", cwd=tmp_path)
    assert result.returncode == 2, result.describe()
    assert "Traceback" not in result.output, result.describe()
    lines = [line for line in result.stderr.splitlines() if "augmentation.hflip_p" in line]
    assert len(lines) == 1, result.describe()
    assert re.search(r"augmentation\.hflip_p=0\.5 refused: data=digits lists it in data\.label_changing="
                     r"\[hflip_p,vflip_p\]", lines[0]), lines[0]
    assert "set augmentation.hflip_p=0, or data.label_changing=[]" in lines[0]
    assert cli.run_dirs(tmp_path) == []


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


def test_a_csv_run_draws_its_preview(cli, tmp_path):
    path = table(tmp_path / "t.csv")
    run = cli.train("data=csv", f"data.path={path}", "data.target=label", "data.categorical=[colour]", "model=mlp",
                    "augmentation=mixup", "augmentation.noise_std=0.1", cwd=tmp_path)
    assert (run / "augmentations.png").stat().st_size > 5000
