"""How a run counts and reports its epochs (issue 16, items 3, 4, 6, 7, 11): numbers while it trains, one epoch
numbering, overfit_batches on one fixed batch, fast_dev_run marked as such, and a sweep's layer tables kept to each
run's log file. Real tiny trainings on digits, in-process (dlopt.training.run.train) and, for the sweep, through
the installed `dlopt` command."""

import io
import json
import logging

import lightning.pytorch as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from dlopt import terminal as dlopt_terminal
from dlopt.apps import config_dir
from dlopt.hydra_glue import register_resolvers
from dlopt.training import report
from dlopt.training.run import train

QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "diagnostics=none"]
TINY = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", *QUIET]


def composed(*overrides):
    register_resolvers()  # conf/ calls dlopt's resolvers by name
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose("train", overrides=list(overrides))


def read(run_dir, name):
    return json.loads((run_dir / name).read_text())


class Batches(L.Callback):
    """Every training batch as the step gets it (after the transfer and the augmentation), per epoch."""

    def __init__(self):
        self.epochs: list[list[tuple[torch.Tensor, torch.Tensor]]] = []

    def on_train_epoch_start(self, trainer, module):
        self.epochs.append([])

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.epochs[-1].append((batch[0].detach().clone(), batch[1].detach().clone()))


def test_overfit_batches_trains_on_one_fixed_batch_until_its_loss_is_near_zero(tmp_path):
    # augmentation noise on: a batch that changed from epoch to epoch (reshuffled or augmented) would show here
    cfg = composed("trainer.overfit_batches=1", "trainer.max_epochs=40", "data.batch_size=16",
                   "callbacks.early_stopping=null", "augmentation.noise_std=0.5", "trainer.limit_test_batches=1",
                   *QUIET)
    batches = Batches()
    train(cfg, tmp_path, callbacks=[batches])
    assert len(batches.epochs) == 40 and all(len(epoch) == 1 for epoch in batches.epochs)
    (x0, y0), = batches.epochs[0]
    assert len(y0) == 16
    for (x, y), in batches.epochs[1:]:
        assert torch.equal(x, x0) and torch.equal(y, y0)
    history = read(tmp_path, "history.json")
    losses = [row["train/loss"] for row in history]
    assert losses[-1] < 0.05 < 1.0 < losses[0], losses
    assert history[-1]["train/acc"] == 1.0
    assert read(tmp_path, "metrics.json")["overfit_batches"] == 1


def test_overfit_batches_are_the_first_training_samples(tmp_path):
    cfg = composed("trainer.overfit_batches=2", "trainer.max_epochs=2", "data.batch_size=8",
                   "trainer.limit_test_batches=1", *QUIET)

    class First(Batches):
        def on_fit_start(self, trainer, module):
            self.x, self.y = trainer.datamodule.splits["train"]

    batches = First()
    train(cfg, tmp_path, callbacks=[batches])
    for epoch in batches.epochs:
        assert [len(y) for _, y in epoch] == [8, 8]
        assert torch.equal(torch.cat([x for x, _ in epoch]), batches.x[:16])
        assert torch.equal(torch.cat([y for _, y in epoch]), batches.y[:16])


def test_epochs_count_from_one_in_history_metrics_log_lines_and_the_final_line(tmp_path, caplog):
    cfg = composed(*TINY)
    with caplog.at_level(logging.INFO):
        train(cfg, tmp_path)
    history, metrics = read(tmp_path, "history.json"), read(tmp_path, "metrics.json")
    assert [row["epoch"] for row in history] == [1, 2]
    val = [row["val/loss"] for row in history]
    assert metrics["best_epoch"] == val.index(min(val)) + 1 and metrics["epochs"] == 2
    assert metrics["stopped_epoch"] is None and metrics["stop_reason"] == "trainer.max_epochs=2 reached"
    assert "dev_run" not in metrics
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    for line, row in zip(lines, history):
        words = line.split(": ", 1)[1].split()
        assert words[0::2] == ["train/loss", "train/acc", "val/loss", "val/acc"]
        assert [float(w) for w in words[1::2]] == pytest.approx(
            [row["train/loss"], row["train/acc"], row["val/loss"], row["val/acc"]], rel=1e-3)
    assert f"best epoch {metrics['best_epoch']} of 2: val/loss=" in caplog.text


def test_early_stopping_names_the_epoch_it_stopped_after_from_one(tmp_path):
    # lr=1e-30: val/loss never improves after epoch 1, so patience=0 stops after epoch 2
    cfg = composed("trainer.max_epochs=6", "callbacks.early_stopping.patience=0", "optimizer.lr=1e-30", "model=mlp",
                   "model.width=16", *TINY[1:])
    train(cfg, tmp_path)
    metrics = read(tmp_path, "metrics.json")
    assert metrics["epochs"] == 2 and metrics["stopped_epoch"] == 2 and metrics["best_epoch"] == 1
    assert [row["epoch"] for row in read(tmp_path, "history.json")] == [1, 2]


