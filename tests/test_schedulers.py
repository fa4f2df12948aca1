"""Tests of the learning-rate schedules: scheduler=onecycle (stepped every optimizer step, total_steps
from the run) and scheduler.warmup_epochs (LinearLR then the schedule, in SequentialLR).

Tiny real trainings on the CPU; the bad inputs go through the installed `dlopt` command."""

import math
from itertools import pairwise

import lightning.pytorch as L
import pytest
import torch
from test_bad_inputs import assert_fails_clearly
from test_training import QUIET, composed

from dlopt.errors import UserError
from dlopt.training.run import build, train

LR = 0.01
SMALL = [*QUIET, "model=mlp", "model.width=16", "optimizer=sgd", f"optimizer.lr={LR}", "logger=csv",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


class Watch(L.Callback):
    """The lr of every optimizer step, and at the end the run's scheduler configs and history rows."""

    def __init__(self):
        self.lrs, self.configs, self.history = [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_end(self, trainer, pl_module):
        self.configs, self.history = list(trainer.lr_scheduler_configs), list(pl_module.history)


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """watched(*overrides) -> (Watch, run_dir) of a run with SMALL and the overrides; each trains once."""
    cache = {}

    def run(*overrides):
        if overrides not in cache:
            watch, run_dir = Watch(), tmp_path_factory.mktemp("run")
            train(composed(*SMALL, *overrides), run_dir, callbacks=[watch])
            cache[overrides] = watch, run_dir
        return cache[overrides]

    return run


# 2 epochs x 5 batches = 10 optimizer steps; pct_start=0.3 puts the peak on step 2 (0.3 * 10 - 1)
ONECYCLE = ("scheduler=onecycle", "trainer.max_epochs=2", "trainer.limit_train_batches=5")


def test_onecycle_steps_every_batch_and_peaks_at_optimizer_lr(watched):
    watch, _ = watched(*ONECYCLE)
    [config] = watch.configs
    assert type(config.scheduler) is torch.optim.lr_scheduler.OneCycleLR and config.interval == "step"
    assert config.scheduler.total_steps == 10  # the run's optimizer steps, not the placeholder of the dry run
    lrs = watch.lrs
    assert len(lrs) == 10 and len(set(lrs)) == 10  # a new lr every step, also within an epoch
    peak = lrs.index(max(lrs))
    assert peak == 2 and lrs[peak] == pytest.approx(LR)
    assert all(a < b for a, b in pairwise(lrs[:peak + 1]))  # rises
    assert all(a > b for a, b in pairwise(lrs[peak:]))  # then falls
    assert lrs[0] == pytest.approx(LR / 25)  # div_factor
    assert lrs[-1] < LR / 25
    assert [row["lr"] for row in watch.history] == [lrs[0], lrs[5]]  # the history's lr: an epoch's first step


def test_onecycle_keeps_optimizer_momentum(watched):
    """cycle_momentum=false: optimizer=sgd keeps its momentum (0) instead of OneCycleLR's 0.85-0.95."""
    watch, _ = watched(*ONECYCLE)
    assert all(group["momentum"] == 0 for group in watch.configs[0].scheduler.optimizer.param_groups)


def test_onecycle_keeps_the_backbone_lr_scale_of_transfer(watched):
    """transfer.strategy=finetune: the backbone's group peaks at optimizer.lr x backbone_lr_scale."""
    _, source = watched(*ONECYCLE)
    cfg = composed(*SMALL, *ONECYCLE, f"transfer.from={source}", "transfer.strategy=finetune",
                   "transfer.backbone_lr_scale=0.1")
    _, module = build(cfg)
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]  # no trainer: total_steps is 1
    assert [group["max_lr"] for group in scheduler.optimizer.param_groups] == pytest.approx([LR, LR * 0.1])


def test_onecycle_refuses_an_epoch_warmup():
    """OneCycleLR warms up itself (pct_start): a warmup_epochs added with + is refused in one line."""
    cfg = composed(*SMALL, *ONECYCLE, "+scheduler.warmup_epochs=1")
    _, module = build(cfg)
    with pytest.raises(UserError, match=r"^scheduler.warmup_epochs=1: OneCycleLR .*pct_start.*$"):
        module.configure_optimizers()


def cosine(epoch: int, t_max: int) -> float:
    return LR * (1 + math.cos(math.pi * epoch / t_max)) / 2


WARMUP = ("scheduler=cosine", "trainer.max_epochs=5", "trainer.limit_train_batches=2")


def test_warmup_rises_linearly_then_follows_the_cosine(watched):
    watch, _ = watched(*WARMUP, "scheduler.warmup_epochs=2")
    [config] = watch.configs
    assert type(config.scheduler) is torch.optim.lr_scheduler.SequentialLR and config.interval == "epoch"
    epoch_lrs = [row["lr"] for row in watch.history]
    assert [row["epoch"] for row in watch.history] == [1, 2, 3, 4, 5]
    # epoch e < 2 at lr x (e+1)/3, then the cosine (T_max = max_epochs) from its start
    assert epoch_lrs == pytest.approx([LR / 3, 2 * LR / 3, cosine(0, 5), cosine(1, 5), cosine(2, 5)])
    assert epoch_lrs[0] < epoch_lrs[1] < epoch_lrs[2] > epoch_lrs[3] > epoch_lrs[4]
    assert watch.lrs[0::2] == epoch_lrs and watch.lrs[1::2] == epoch_lrs  # stepped per epoch, not per batch


def test_no_warmup_leaves_the_schedule_as_it_was(watched):
    watch, _ = watched(*WARMUP, "scheduler.warmup_epochs=0")
    [config] = watch.configs
    assert type(config.scheduler) is torch.optim.lr_scheduler.CosineAnnealingLR and config.interval == "epoch"
    assert [row["lr"] for row in watch.history] == pytest.approx([cosine(e, 5) for e in range(5)])


@pytest.mark.parametrize("option, lrs", [
    ("step", [LR / 2, LR, LR, LR * 0.1]),  # step_size=2 from epoch 1 on
    ("exponential", [LR / 2, LR, LR * 0.9, LR * 0.81]),
])
def test_warmup_composes_with_other_schedules(watched, option, lrs):
    watch, _ = watched(f"scheduler={option}", "scheduler.warmup_epochs=1", "trainer.max_epochs=4",
                       "trainer.limit_train_batches=1", *(["scheduler.step_size=2"] if option == "step" else []))
    assert [row["lr"] for row in watch.history] == pytest.approx(lrs)


# --- bad inputs through the installed dlopt: exit 2, one line naming the key, nothing left behind -----------


@pytest.mark.parametrize("overrides, needles", [
    (["scheduler.warmup_epochs=-1"], ["scheduler.warmup_epochs=-1 is not valid: expected an integer >= 0"]),
    (["trainer.max_epochs=3", "scheduler.warmup_epochs=3"],
     ["scheduler.warmup_epochs=3 is not below trainer.max_epochs=3"]),
    (["scheduler=onecycle", "scheduler.pct_start=1.5"], ["scheduler.pct_start=1.5 is not valid", "(0, 1)"]),
    (["scheduler=plateau", "scheduler.warmup_epochs=2"],
     ["scheduler.warmup_epochs is not a key of scheduler", "+scheduler.warmup_epochs=2"]),
    (["scheduler=onecycle", "scheduler.warmup_epochs=2"],
     ["scheduler.warmup_epochs is not a key of scheduler", "pct_start"]),
])
def test_bad_schedule_settings_are_one_line(in_process, tmp_path, overrides, needles):
    result = in_process.run("train", *in_process.TINY, *overrides, cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, *needles)
    assert result.returncode == 2, result.describe()
