"""Tests of dlopt.training (module, run, report): tiny real trainings on the CPU, configs composed by Hydra."""

import json
import math
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dlopt import saved_run
from dlopt.apps import config_dir
from dlopt.errors import UserError
from dlopt.hydra_glue import register_resolvers
from dlopt.training import run as runs
from dlopt.training.module import Classifier
from dlopt.training.run import build, train

QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "trainer.enable_model_summary=false"]
TINY = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", *QUIET]
FINITE = ["train/loss", "train/acc", "val/loss", "val/acc", "val/f1", "test/loss", "test/acc", "test/f1"]


def composed(*overrides, name="train"):
    register_resolvers()  # conf/ calls dlopt's resolvers by name
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose(name, overrides=list(overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """trained(*overrides) -> (cfg, run_dir, returned value); each distinct run trains once per module."""
    cache = {}

    def run(*overrides):
        if overrides not in cache:
            cfg = composed(*TINY, *overrides)
            run_dir = tmp_path_factory.mktemp("run")
            cache[overrides] = (cfg, run_dir, train(cfg, run_dir))
        return cache[overrides]

    return run


def evaluate(cfg, run_dir):
    """What `dlopt eval` does with the composed eval config: its run or checkpoint, built from dlopt's conf."""
    saved = saved_run.find(cfg.run, cfg.ckpt_path)
    return runs.evaluate(saved, cfg.split, run_dir, saved_run.allowed_targets([Path(config_dir())]))


def load_checkpoint(path):
    return saved_run.read_checkpoint(path, f"ckpt_path={path}")


def read_metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def logged(run_dir, key):
    """Every value of `key` the run logged to TensorBoard, in order (one per epoch for epoch metrics)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for path in sorted(run_dir.rglob("events.out.tfevents.*")):
        events = EventAccumulator(str(path))
        events.Reload()
        if key in events.Tags()["scalars"]:
            values += [event.value for event in events.Scalars(key)]
    return values


def saved_history(run_dir):
    """The per-epoch rows saved with the best checkpoint (every epoch up to the best one)."""
    return load_checkpoint(run_dir / "checkpoints" / "best.ckpt")["dlopt"]["history"]


def tiny_trainer(**kw):
    return L.Trainer(**{"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1, "logger": False,
                        "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                        "accelerator": "cpu", **kw})


def net_weights(module):
    return {k: v.detach().clone() for k, v in module.net.state_dict().items() if v.is_floating_point()}


# a run folder


def test_a_run_writes_metrics_curves_and_checkpoints(trained):
    cfg, run_dir, best = trained()
    metrics = read_metrics(run_dir)
    for key in FINITE:
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    for key in ("train/acc", "val/acc", "test/acc", "val/f1", "test/f1"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["epochs"] == 2
    assert metrics["monitor"] == "val/loss" and metrics["mode"] == "min" and metrics["seed"] == 0
    assert metrics["stopped_early"] is False
    assert metrics["wall_time_s"] > 0

    val_losses = logged(run_dir, "val/loss")
    assert len(val_losses) == 2
    assert metrics["objective"] == pytest.approx(min(val_losses), rel=1e-6)
    assert best == pytest.approx(metrics["objective"], rel=1e-6)
    assert metrics["best_epoch"] == val_losses.index(min(val_losses)) + 1
    # the final train/val metrics are those of the last epoch
    for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert metrics[key] == pytest.approx(logged(run_dir, key)[-1], rel=1e-6)
    rows = saved_history(run_dir)
    assert [row["epoch"] for row in rows] == list(range(1, metrics["best_epoch"] + 1))
    assert rows[-1]["val/loss"] == pytest.approx(metrics["objective"], rel=1e-6)

    png = (run_dir / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert any(run_dir.rglob("events.out.tfevents.*"))
    assert not list(run_dir.glob("*.tmp"))


def test_mode_max_returns_the_highest_monitored_value(trained):
    cfg, run_dir, best = trained("monitor=val/acc", "mode=max")
    metrics = read_metrics(run_dir)
    accs = logged(run_dir, "val/acc")
    assert len(accs) == 2
    assert metrics["objective"] == pytest.approx(max(accs), rel=1e-6) == best
    assert metrics["best_epoch"] == accs.index(max(accs)) + 1


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(trained):
    _, first, _ = trained()
    again = composed(*TINY)
    second = first.parent / (first.name + "_again")
    second.mkdir()
    train(again, second)
    a, b = read_metrics(first), read_metrics(second)
    for key in ("wall_time_s", "process_wall_time_s"):
        a.pop(key), b.pop(key)
    assert a == b

    _, other, _ = trained("seed=1")
    c = read_metrics(other)
    assert c["seed"] == 1
    assert any(c[k] != a[k] for k in FINITE)
    assert c["val/loss"] != a["val/loss"] and c["train/loss"] != a["train/loss"]


def test_history_lr_is_the_lr_of_the_epoch(trained):
    """The first epoch trains at optimizer.lr, so its history row must say so (cosine decays after it)."""
    cfg, run_dir, _ = trained()
    rows = saved_history(run_dir)
    assert rows[0]["lr"] == pytest.approx(cfg.optimizer.lr)


# normalization statistics and the checkpoint


def test_normalization_buffers_equal_the_data_stats_and_travel_in_the_checkpoint(trained):
    cfg, run_dir, _ = trained()
    data, module = build(cfg)
    assert torch.equal(module.input_shift, data.shift) and torch.equal(module.input_scale, data.scale)
    assert data.shift.abs().sum() > 0 and not torch.equal(data.scale, torch.ones_like(data.scale))
    assert {"input_shift", "input_scale"} <= set(dict(module.named_buffers()))

    x = data.splits["val"][0][:5]
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(x), module.net((x - data.shift) / data.scale))

    for name in ("best.ckpt", "last.ckpt"):
        state = load_checkpoint(run_dir / "checkpoints" / name)["state_dict"]
        assert torch.equal(state["input_shift"], data.shift)
        assert torch.equal(state["input_scale"], data.scale)


def test_minmax_stats_reach_the_module():
    cfg = composed(*TINY, "data.normalize=minmax")
    data, module = build(cfg)
    x_train = data.splits["train"][0]
    assert torch.equal(module.input_shift, data.shift)
    assert module.input_shift.flatten().tolist() == [float(x_train.min())]
    assert module.input_scale.flatten().tolist() == [float(x_train.max() - x_train.min())]


def test_the_checkpoint_holds_the_resolved_run_config(trained):
    cfg, run_dir, _ = trained()
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    saved = checkpoint["dlopt"]["config"]
    assert saved == OmegaConf.to_container(cfg, resolve=True)
    assert "${" not in json.dumps(saved)
    assert saved["model"]["dropout"] == 0.0 and saved["scheduler"]["T_max"] == 2
    assert saved["trainer"]["max_epochs"] == 2 and saved["seed"] == 0


@pytest.mark.parametrize("how", ["run", "ckpt_path"])
def test_evaluate_reproduces_the_test_metrics(trained, tmp_path, how):
    """evaluate tests the whole split, so the run's test split is not limited here either."""
    _, run_dir, _ = trained("trainer.limit_test_batches=null")
    best = run_dir / "checkpoints" / "best.ckpt"
    result = evaluate(composed(f"{how}={run_dir if how == 'run' else best}", name="eval"), tmp_path)
    metrics = read_metrics(run_dir)
    assert result["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert result["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-5)
    assert result["test/f1"] == pytest.approx(metrics["test/f1"], abs=1e-6)
    written = read_metrics(tmp_path)
    assert written["checkpoint"] == str(best.resolve())
    assert written["test/acc"] == result["test/acc"]


def test_every_run_saves_its_predictions_and_calibration(trained, tmp_path):
    """predictions.npz: the best checkpoint's class probabilities on the whole val and test splits, in the split's
    order, as plain arrays; their accuracy is the run's test/acc; val/ece and test/ece are reported; eval writes the
    predictions of its split, the same."""
    import numpy as np

    _, run_dir, _ = trained("trainer.limit_test_batches=null")
    metrics = read_metrics(run_dir)
    arrays = np.load(run_dir / "predictions.npz", allow_pickle=False)
    assert set(arrays) == {"val_probabilities", "val_labels", "test_probabilities", "test_labels"}
    probabilities, labels = arrays["test_probabilities"], arrays["test_labels"]
    assert probabilities.shape == (270, 10) and probabilities.dtype == np.float32 and labels.shape == (270,)
    assert np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert (probabilities.argmax(1) == labels).mean() == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert 0 <= metrics["test/ece"] <= 1 and 0 <= metrics["val/ece"] <= 1
    assert all("val/ece" in row for row in json.loads((run_dir / "history.json").read_text()))
    evaluate(composed(f"run={run_dir}", name="eval"), tmp_path)
    again = np.load(tmp_path / "predictions.npz", allow_pickle=False)
    assert set(again) == {"test_probabilities", "test_labels"}
    assert np.allclose(again["test_probabilities"], probabilities, atol=1e-6)
    assert np.array_equal(again["test_labels"], labels)


def test_evaluate_on_the_validation_split(trained, tmp_path):
    _, run_dir, _ = trained("trainer.limit_test_batches=null")
    result = evaluate(composed(f"run={run_dir}", "split=val", name="eval"), tmp_path)
    assert set(result) >= {"val/loss", "val/acc", "val/f1"} and "test/acc" not in result


# regularization


def test_l1_adds_its_penalty_to_the_training_loss():
    cfg = composed(*TINY, "regularization.l1=0.01")
    data, module = build(cfg)
    plain_cfg = composed(*TINY)
    _, plain = build(plain_cfg)
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad():
        with_l1 = module.training_step(batch, 0)
        without = plain.training_step(batch, 0)
    penalty = 0.01 * sum(p.abs().sum() for p in module.parameters() if p.dim() > 1)
    assert penalty > 0
    torch.testing.assert_close(with_l1, without + penalty)


def test_l1_logs_train_l1_and_changes_training(trained):
    _, plain_dir, _ = trained()
    _, l1_dir, _ = trained("regularization.l1=0.01")
    plain, l1 = read_metrics(plain_dir), read_metrics(l1_dir)
    assert "train/l1" not in plain
    assert math.isfinite(l1["train/l1"]) and l1["train/l1"] > 0
    assert len(logged(l1_dir, "train/l1")) == 2 and not logged(plain_dir, "train/l1")
    assert all("train/l1" in row for row in saved_history(l1_dir))
    assert l1["train/loss"] != plain["train/loss"]
    assert l1["val/loss"] != plain["val/loss"]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_weight_decay_reaches_the_optimizer(optimizer):
    cfg = composed(*TINY, f"optimizer={optimizer}", "regularization=l2")
    data, module = build(cfg)
    trainer = tiny_trainer()
    trainer.fit(module, datamodule=data)
    groups = trainer.optimizers[0].param_groups
    assert all(g["weight_decay"] == 0.0005 for g in groups)
    cfg = composed(*TINY, f"optimizer={optimizer}", "regularization.weight_decay=0.02")
    _, module = build(cfg)
    optimizer_obj = module.configure_optimizers()["optimizer"]
    assert optimizer_obj.param_groups[0]["weight_decay"] == 0.02


# every optimizer and scheduler option


@pytest.mark.parametrize(
    "option, cls, knobs",
    [
        ("sgd", torch.optim.SGD, {"lr": 0.05, "momentum": 0.0}),
        ("momentum", torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": False}),
        ("adam", torch.optim.Adam, {"lr": 0.001, "betas": (0.9, 0.999)}),
        ("adamw", torch.optim.AdamW, {"lr": 0.001}),
        ("rmsprop", torch.optim.RMSprop, {"lr": 0.001, "alpha": 0.99}),
    ],
)
def test_every_optimizer_option_builds_and_trains_a_step(option, cls, knobs):
    cfg = composed(*TINY, f"optimizer={option}", "scheduler=none", "model=mlp", "model.width=32",
                   "regularization.weight_decay=0.001")
    data, module = build(cfg)
    before = net_weights(module)
    trainer = tiny_trainer()
    trainer.fit(module, datamodule=data)
    optimizer = trainer.optimizers[0]
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    for key, value in knobs.items():
        assert (tuple(group[key]) if key == "betas" else group[key]) == value, key
    assert group["weight_decay"] == 0.001
    assert trainer.global_step == 1
    after = net_weights(module)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert math.isfinite(module.history[0]["train/loss"])


@pytest.mark.parametrize(
    "option, cls, lr_after_one_epoch",
    [
        ("none", None, 0.1),
        ("step", torch.optim.lr_scheduler.StepLR, 0.01),  # step_size=1, gamma=0.1
        ("exponential", torch.optim.lr_scheduler.ExponentialLR, 0.09),  # gamma=0.9
        ("cosine", torch.optim.lr_scheduler.CosineAnnealingLR, 0.0),  # T_max = max_epochs = 1
        ("plateau", torch.optim.lr_scheduler.ReduceLROnPlateau, 0.1),  # first epoch sets the best
    ],
)
def test_every_scheduler_option_builds_and_trains_a_step(option, cls, lr_after_one_epoch):
    extra = ["scheduler.step_size=1"] if option == "step" else []
    cfg = composed(*TINY, f"scheduler={option}", *extra, "trainer.max_epochs=1", "model=mlp", "model.width=32",
                   "optimizer=sgd", "optimizer.lr=0.1")
    data, module = build(cfg)
    before = net_weights(module)
    trainer = tiny_trainer(max_epochs=cfg.trainer.max_epochs)
    trainer.fit(module, datamodule=data)
    configs = trainer.lr_scheduler_configs
    if cls is None:
        assert configs == []
    else:
        assert len(configs) == 1 and type(configs[0].scheduler) is cls
        assert configs[0].interval == "epoch"
        if option == "plateau":
            assert configs[0].monitor == "val/loss" and configs[0].scheduler.mode == "min"
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(lr_after_one_epoch, abs=1e-12)
    assert trainer.global_step == 1
    after = net_weights(module)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_no_epoch_limit_with_the_default_cosine_scheduler_keeps_training():
    from dlopt.checks import check

    cfg = composed(*QUIET, "trainer.max_epochs=-1", "model=mlp", "model.width=16")
    try:
        check(cfg)
    except UserError:
        return  # refusing the combination up front, naming the key, is also correct
    data, module = build(cfg)
    tiny_trainer(max_epochs=3).fit(module, datamodule=data)  # the first epochs of an unlimited run
    assert all(group["lr"] > 0 for group in module.trainer.optimizers[0].param_groups)
    assert all(row["lr"] > 0 for row in module.history)


# lr=1e-30 leaves the weights unchanged, so val/loss never improves after the first epoch: patience=0 stops
# the run after its second epoch, whose weights are not the best
STALLED = ("trainer.max_epochs=6", "callbacks.early_stopping.patience=0", "optimizer.lr=1e-30", "model=mlp",
           "model.width=16")


def test_early_stopping_ends_the_run(trained):
    _, run_dir, _ = trained(*STALLED)
    metrics = read_metrics(run_dir)
    assert metrics["epochs"] == 2 and metrics["best_epoch"] == 1
    assert len(logged(run_dir, "val/loss")) == 2


def test_stopped_early_is_recorded_in_metrics(trained):
    _, run_dir, _ = trained(*STALLED)
    assert read_metrics(run_dir)["stopped_early"] is True


def test_last_checkpoint_holds_the_last_epoch(trained):
    _, run_dir, _ = trained(*STALLED)
    last = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert last["epoch"] == read_metrics(run_dir)["epochs"] - 1  # Lightning's own count, from 0
    assert [row["epoch"] for row in last["dlopt"]["history"]] == [1, 2]


# a loss that blows up


def test_a_non_finite_loss_raises_user_error_naming_epoch_and_step(tmp_path):
    cfg = composed(*TINY, "model=mlp", "model.norm=none", "optimizer=sgd", "optimizer.lr=1e8", "scheduler=none",
                   "trainer.limit_train_batches=10")
    with pytest.raises(UserError, match=r"at epoch 1, step \d+") as err:  # epochs count from 1
        train(cfg, tmp_path)
    message = str(err.value)
    assert "optimizer.lr=1e+08" in message and ("nan" in message or "inf" in message)
    assert "\n" not in message
    assert not (tmp_path / "metrics.json").exists()


def test_the_classifier_is_a_lightning_module_for_any_net():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 3))
    module = Classifier(net, lambda params, weight_decay: torch.optim.SGD(params, lr=0.1, weight_decay=weight_decay),
                        num_classes=3, input_shift=torch.zeros(6), input_scale=torch.full((6,), 2.0))
    x = torch.randn(4, 6)
    torch.testing.assert_close(module(x), net(x / 2))
    assert isinstance(module.configure_optimizers(), torch.optim.SGD)


def test_metrics_hold_the_parameter_count_and_flops_per_sample(trained):
    cfg, run_dir, _ = trained()
    metrics = read_metrics(run_dir)
    _, module = build(cfg)
    assert metrics["params"] == sum(p.numel() for p in module.net.parameters())
    # the first conv alone: 2 * (kernel 3x3 x 1 input channel) * width 32 outputs * 8x8 positions
    assert metrics["flops_per_sample"] > 2 * 9 * 32 * 64
    _, wide_module = build(composed(*TINY, "model.width=64"))
    from dlopt.training.run import summarize

    assert summarize(wide_module.net, (1, 8, 8)).total_flops > 2 * metrics["flops_per_sample"]