def test_progress_bar_metrics_are_train_and_val_loss_and_accuracy(tmp_path):
    seen = {}

    class Watch(L.Callback):
        def on_train_end(self, trainer, module):
            seen.update(trainer.progress_bar_metrics)

    cfg = composed(*TINY)
    train(cfg, tmp_path, callbacks=[Watch()])
    assert sorted(seen) == ["train/acc", "train/loss", "val/acc", "val/loss"]


@pytest.mark.parametrize("setting, batches", [("true", "1 batch"), ("2", "2 batches")])
def test_fast_dev_run_is_marked_in_metrics(tmp_path, setting, batches):
    cfg = composed(f"trainer.fast_dev_run={setting}", *QUIET)  # in conf/trainer: no `+` needed
    train(cfg, tmp_path)
    metrics = read(tmp_path, "metrics.json")
    assert metrics["dev_run"] == f"trainer.fast_dev_run={setting}"
    assert metrics["stop_reason"].startswith(f"trainer.fast_dev_run={setting}: a dev run of 1 epoch on {batches} ")
    assert "not a measurement" in metrics["stop_reason"] and "max_epochs" not in metrics["stop_reason"]
    assert metrics["epochs"] == 1 and metrics["best_epoch"] == 1


def test_trainer_configs_list_fast_dev_run_and_overfit_batches():
    for trainer in ("default", "ddp"):
        cfg = composed(f"trainer={trainer}")
        assert cfg.trainer.fast_dev_run is False and cfg.trainer.overfit_batches == 0.0
    cfg = composed("trainer=slurm")
    assert cfg.trainer.fast_dev_run is False and cfg.trainer.overfit_batches == 0.0


@pytest.mark.parametrize("epochs", [1, 2])
def test_curves_of_a_short_run_have_whole_epoch_ticks_and_mark_the_best_epoch_and_the_test(epochs):
    history = [{"epoch": e, "train/loss": 1.0 / e, "val/loss": 1.2 / e, "train/acc": 0.5, "val/acc": 0.4}
               for e in range(1, epochs + 1)]
    fig = report.curves_figure(history, best=epochs, monitor="val/loss", tested={"test/loss": 0.9, "test/acc": 0.6},
                               tested_epoch=epochs)
    for ax in fig.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks == list(range(1, epochs + 1))
        labels = ax.get_legend_handles_labels()[1]
        assert f"best epoch {epochs} (val/loss)" in labels and any(label.startswith("test ") for label in labels)
    report.pyplot().close(fig)


def test_a_sweep_run_logs_its_layer_table_and_epoch_lines_to_its_log_file_only(tmp_path):
    terminal, root = io.StringIO(), logging.getLogger()
    console, file = logging.StreamHandler(terminal), logging.FileHandler(tmp_path / "train.log")
    old_level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(console)
    root.addHandler(file)
    dlopt_terminal.terminal_skips_file_only()  # as dlopt.apps.task sets the console up when a run starts
    try:
        for name, sweep in (("single", False), ("sweep", True)):
            (tmp_path / name).mkdir()
            train(composed(*TINY), tmp_path / name, sweep=sweep)
            file.flush()
            text = (tmp_path / "train.log").read_text()
            shown = terminal.getvalue()
            assert text.count("FLOPs per sample") == (1 if name == "single" else 2)
            assert shown.count("FLOPs per sample") == 1  # the single run's
            assert text.count("epoch 2/2:") == (1 if name == "single" else 2)
            assert shown.count("epoch 2/2:") == 1  # no progress bar in the single run: its lines show
            assert shown.count("best epoch") == (1 if name == "single" else 2)
    finally:
        root.removeHandler(console)
        root.removeHandler(file)
        root.setLevel(old_level)
        file.close()


def test_a_sweep_prints_no_layer_tables_and_each_run_logs_its_own(cli, tmp_path):
    done = cli.run("train", "-m", "seed=0,1", *cli.TINY, "diagnostics=none", cwd=tmp_path)
    assert done.returncode == 0, done.describe()
    assert "FLOPs per sample" not in done.output and "epoch 1/1:" not in done.output
    logs = sorted((tmp_path / "outputs").rglob("train.log"))
    assert len(logs) == 2
    for path in logs:
        text = path.read_text()
        assert text.count("FLOPs per sample") == 1 and text.count("epoch 1/1: train/loss") == 1
