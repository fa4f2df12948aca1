"""Training control, in process: early stopping and its reasons, a NaN loss, gradient clipping
(norm, value, adaptive) and its logged effect, accumulation, precision, weight averaging.
Real tiny trainings on the CPU; end-to-end resume and compile tests are in test_resume.py."""

from __future__ import annotations

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_training import QUIET, composed, evaluate, load_checkpoint, read_metrics

from dlopt.checks import check
from dlopt.errors import UserError
from dlopt.training.checkpoint_io import AtomicCheckpointIO
from dlopt.training.clipping import adaptive_clip_grad
from dlopt.training.run import train
from faults import BlowUpAt

SMALL = ["trainer.limit_train_batches=4", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", *QUIET]


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard shows the run (events after a resume's purge_step hidden)."""
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def run(tmp_path, *overrides, callbacks=()):
    cfg = composed(*SMALL, *overrides)
    check(cfg)
    tmp_path.mkdir(parents=True, exist_ok=True)
    train(cfg, tmp_path, callbacks=callbacks)
    return read_metrics(tmp_path)


# --- early stopping ------------------------------------------------------------------------------------


def test_a_run_that_trains_to_the_end_says_so(tmp_path):
    metrics = run(tmp_path, "trainer.max_epochs=2")
    assert metrics["stopped_early"] is False and metrics["stopped_epoch"] is None
    assert metrics["stop_reason"] == "trainer.max_epochs=2 reached" and metrics["epochs"] == 2


def test_early_stopping_patience_and_min_delta_stop_the_run_with_the_reason(tmp_path):
    # no epoch improves val/loss by more than 10: the second epoch exhausts patience=1
    metrics = run(tmp_path, "trainer.max_epochs=8", "callbacks.early_stopping.patience=1",
                  "callbacks.early_stopping.min_delta=10")
    assert metrics["stopped_early"] is True and metrics["stopped_epoch"] == 2 and metrics["epochs"] == 2
    assert metrics["stop_reason"].startswith("early stopping: Monitored metric val/loss did not improve")
    assert "Signaling" not in metrics["stop_reason"]


def test_early_stopping_follows_the_top_level_monitor_and_mode():
    cfg = composed(*SMALL, "monitor=val/acc", "mode=max")
    assert cfg.callbacks.early_stopping.monitor == "val/acc" and cfg.callbacks.early_stopping.mode == "max"


def test_an_early_stopping_monitor_that_is_never_logged_names_the_logged_metrics(tmp_path):
    with pytest.raises(UserError) as err:
        run(tmp_path, "trainer.max_epochs=2", "callbacks.early_stopping.monitor=val/accc")
    message = str(err.value)
    assert message.startswith("callbacks.early_stopping.monitor=val/accc is not a metric dlopt logs (did you mean "
                              "val/acc?)")
    assert "val/loss" in message and "train/loss" in message and "\n" not in message
    assert not (tmp_path / "metrics.json").exists()


def test_a_non_finite_loss_stops_the_run_and_tests_its_best_epoch(tmp_path):
    metrics = run(tmp_path, "trainer.max_epochs=5", callbacks=[BlowUpAt(epoch=2)])
    # BlowUpAt counts epochs from 0 (Lightning's current_epoch), metrics.json from 1: the third epoch diverged
    assert metrics["stopped_early"] is True and metrics["stopped_epoch"] == 3 and metrics["epochs"] == 2
    assert "training loss became" in metrics["stop_reason"] and "epoch 3" in metrics["stop_reason"]
    assert metrics["best_epoch"] <= 2
    assert all(math.isfinite(metrics[k]) for k in ("test/loss", "test/acc", "objective"))
    weights = load_checkpoint(tmp_path / "checkpoints" / "best.ckpt")["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_a_non_finite_loss_fails_the_run_without_check_finite(tmp_path):
    with pytest.raises(UserError, match=r"the training loss became (nan|inf|-inf) at epoch 3"):
        run(tmp_path, "trainer.max_epochs=5", "callbacks.early_stopping.check_finite=false",
            callbacks=[BlowUpAt(epoch=2)])
    assert not (tmp_path / "metrics.json").exists()


# --- clipping --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clipped(tmp_path_factory):
    runs = {}
    for name, overrides in {"none": [], "norm": ["trainer.gradient_clip_val=0.05"],
                            "value": ["trainer.gradient_clip_val=0.001", "trainer.gradient_clip_algorithm=value"],
                            "agc": ["clip=agc", "clip.factor=0.001"]}.items():
        run_dir = tmp_path_factory.mktemp(name)
        run(run_dir, "trainer.max_epochs=1", "trainer.log_every_n_steps=1", *overrides)
        runs[name] = scalars(run_dir)
    return runs


def test_the_gradient_norm_is_logged_every_n_steps(tmp_path, clipped):
    assert [step for step, _ in clipped["none"]["grad/norm"]] == [0, 1, 2, 3]
    assert "grad/norm_clipped" not in clipped["none"]
    run(tmp_path, "trainer.max_epochs=2", "trainer.log_every_n_steps=3")
    assert [step for step, _ in scalars(tmp_path)["grad/norm"]] == [0, 3, 6]


def test_norm_clipping_bounds_the_logged_norm(clipped):
    before, after = clipped["norm"]["grad/norm"], clipped["norm"]["grad/norm_clipped"]
    assert all(b > 0.05 for _, b in before)
    assert all(a == pytest.approx(0.05, rel=1e-3) for _, a in after)


def test_value_clipping_and_agc_shrink_the_gradient(clipped):
    for name in ("value", "agc"):
        pairs = zip(clipped[name]["grad/norm"], clipped[name]["grad/norm_clipped"])
        assert all(a < b for (_, b), (_, a) in pairs), name


def test_adaptive_clipping_bounds_each_unit_by_its_weight_norm():
    layer = torch.nn.Linear(5, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0] * 5, [0.0] * 5, [2.0] * 5]))
    layer.weight.grad = torch.full((3, 5), 10.0)
    layer.bias.grad = torch.full((3,), 1e-6)
    bias_grad = layer.bias.grad.clone()
    adaptive_clip_grad(layer.parameters(), factor=0.1, eps=1e-3)
    norms = layer.weight.grad.norm(dim=1)
    limits = 0.1 * torch.tensor([5 ** 0.5, 1e-3, 2 * 5 ** 0.5])
    torch.testing.assert_close(norms, limits)
    torch.testing.assert_close(layer.bias.grad, bias_grad)  # already below its limit: untouched


