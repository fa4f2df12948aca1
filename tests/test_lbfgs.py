"""optimizer=lbfgs: torch.optim.LBFGS through Lightning's closure, which it evaluates several times per step.

Logistic regression (model=linear) on scikit-learn's wine table, trained by the real `dlopt` command in a temporary
folder and checked against scikit-learn's LogisticRegression on the same split and against recomputation: train
metrics count each step once, the L2 penalty that stands in for weight decay is (weight_decay / 2) * ||w||^2, a
resumed run goes on as if never interrupted. In-process tests cover the module's side (param groups, divergence).
"""

from __future__ import annotations

import csv as csvlib
import json
import os
import signal
import subprocess

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dlopt import saved_run
from dlopt.apps import config_dir
from dlopt.data.table import csv
from dlopt.errors import UserError
from dlopt.hydra_glue import register_resolvers
from dlopt.training.module import Diverged
from dlopt.training.run import build
from dlopt.training.transfer import Transfer

# full batch (data.batch_size larger than the 124 training rows); scheduler=none: the resumed run compares with an
# uninterrupted one of another length; max_iter=5: 20 L-BFGS iterations in 4 epochs, not yet converged at epoch 2,
# so a resume that lost the optimizer's curvature history would go on differently
LBFGS = ("model=linear", "optimizer=lbfgs", "optimizer.max_iter=5", "scheduler=none", "data.batch_size=1000",
         "trainer.log_every_n_steps=1")
WEIGHT_DECAY = 0.01
QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """scikit-learn's wine table as a CSV file: 13 numeric columns and `target` (3 classes, 178 rows)."""
    from sklearn.datasets import load_wine

    bunch = load_wine()
    path = tmp_path_factory.mktemp("wine") / "wine.csv"
    with open(path, "w", newline="") as f:
        writer = csvlib.writer(f)
        writer.writerow([*bunch.feature_names, "target"])
        writer.writerows([*x.tolist(), int(y)] for x, y in zip(bunch.data, bunch.target))
    return path


def data_args(wine) -> tuple[str, ...]:
    return "data=csv", f"data.path={wine}", "data.target=target"


@pytest.fixture(scope="module")
def runs(cli, wine):
    """name -> run folder, each trained once per module when a test first asks for it."""
    folder, made = wine.parent, {}
    overrides = {
        "plain": ("trainer.max_epochs=4",),
        "short": ("trainer.max_epochs=2",),
        "l2": ("trainer.max_epochs=4", "optimizer.max_iter=20", f"regularization.weight_decay={WEIGHT_DECAY}",
               "regularization.exclude_norm_bias=true"),
    }

    def run(name):
        if name not in made:
            made[name] = cli.train(*data_args(wine), *LBFGS, *overrides[name], cwd=folder)
        return made[name]

    return run


def train_split(wine):
    """The training split of the runs (data.split_seed = seed = 0)."""
    return csv(path=str(wine), target="target", split_seed=0).splits["train"]


def last_state(run_dir) -> dict[str, torch.Tensor]:
    return saved_run.read_checkpoint(run_dir / "checkpoints" / "last.ckpt", "last.ckpt")["state_dict"]


def sklearn_fit(x, y, l2: float):
    """LogisticRegression with the penalty (l2 / 2) * ||W||^2 on the mean loss (scikit-learn: C = 1 / (l2 * n));
    None: no penalty. The intercept is never penalized, as the bias with exclude_norm_bias."""
    from sklearn.linear_model import LogisticRegression

    penalty = {"C": 1.0 / (l2 * len(y))} if l2 else {"C": 1.0}  # no penalty: scikit-learn's default C
    return LogisticRegression(**penalty, tol=1e-10, max_iter=10_000).fit(x.numpy(), y.numpy())


# what a run reaches


def test_logistic_regression_on_wine_is_as_accurate_as_scikit_learns(cli, runs, wine):
    run = runs("plain")
    metrics = cli.metrics(run)
    cli.assert_finite(metrics)
    assert metrics["steps"] == 4 and metrics["batches_per_epoch"] == 1  # full batch: one step per epoch
    # scikit-learn's LogisticRegression (C=1) on the same split, standardized by the training split as dlopt does
    state = last_state(run)
    shift, scale = state["input_shift"], state["input_scale"]
    x, y = train_split(wine)
    test_x, test_y = csv(path=str(wine), target="target", split_seed=0).splits["test"]
    reference = sklearn_fit((x - shift) / scale, y, l2=0).score(((test_x - shift) / scale).numpy(), test_y.numpy())
    assert reference >= 0.9
    assert metrics["test/acc"] >= min(0.9, reference - 0.04), (metrics["test/acc"], reference)  # 1 test row in 27


