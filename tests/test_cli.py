"""End to end: every `dlopt` command works, run for real in a temporary folder.

Each test runs the installed `dlopt` command with tiny training (two batches of digits) and
checks the files and numbers it leaves: run folders, metrics.json, checkpoints, TensorBoard
events, sweep summaries, eval results. Finished runs that several tests read are module-scoped
fixtures, because every dlopt start costs seconds of imports. A refused command runs its real entry
point in this process (conftest's `in_process`), which must leave the process as it found it.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from dlopt.apps import config_dir

HEAVY = ("torch", "lightning", "torchvision", "torchmetrics")
RUN_FILES = (".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "checkpoints/best.ckpt",
             "checkpoints/last.ckpt", "metrics.json", "curves.png")
METRIC_KEYS = {"train/loss", "train/acc", "val/loss", "val/acc", "val/f1", "test/loss", "test/acc", "test/f1",
               "objective", "monitor", "mode", "epochs", "best_epoch", "seed", "wall_time_s", "stopped_early"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_NAME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}(_\d+)?$")  # outputs/train/DATE/TIME[_N]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the run's TensorBoard event files: tag -> [(step, value), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        events = EventAccumulator(str(path))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return found


def no_heavy_imports(argv: list[str]) -> str:
    """Python code that runs dlopt.cli.main(argv) in-process and prints which heavy modules it imported."""
    return (
        "import sys\n"
        "from dlopt.cli import main\n"
        "try:\n"
        f"    code = main({argv!r})\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "assert not code, f'exit {code}'\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )


# --- dispatch and help: no torch ---------------------------------------------------------------


def test_help_lists_commands(cli, tmp_path):
    result, imported = cli.imported("--help", cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    assert re.search(r"^\s+train\s", result.stdout, re.M), result.stdout
    assert re.search(r"^\s+eval\s", result.stdout, re.M), result.stdout
    assert not imported & {"torch", "lightning", "hydra", "omegaconf"}, "dlopt --help should import only the stdlib"
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "--help"], ["eval", "--help"], ["train", "--cfg", "job"]], ids=" ".join
)
def test_help_and_cfg_import_no_torch(cli, tmp_path, argv):
    result = cli.python(no_heavy_imports(argv), cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    assert "HEAVY=\n" in result.stdout, f"{argv} imported: {result.stdout.splitlines()[-1]}"
    assert not (tmp_path / "outputs").exists()


def test_unknown_command(in_process, tmp_path):
    result = in_process.run("trian", cwd=tmp_path)
    assert result.returncode != 0
    first = result.stderr.splitlines()[0]
    assert "trian" in first and "train" in first and "eval" in first, result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("argv", [["--version"], ["train", "model=resnot"], ["train", "optimizer.lr=-1"],
                                  ["eval", "run=missing"], ["runs", "sort=nope"]], ids=" ".join)
def test_the_preloaded_dlopt_answers_as_a_fresh_process(cli, tmp_path, argv):
    """The tests run most commands in a fork of a preloaded dlopt (tests/preload.py): its exit status and output
    are a fresh process's, but for the log lines' time stamps."""
    fork, fresh = cli.run(*argv, cwd=tmp_path), cli.run(*argv, cwd=tmp_path, fresh=True)

    def answer(result):
        return [result.returncode, *(re.sub(r"(?m)^\[[-\d :,]+\]", "", out) for out in (result.stdout, result.stderr))]

    assert answer(fork) == answer(fresh), f"{fork.describe()}\n---\n{fresh.describe()}"
    assert fork.output and not (tmp_path / "outputs").exists()


def test_train_help_lists_every_group_and_option(cli, tmp_path):
    result = cli.ok("train", "--help", cwd=tmp_path, timeout=60)
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = dict(re.findall(r"^(\w+): (.+)$", groups, re.M))
    listed = {group: sorted(o.strip() for o in options.split(",")) for group, options in listed.items()}
    conf = Path(config_dir())
    shipped = {d.name: sorted(f.stem for f in d.glob("*.yaml")) for d in conf.iterdir() if d.is_dir()}
    shipped.pop("hydra")
    assert set(shipped) == {"data", "model", "optimizer", "scheduler", "augmentation", "regularization", "search",
                            "trainer", "callbacks", "logger", "experiment", "clip", "diagnostics"}
    assert listed == shipped
    assert listed["model"] == ["cnn", "linear", "mlp", "resnet", "vit"]
    assert {"digits", "mnist1d", "synthetic", "image_folder", "cifar10"} <= set(listed["data"])
    assert not (tmp_path / "outputs").exists()


def test_cfg_job_prints_composed_config(cli, tmp_path):
    result, imported = cli.imported("train", "--cfg", "job", "model=mlp", "optimizer.lr=0.02", cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    assert "torch" not in imported and "lightning" not in imported, "--cfg job should not import torch"
    cfg = yaml.safe_load(result.stdout)
    assert cfg["model"]["_target_"] == "dlopt.models.MLP"
    assert cfg["optimizer"]["_target_"] == "torch.optim.Adam" and cfg["optimizer"]["lr"] == 0.02
    assert cfg["seed"] == 0 and cfg["monitor"] == "val/loss"
    assert {"data", "scheduler", "trainer", "callbacks", "logger", "regularization"} <= set(cfg)
    assert not (tmp_path / "outputs").exists()


# --- one default run, read by many tests --------------------------------------------------------


@pytest.fixture(scope="module")
def default_run(cli, tmp_path_factory):
    """Default `dlopt train`: 2 epochs of 2 batches; validation and test on their whole splits,
    so that `dlopt eval` (which always uses whole splits) must reproduce the same numbers."""
    cwd = tmp_path_factory.mktemp("default")
    run_dir = cli.train("trainer.max_epochs=2", "trainer.limit_val_batches=1.0", "trainer.limit_test_batches=1.0",
                        cwd=cwd)
    return cwd, run_dir


def test_default_run_folder_has_every_file(default_run):
    cwd, run_dir = default_run
    assert RUN_NAME_RE.search(run_dir.relative_to(cwd / "outputs" / "train").as_posix()), run_dir
    for name in RUN_FILES:
        path = run_dir / name
        assert path.is_file() and path.stat().st_size > 0, f"{path} missing or empty"
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    png = (run_dir / "curves.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    from PIL import Image

    with Image.open(run_dir / "curves.png") as img:
        assert img.width >= 200 and img.height >= 100
        assert len(img.convert("L").getcolors()) > 2, "blank plot"


def test_default_metrics(cli, default_run):
    _, run_dir = default_run
    metrics = cli.metrics(run_dir)  # strict JSON: no NaN/Infinity
    assert METRIC_KEYS <= set(metrics), METRIC_KEYS - set(metrics)
    cli.assert_finite(metrics)
    assert metrics["monitor"] == "val/loss" and metrics["mode"] == "min"
    assert metrics["seed"] == 0 and metrics["epochs"] == 2 and metrics["stopped_early"] is False
    assert isinstance(metrics["objective"], float)
    assert metrics["best_epoch"] in (1, 2)  # epochs count from 1
    assert 0 < metrics["wall_time_s"] < 300
    # 2 batches of 64 per epoch: train/acc counts correct samples out of 128
    assert metrics["train/acc"] * 128 == pytest.approx(round(metrics["train/acc"] * 128), abs=1e-4)
    # the config the run used is saved
    cfg = cli.config(run_dir)
    assert cfg["trainer"]["max_epochs"] == 2 and cfg["seed"] == 0 and cfg["model"]["_target_"] == "dlopt.models.CNN"


def test_objective_is_best_epoch_val_loss_in_tensorboard(cli, default_run):
    _, run_dir = default_run
    metrics = cli.metrics(run_dir)
    logged = scalars(run_dir)
    val_loss = [v for _, v in sorted(logged["val/loss"])]
    assert len(val_loss) == 2, logged["val/loss"]
    assert metrics["objective"] == pytest.approx(min(val_loss), abs=1e-6)
    assert metrics["best_epoch"] == val_loss.index(min(val_loss)) + 1
    assert metrics["val/loss"] == pytest.approx(val_loss[-1], abs=1e-6)  # the last epoch's value
    assert len(logged["train/loss"]) == 2
    assert [v for _, v in logged["test/acc"]] == [pytest.approx(metrics["test/acc"], abs=1e-6)]
    assert [v for _, v in logged["lr-Adam"]][0] == pytest.approx(0.001)


def test_train_log_reports_the_result(default_run):
    _, run_dir = default_run
    log = (run_dir / "train.log").read_text()
    assert "val/loss=" in log and str(run_dir.name) in log


# --- dlopt eval ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(cli, default_run):
    """`dlopt eval run=RELATIVE_RUN_DIR` (test split) in the train cwd, and
    `dlopt eval ckpt_path=ABSOLUTE_BEST_CKPT split=val` in another folder."""
    cwd, run_dir = default_run
    cli.ok("eval", f"run={run_dir.relative_to(cwd).as_posix()}", cwd=cwd)
    by_run = cli.run_dirs(cwd, "eval")
    other = cwd / "elsewhere"
    other.mkdir()
    cli.ok("eval", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", "split=val", cwd=other)
    by_ckpt = cli.run_dirs(other, "eval")
    assert len(by_run) == 1 and len(by_ckpt) == 1, (by_run, by_ckpt)
    return by_run[0], by_ckpt[0]


def test_eval_run_reproduces_test_metrics(cli, default_run, evaluated):
    _, run_dir = default_run
    eval_dir = evaluated[0]
    assert (eval_dir / ".hydra" / "config.yaml").is_file()
    trained, tested = cli.metrics(run_dir), cli.metrics(eval_dir)
    assert Path(tested["checkpoint"]) == (run_dir / "checkpoints" / "best.ckpt").resolve()
    for key in ("test/acc", "test/f1", "test/loss"):
        assert tested[key] == pytest.approx(trained[key], abs=1e-6), key
    assert not any(k.startswith(("val/", "train/")) for k in tested)


def test_eval_ckpt_path_val_split_reproduces_best_val_loss(cli, default_run, evaluated):
    _, run_dir = default_run
    tested = cli.metrics(evaluated[1])
    assert {"val/loss", "val/acc", "val/f1"} <= set(tested)
    assert not any(k.startswith("test/") for k in tested)
    cli.assert_finite(tested)
    # best.ckpt holds the weights of the best epoch: its val/loss is the run's objective
    assert tested["val/loss"] == pytest.approx(cli.metrics(run_dir)["objective"], abs=1e-5)


# --- options ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_resnet_with_adam(cli, tmp_path):
    run_dir = cli.train("model=resnet", "optimizer=adam", cwd=tmp_path)
    cfg = cli.config(run_dir)
    assert cfg["model"]["_target_"] == "dlopt.models.ResNet" and cfg["model"]["arch"] == "resnet18"
    assert cfg["optimizer"]["_target_"] == "torch.optim.Adam"
    metrics = cli.metrics(run_dir)
    cli.assert_finite(metrics)
    assert metrics["epochs"] == 1 and (run_dir / "checkpoints" / "best.ckpt").is_file()


def test_mlp_sgd_step_scheduler_batch_size(cli, tmp_path):
    run_dir = cli.train("model=mlp", "optimizer=sgd", "optimizer.lr=0.05", "scheduler=step", "data.batch_size=32",
                        cwd=tmp_path)
    cfg = cli.config(run_dir)
    assert cfg["model"]["_target_"] == "dlopt.models.MLP"
    assert cfg["optimizer"]["_target_"] == "torch.optim.SGD" and cfg["optimizer"]["lr"] == 0.05
    assert cfg["scheduler"]["_target_"] == "torch.optim.lr_scheduler.StepLR"
    assert cfg["data"]["batch_size"] == 32
    metrics = cli.metrics(run_dir)
    cli.assert_finite(metrics)
    # the overrides reached the objects: 2 batches of 32 samples, and the optimizer's lr
    assert metrics["train/acc"] * 64 == pytest.approx(round(metrics["train/acc"] * 64), abs=1e-4)
    assert [v for _, v in scalars(run_dir)["lr-SGD"]] == [pytest.approx(0.05)]


def test_logger_csv(cli, tmp_path):
    run_dir = cli.train("logger=csv", cwd=tmp_path)
    assert not list(run_dir.rglob("events.out.tfevents.*"))
    assert not (run_dir / "tensorboard").exists()
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert val == [pytest.approx(cli.metrics(run_dir)["val/loss"], abs=1e-6)]
    assert any(r.get("test/acc") for r in rows)


def test_experiment_example(cli, tmp_path):
    run_dir = cli.train("experiment=example", cwd=tmp_path)
    cfg = cli.config(run_dir)
    assert cfg["optimizer"]["_target_"] == "torch.optim.AdamW" and cfg["optimizer"]["lr"] == 0.003
    assert cfg["model"]["_target_"] == "dlopt.models.CNN" and cfg["model"]["width"] == 48
    assert cfg["regularization"]["weight_decay"] == 0.0005
    # the command line wins over the experiment (it sets 20 epochs)
    assert cfg["trainer"]["max_epochs"] == 1 and cli.metrics(run_dir)["epochs"] == 1
    assert "experiment=example" in yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())


def test_user_experiment_from_config_dir(cli, tmp_path):
    (tmp_path / "myconf" / "experiment").mkdir(parents=True)
    (tmp_path / "myconf" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n"
        "  - override /model: mlp\n"
        "  - override /optimizer: sgd\n"
        "model:\n"
        "  width: 16\n"
        "  depth: 1\n"
        "optimizer:\n"
        "  lr: 0.02\n"
    )
    run_dir = cli.train("experiment=mine", flags=("--config-dir", "./myconf"), cwd=tmp_path)
    cfg = cli.config(run_dir)
    assert cfg["model"]["_target_"] == "dlopt.models.MLP"
    assert cfg["model"]["width"] == 16 and cfg["model"]["depth"] == 1
    assert cfg["optimizer"]["_target_"] == "torch.optim.SGD" and cfg["optimizer"]["lr"] == 0.02
    assert [v for _, v in scalars(run_dir)["lr-SGD"]] == [pytest.approx(0.02)]
    cli.assert_finite(cli.metrics(run_dir))


# --- seeds -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_same_seed_same_numbers_other_seed_differs(cli, tmp_path):
    """Also: the preloaded dlopt the tests fork (a, c) computes what a fresh process (b) does."""
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        (tmp_path / name).mkdir()
        runs[name] = cli.metrics(cli.train(f"seed={seed}", cwd=tmp_path / name, fresh=name == "b"))
        runs[name].pop("wall_time_s"), runs[name].pop("process_wall_time_s")
    assert runs["a"]["seed"] == 3 and runs["c"]["seed"] == 4
    assert runs["a"] == runs["b"]
    numbers = ("train/loss", "val/loss", "test/loss", "objective")
    assert all(runs["a"][k] != runs["c"][k] for k in numbers), (runs["a"], runs["c"])


# --- data options ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [["data=mnist1d"], ["data=synthetic", "data.shape=[20]", "model=mlp"], ["data=synthetic", "data.shape=[3,16,16]"]],
    ids=" ".join,
)
def test_data_options_train(cli, tmp_path, overrides):
    run_dir = cli.train(*overrides, cwd=tmp_path)
    cfg = cli.config(run_dir)
    assert cfg["data"]["_target_"].rsplit(".", 1)[-1] == overrides[0].split("=")[1]
    metrics = cli.metrics(run_dir)
    cli.assert_finite(metrics)
    assert metrics["val/loss"] == pytest.approx(math.log(10), abs=0.5)  # 10 classes, barely trained


@pytest.mark.slow
def test_data_image_folder_trains(cli, tmp_path):
    cli.image_tree(tmp_path / "pics", classes=("ant", "bee", "cat"), per_class=8)
    run_dir = cli.train("data=image_folder", "data.root=pics", cwd=tmp_path)
    metrics = cli.metrics(run_dir)
    cli.assert_finite(metrics)
    # three classes reached the model: chance-level loss is ln 3 = 1.10, not ln 10 = 2.30
    assert metrics["val/loss"] == pytest.approx(math.log(3), abs=0.5)
    assert cli.config(run_dir)["data"]["root"] == "pics"


# --- sweeps ----------------------------------------------------------------------------------------


def read_summary(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def check_sweep(cli, sweep: Path, runs: int, monitor: str = "val/loss") -> list[dict[str, str]]:
    """The sweep has `runs` finished run folders 0..runs-1 and a summary sorted best first (min)."""
    run_dirs = sorted((d for d in sweep.iterdir() if (d / ".hydra").is_dir()), key=lambda d: int(d.name))
    assert [d.name for d in run_dirs] == [str(i) for i in range(runs)]
    rows = read_summary(sweep)
    assert len(rows) == runs and all(r["status"] == "done" for r in rows)
    values = [float(r[monitor]) for r in rows]
    assert values == sorted(values), f"summary.csv not sorted ascending by {monitor}: {values}"
    for row in rows:
        metrics = cli.metrics(sweep / row["run"])
        cli.assert_finite(metrics)
        assert float(row[monitor]) == pytest.approx(metrics["objective"], abs=1e-9)
        overrides = yaml.safe_load((sweep / row["run"] / ".hydra" / "overrides.yaml").read_text())
        assert row["overrides"] == " ".join(o for o in overrides if not o.startswith("search.trial="))
    md = (sweep / "summary.md").read_text().splitlines()
    common = md[0].removeprefix("All runs: `").removesuffix("`").split() if md[0].startswith("All runs:") else []
    table = md[2:] if common else md
    assert table[0].startswith("| run |") and monitor in table[0]
    for row in rows:  # the overrides all runs share above the table, each run's own in its row
        own = " ".join(o for o in row["overrides"].split() if o not in common)
        assert any(line.startswith(f"| {row['run']} | {own} | done |") for line in table), (own, table)
    return rows


@pytest.mark.slow
def test_multirun_sweep_and_summary(cli, tmp_path):
    cli.ok("train", "-m", "optimizer=sgd,adam", "regularization=none,l2", *cli.TINY, cwd=tmp_path)
    assert cli.run_dirs(tmp_path) == []
    [sweep] = cli.sweep_dirs(tmp_path)
    check_sweep(cli, sweep, runs=4)
    combos = set()
    for i in range(4):
        cfg = cli.config(sweep / str(i))
        combos.add((cfg["optimizer"]["_target_"], cfg["regularization"]["weight_decay"]))
    assert combos == {("torch.optim.SGD", 0.0), ("torch.optim.SGD", 0.0005),
                      ("torch.optim.Adam", 0.0), ("torch.optim.Adam", 0.0005)}


def sweep_configs(cli, sweep: Path) -> set[tuple[str, float, float]]:
    configs = [cli.config(d) for d in sweep.iterdir() if (d / ".hydra").is_dir()]
    return {(c["optimizer"]["_target_"], c["optimizer"]["lr"], c["regularization"]["weight_decay"]) for c in configs}


def test_search_grid_documented_lr_override(cli, tmp_path):
    """conf/search/grid.yaml: a key given on the command line takes the place of its declared list."""
    result = cli.run("train", "-m", "search=grid", "search.study_name=g", "optimizer=sgd", "regularization=none",
                     "optimizer.lr=1e-3,1e-2", *cli.TINY, cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    sweep = tmp_path / "outputs" / "train" / "search" / "g"
    check_sweep(cli, sweep, runs=2)
    assert sweep_configs(cli, sweep) == {("torch.optim.SGD", 0.001, 0.0), ("torch.optim.SGD", 0.01, 0.0)}


def test_hydra_flags_may_follow_overrides(cli, tmp_path):
    """tests/test_hydra_glue.py has a row for each rewrite of the command line; this is one through the command."""
    from dlopt.hydra_glue import hydra_args

    assert hydra_args("train", ["model=mlp", "--cfg", "job", "a=1,2"]) == ["--cfg", "job", "model=mlp", "a=1,2"]
    assert hydra_args("train", ["model=mlp", "-m", "a=1,2"]) == ["-m", "model=mlp", "a=1,2"]
    assert hydra_args("train", ["x=1", "--config-dir", "./c", "experiment=e"]) == ["--config-dir", "./c", "x=1",
                                                                                   "experiment=e"]
    result = cli.run("train", "model=mlp", "--cfg", "job", cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.describe()
    assert "_target_: dlopt.models.MLP" in result.output


def test_two_hydra_modes_at_once_get_one_line(in_process, tmp_path):
    result = in_process.run("train", "model=mlp", "-m", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.output, result.describe()
    assert result.stderr.strip() == ("dlopt train: --multirun and --cfg cannot be combined; give one of them "
                                     "(--cfg job prints the config of a single run: drop -m to see it)")
    assert not (tmp_path / "outputs").exists()


def test_in_process_leaves_the_process_as_it_found_it(in_process, tmp_path):
    """A command refused inside its run (Hydra's logging set up, its folder claimed and removed) leaves no Hydra,
    logging, argv, environment or cwd behind: the next in-process command, or a test's compose(), starts clean."""
    from hydra.core.global_hydra import GlobalHydra

    root = logging.getLogger()
    before = list(root.handlers), root.level, list(sys.argv), dict(os.environ), os.getcwd()
    for _ in range(2):
        result = in_process.run("train", *in_process.TINY, "optimizer.lr=-1", cwd=tmp_path)
        assert result.returncode == 2 and "optimizer.lr=-1 is not valid" in result.stderr, result.describe()
        assert (list(root.handlers), root.level, list(sys.argv), dict(os.environ), os.getcwd()) == before
        assert not GlobalHydra.instance().is_initialized() and not (tmp_path / "outputs").exists()