@pytest.mark.parametrize("override, needle", [
    ("trainer.gradient_clip_val=0", "trainer.gradient_clip_val=0 is not valid: expected null (no clipping) or a number > 0"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 is not valid"),
    ("trainer.gradient_clip_algorithm=norms", "trainer.gradient_clip_algorithm=norms is not valid; choose one of norm, value"),
    ("clip.factor=0", "clip.factor=0 is not valid"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 is not valid: expected an integer >= 1"),
    ("callbacks.early_stopping.min_delta=-0.1", "callbacks.early_stopping.min_delta=-0.1 is not valid"),
    ("trainer.precision=17", "trainer.precision=17 is not valid; choose one of 32-true, bf16-mixed, 16-mixed"),
])
def test_bad_training_control_values_are_named(override, needle):
    with pytest.raises(UserError) as err:
        check(composed(override))
    assert str(err.value).startswith(needle)


# --- accumulation, precision, weight averaging ------------------------------------------------------------


def test_accumulation_takes_one_optimizer_step_per_n_batches(tmp_path):
    run(tmp_path, "trainer.max_epochs=2", "trainer.accumulate_grad_batches=2")
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4  # 2 epochs x 4 batches / 2


def test_bf16_mixed_precision_trains(tmp_path):
    metrics = run(tmp_path, "trainer.max_epochs=2", "trainer.precision=bf16-mixed")
    assert all(math.isfinite(metrics[k]) for k in ("test/loss", "val/loss"))
    assert metrics["train/acc"] > 0.3  # learns: 10 classes, chance is 0.1


@pytest.mark.parametrize("averaging", ["ema", "swa"])
def test_weight_averaging_is_what_validation_checkpoints_and_the_test_use(tmp_path, averaging):
    overrides = [f"callbacks=[default,{averaging}]", "trainer.max_epochs=3"]
    if averaging == "swa":
        overrides.append("callbacks.swa.start_epoch=1")
    metrics = run(tmp_path, *overrides)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    raw, averaged = last["current_model_state"], last["state_dict"]
    assert any(not torch.equal(raw[k], averaged[k]) for k in averaged if k.startswith("net."))
    (tmp_path / "eval").mkdir()
    evaluated = evaluate(composed(f"run={tmp_path}", name="eval"), tmp_path / "eval")
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"])
    assert evaluated["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-5)


def test_swa_validates_the_raw_weights_until_it_starts(tmp_path):
    # start_epoch=5 of 3: no average ever exists, so the run is the plain run
    plain = run(tmp_path / "plain", "trainer.max_epochs=3")
    late = run(tmp_path / "late", "callbacks=[default,swa]", "callbacks.swa.start_epoch=5", "trainer.max_epochs=3")
    assert late["val/loss"] == pytest.approx(plain["val/loss"]) and late["test/acc"] == pytest.approx(plain["test/acc"])


def test_a_checkpoint_that_fails_to_save_leaves_the_previous_file_whole(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    with pytest.raises(Exception):  # pickling fails halfway through writing
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(1000), "z": lambda: 0}, path)
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 1 and torch.equal(saved["w"], torch.ones(1000))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