def test_train_metrics_count_each_step_once_not_each_closure_evaluation(cli, runs, wine):
    """Epoch 1's train/loss and train/acc are those of the initial weights on the whole training split: the first
    of the step's evaluations. Averaged over L-BFGS's evaluations (up to 6 with max_iter=5, each at better weights)
    they would be lower and higher."""
    run = runs("plain")
    history = json.loads((run / "history.json").read_text())
    _, module = build(OmegaConf.load(run / ".hydra" / "config.yaml"))  # the run's initial weights (its seed)
    x, y = train_split(wine)
    with torch.no_grad():
        logits = module(x)
    assert history[0]["train/loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert history[0]["train/acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item(), abs=1e-6)
    assert history[1]["train/loss"] < history[0]["train/loss"] / 2  # and the step did train
    # the gradient norm, logged every step (trainer.log_every_n_steps=1), once per step, not once per evaluation
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for path in sorted(run.rglob("events.out.tfevents.*")):
        events = EventAccumulator(str(path))
        events.Reload()
        if "grad/norm" in events.Tags()["scalars"]:
            steps += [event.step for event in events.Scalars("grad/norm")]
    assert steps == [0, 1, 2, 3]


def test_l2_with_lbfgs_is_the_penalty_scikit_learn_minimizes(runs, wine):
    """LBFGS takes no weight_decay: regularization.weight_decay becomes (weight_decay / 2) * ||W||^2 in the loss,
    not on the bias (exclude_norm_bias), which is scikit-learn's LogisticRegression with C = 1 / (weight_decay * n):
    the weights it learns are scikit-learn's, and smaller than without the penalty."""
    state, plain = last_state(runs("l2")), last_state(runs("plain"))
    weight, shift, scale = state["net.head.weight"], state["input_shift"], state["input_scale"]
    assert weight.norm() < plain["net.head.weight"].norm() / 2
    x, y = train_split(wine)
    reference = sklearn_fit((x - shift) / scale, y, l2=WEIGHT_DECAY)
    expected = torch.tensor(reference.coef_, dtype=torch.float32)
    assert torch.allclose(weight, expected, atol=0.01 * expected.abs().max().item()), (weight, expected)  # 1e-3
    # the bias is free (not decayed): the probabilities agree, not only the weights
    probabilities = torch.softmax(((x - shift) / scale) @ weight.T + state["net.head.bias"], 1)
    assert torch.allclose(probabilities, torch.tensor(reference.predict_proba(((x - shift) / scale).numpy()),
                                                      dtype=torch.float32), atol=2e-3)


def test_a_resumed_lbfgs_run_goes_on_as_if_never_interrupted(cli, runs):
    """The checkpoint keeps LBFGS's state (its curvature history): 2 epochs, then resumed to 4, make the run of 4."""
    short, plain = runs("short"), runs("plain")
    optimizer = saved_run.read_checkpoint(short / "checkpoints" / "last.ckpt", "last.ckpt")["optimizer_states"][0]
    assert optimizer["state"][0]["n_iter"] == 10 and len(optimizer["state"][0]["old_dirs"]) > 0
    cli.ok("train", f"resume={short}", "trainer.max_epochs=4", cwd=short.parents[3])
    metrics, reference = cli.metrics(short), cli.metrics(plain)
    assert metrics["epochs"] == 4 and metrics["steps"] == 4
    resumed, uninterrupted = (saved_run.read_checkpoint(run / "checkpoints" / "last.ckpt", "last.ckpt")
                              for run in (short, plain))
    assert [row["epoch"] for row in resumed["dlopt"]["history"]] == [1, 2, 3, 4]
    for row, same in zip(resumed["dlopt"]["history"], uninterrupted["dlopt"]["history"]):
        for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
            assert row[key] == pytest.approx(same[key], rel=1e-5, abs=1e-7), (row, same)
    for key, tensor in resumed["state_dict"].items():
        assert torch.allclose(tensor, uninterrupted["state_dict"][key], rtol=1e-5, atol=1e-6), key
    assert resumed["optimizer_states"][0]["state"][0]["n_iter"] == 20
    assert metrics["test/acc"] == pytest.approx(reference["test/acc"])


