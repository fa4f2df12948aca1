"""End to end: every bad input gets one clear message and leaves nothing behind.

Each test runs the installed `dlopt` command with one mistake and checks that it exits != 0,
prints a line naming the key or path (and what would be valid), shows no Python traceback, and
leaves no metrics.json, checkpoint or run folder under outputs/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ACTIVATIONS = ("relu", "leaky_relu", "prelu", "sigmoid", "tanh", "gelu", "silu", "elu")
# diverges within a few steps: a NaN training loss at epoch 0, step 2 (seed 0)
DIVERGE = ("model=mlp", "model.norm=none", "optimizer=sgd", "optimizer.lr=1e6")


def leftovers(cwd: Path) -> list[Path]:
    """Files under outputs/ (empty DATE folders do not count)."""
    return sorted(p for p in (cwd / "outputs").rglob("*") if not p.is_dir())


def run_folders(cwd: Path) -> list[Path]:
    return sorted(p.parent for p in (cwd / "outputs").rglob(".hydra"))


def assert_fails_clearly(result, cwd: Path, *needles: str, leave_run_folder: bool = False) -> str:
    """Exit != 0, no traceback, exactly one line holds every needle; nothing (or no results) left.
    Returns that line."""
    assert result.returncode != 0, result.describe()
    assert "Traceback" not in result.output, result.describe()
    lines = [line for line in result.output.splitlines() if all(n in line for n in needles)]
    assert len(lines) == 1, f"expected one line with {needles}:\n{result.describe()}"
    assert not list((cwd / "outputs").rglob("metrics.json")), result.describe()
    assert not list((cwd / "outputs").rglob("*.ckpt")), result.describe()
    if not leave_run_folder:
        assert run_folders(cwd) == [], f"run folder left behind: {run_folders(cwd)}"
        assert leftovers(cwd) == [], f"files left behind: {leftovers(cwd)}"
    return lines[0]


# --- mistakes Hydra catches while composing: nothing is created ---------------------------------


def test_unknown_model_option_lists_valid_ones(in_process, tmp_path):
    result = in_process.run("train", "model=resnot", *in_process.TINY, cwd=tmp_path)
    line = assert_fails_clearly(result, tmp_path, "model=resnot is not an option of model")
    assert line.endswith("(did you mean resnet?); choose one of cnn, linear, mlp, resnet, vit"), result.describe()
    assert result.returncode == 2 and not (tmp_path / "outputs").exists()


def test_unknown_augmentation_option_lists_valid_ones(in_process, tmp_path):
    result = in_process.run("train", "augmentation=stronger", *in_process.TINY, cwd=tmp_path)
    line = assert_fails_clearly(result, tmp_path, "augmentation=stronger is not an option of augmentation")
    assert "(did you mean strong?)" in line and "choose one of cutmix, light, mixup, none, randaugment" in line
    assert result.returncode == 2 and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "override, needles",
    [
        ("model.dept=3", ("model.dept is not a key of model (did you mean depth?)", "width", "+model.dept=3")),
        ("augmentation.flip_p=0.5", ("augmentation.flip_p is not a key of augmentation", "hflip_p, vflip_p")),
        ("trainer.max_epoch=3", ("trainer.max_epoch is not a key of trainer (did you mean max_epochs?)",)),
    ],
)
def test_misspelt_key_is_named(in_process, tmp_path, override, needles):
    result = in_process.run("train", override, *in_process.TINY, cwd=tmp_path)
    line = assert_fails_clearly(result, tmp_path, *needles)
    assert "_target_" not in line, line
    assert result.returncode == 2 and not (tmp_path / "outputs").exists()


def test_hydra_full_error_keeps_hydras_report(cli, tmp_path):
    result = cli.run("train", "model.dept=3", cwd=tmp_path, timeout=60, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.output and "Key 'dept' is not in struct" in result.output


# --- value checks right after composition, before torch is imported -------------------------------


@pytest.mark.parametrize(
    "override, valid",
    [
        ("optimizer.lr=abc", "a number > 0"),
        ("optimizer.lr=-1", "a number > 0"),
        ("regularization.dropout=1.5", "[0, 1)"),
        ("data.batch_size=0", "an integer >= 1"),
    ],
)
def test_bad_value_names_key_value_and_valid_range(cli, tmp_path, override, valid):
    result, imported = cli.imported("train", *cli.TINY, override, cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, f"{override} is not valid", valid)
    assert "torch" not in imported and "lightning" not in imported, "the check should run before torch is imported"


def test_unknown_activation_lists_valid_names(in_process, tmp_path):
    result = in_process.run("train", *in_process.TINY, "model.activation=swishy", cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, "model.activation=swishy", *ACTIVATIONS)


# --- data=image_folder -----------------------------------------------------------------------------


def make_root(tmp_path: Path, kind: str) -> str | None:
    if kind == "no root":
        return None
    root = tmp_path / "pics"
    if kind == "empty root":
        root.mkdir()
    elif kind == "class folders without images":
        for name in ("ant", "bee"):
            (root / name).mkdir(parents=True)
            (root / name / "notes.txt").write_text("not an image\n")
    return str(root)


@pytest.mark.parametrize(
    "kind, needles",
    [
        ("no root", ("data=image_folder needs data.root=PATH",)),
        ("missing root", ("data.root=", "pics does not exist")),
        ("empty root", ("data.root", "pics has no usable class folders", "<class>/<image>")),
        ("class folders without images", ("data.root", "pics has no usable class folders", "<class>/<image>")),
    ],
)
def test_image_folder_root_problems(in_process, tmp_path, kind, needles):
    root = make_root(tmp_path, kind)
    overrides = ["data=image_folder"] + ([] if root is None else [f"data.root={root}"])
    result = in_process.run("train", *in_process.TINY, *overrides, cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, *needles)


# --- dlopt eval ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needles",
    [
        (["run=not_a_run"], ("run=not_a_run is not a dlopt run folder", "neither .hydra/ nor checkpoints/")),
        (["run=no_such_folder"], ("run=no_such_folder does not exist",)),
        ([], ("give exactly one of run=RUN_DIR", "or ckpt_path=FILE",)),
        (["ckpt_path=notes.ckpt"], ("ckpt_path=notes.ckpt", "expected a checkpoint written by dlopt train")),
    ],
    ids=["not a run", "missing run", "neither run nor ckpt_path", "not a checkpoint"],
)
def test_eval_bad_target(in_process, tmp_path, args, needles):
    (tmp_path / "not_a_run" / "logs").mkdir(parents=True)
    (tmp_path / "notes.ckpt").write_text("these are notes, not a checkpoint\n")
    result = in_process.run("eval", *args, cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_run", "notes.ckpt"]  # no outputs/ left either


# --- a diverging run ---------------------------------------------------------------------------------


def test_nan_training_loss_names_epoch_and_step(cli, tmp_path):
    result = cli.run("train", *cli.TINY, *DIVERGE, "trainer.limit_train_batches=5", cwd=tmp_path)
    line = assert_fails_clearly(result, tmp_path, "the training loss became nan", "optimizer.lr",
                                "trainer.gradient_clip_val", leave_run_folder=True)
    assert re.search(r"at epoch 1, step \d+", line), line  # epochs count from 1
    assert "lower optimizer.lr" in line
    # the folder keeps its logs for the post-mortem, but no results
    [run_dir] = run_folders(tmp_path)
    assert not (run_dir / "curves.png").exists() and not (run_dir / "checkpoints").exists()


def test_nan_validation_loss_fails_like_a_nan_training_loss(cli, tmp_path):
    # two steps: the training loss is still finite (1.5e15) when validation first sees NaN
    result = cli.run("train", *cli.TINY, *DIVERGE, cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, "nan", "optimizer.lr", leave_run_folder=True)


# --- torchvision datasets offline ----------------------------------------------------------------------


@pytest.mark.parametrize("download", ["true", "false"])
def test_cifar10_missing_files_fail_fast_with_where_to_put_them(cli, tmp_path, download):
    root = tmp_path / "data"
    root.mkdir()
    result = cli.run("train", *cli.TINY, "data=cifar10", f"data.root={root}", f"data.download={download}",
                     cwd=tmp_path, offline=True)  # no network: the download is refused at once, not retried
    line = assert_fails_clearly(result, tmp_path, "data=cifar10", f"{root}/cifar-10-batches-py/", "data.root=PATH")
    assert ("data.download=false" in line) == (download == "false"), line
    assert "could not be downloaded" in line or download == "false", line
    assert [p for p in root.rglob("*") if p.is_file()] == [], "a partial download was left behind"


def test_a_diverging_run_in_a_sweep_is_recorded_and_the_sweep_goes_on(cli, tmp_path):
    result = cli.run("train", "-m", *cli.TINY, *DIVERGE[:-1], "optimizer.lr=1e6,0.01", cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    assert "Traceback" not in result.output, result.describe()
    [sweep] = cli.sweep_dirs(tmp_path)
    assert "became nan" in (sweep / "0" / "error.txt").read_text()
    assert not (sweep / "0" / "metrics.json").exists() and (sweep / "1" / "metrics.json").is_file()
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith("1,") and ",failed," in rows[2] and "became nan" in rows[2]


@pytest.mark.parametrize("override, key", [("monitor=val/accuracy", "monitor"),
                                           ("callbacks.early_stopping.monitor=val/accuracy",
                                            "callbacks.early_stopping.monitor")])
def test_a_monitor_that_is_never_logged_is_named_before_training(in_process, tmp_path, override, key):
    # checked against what the module logs before anything is built: no epoch, no folder
    result = in_process.run("train", *in_process.TINY, override, cwd=tmp_path)
    line = assert_fails_clearly(result, tmp_path, f"{key}=val/accuracy is not a metric dlopt logs (did you mean val/acc?)")
    assert "val/loss" in line and "Epoch" not in result.output