def test_two_processes_step_together_and_as_one_process_does(cli, wine):
    """trainer=ddp: each process's L-BFGS sees the mean loss of both, as it sees their mean gradient. With its own
    loss, each process's line search chose its own steps (a small MLP: the two networks drift apart from the first
    step, silently, or the processes wait forever for each other's gradients)."""
    argv = [cli.exe, "train", *cli.TINY, *data_args(wine), *LBFGS, "model=mlp", "model.width=8", "model.depth=1",
            "trainer.max_epochs=4", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
    folder = wine.parent / "ddp"
    folder.mkdir()
    proc = subprocess.Popen(argv, cwd=folder, env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # its own session: a hung rank is killed with it
    try:
        output, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"trainer=ddp optimizer=lbfgs still ran after 300 s (killed: its processes wait for each other)\n"
                    f"{output[-3000:]}")
    assert proc.returncode == 0, output[-3000:]
    (run,) = cli.run_dirs(folder)
    both = json.loads((run / "history.json").read_text())
    # 62 training rows per process: the objective of one process on all 124, so its steps, up to rounding (epoch k's
    # train/loss is the loss at the start of step k; the 27 validation rows are not split evenly)
    data, module = build(OmegaConf.load(run / ".hydra" / "config.yaml"))
    fit(module, data, epochs=4)
    assert [row["train/loss"] for row in both] == pytest.approx([row["train/loss"] for row in module.history],
                                                                rel=1e-3)


# the module's side, in process


def composed(wine, *overrides, optimizer=LBFGS):
    register_resolvers()  # conf/ calls dlopt's resolvers by name
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose("train", overrides=[*QUIET, *data_args(wine), *optimizer, *overrides])


def fit(module, data, epochs: int = 1) -> L.Trainer:
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    return trainer


def test_weight_decay_without_a_weight_decay_argument_is_a_penalty_on_the_decayed_parameters(wine):
    _, module = build(composed(wine, "model=mlp", "model.width=8", "regularization.weight_decay=0.1",
                               "regularization.exclude_norm_bias=true"))
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.LBFGS) and len(optimizer.param_groups) == 1  # LBFGS takes one group
    assert "weight_decay" not in optimizer.param_groups[0]
    assert {id(p) for p in module.l2_params} == {id(p) for p in module.parameters() if p.dim() > 1}
    # the same on every parameter without exclude_norm_bias, none without weight decay, and none for an optimizer
    # that decays itself
    for overrides, expected in ((["regularization.weight_decay=0.1"], list(module.parameters())), ([], [])):
        _, other = build(composed(wine, "model=mlp", "model.width=8", *overrides))
        other.configure_optimizers()
        assert [p.shape for p in other.l2_params] == [p.shape for p in expected], overrides
    _, sgd = build(composed(wine, "model=mlp", "regularization.weight_decay=0.1", optimizer=["optimizer=sgd"]))
    assert sgd.configure_optimizers()["optimizer"].param_groups[0]["weight_decay"] == 0.1 and not sgd.l2_params


def test_the_penalty_is_in_the_loss_the_line_search_sees(wine):
    data, module = build(composed(wine, "regularization.weight_decay=0.5"))
    module.configure_optimizers()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad():
        loss = module.training_step(batch, 0)
        plain = F.cross_entropy(module(batch[0]), batch[1])
    weights = sum(p.square().sum() for p in module.parameters())  # the bias too: exclude_norm_bias=false
    assert loss.item() == pytest.approx(plain.item() + 0.25 * weights.item(), rel=1e-6)


def test_param_groups_that_differ_in_settings_only_are_refused_in_one_line(wine):
    """transfer.strategy=finetune trains the backbone at its own lr: a second param group, which LBFGS refuses;
    groups with the same settings become one."""
    _, module = build(composed(wine, "model=mlp", "model.width=8"))
    module.transfer = Transfer(source="x", strategy="finetune", backbone_lr_scale=0.1, unfreeze_at_epoch=2,
                               trainable=[module.net.head], loaded=0, fresh=[])
    with pytest.raises(UserError, match=r"backbone_lr_scale=0\.1.*set transfer\.backbone_lr_scale=1\.0") as err:
        module.configure_optimizers()
    assert "\n" not in str(err.value)
    module.transfer.backbone_lr_scale = 1.0
    optimizer = module.configure_optimizers()
    assert len(optimizer.param_groups) == 1
    assert len(optimizer.param_groups[0]["params"]) == len(list(module.parameters()))


def test_a_line_search_free_lbfgs_that_blows_up_is_a_divergence_naming_the_evaluation(wine):
    data, module = build(composed(wine, "optimizer.line_search_fn=null", "optimizer.lr=1e30"))
    with pytest.raises(Diverged, match=r"epoch 1, step 0, evaluation \d+ of the step .*"
                                       r"try optimizer\.line_search_fn=strong_wolfe"):
        fit(module, data)

