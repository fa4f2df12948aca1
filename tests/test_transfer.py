"""Transfer learning (transfer.from, transfer.strategy): real tiny runs of the `dlopt` command.

One source run (digits 0-4) is shared by every test; each strategy runs once and the tests read
its checkpoints: what stayed equal to the source, what trained, the optimizer's param groups.
Loading a state_dict or torchvision file is checked in-process with `build`. Each bad input
exits 2 with one line and leaves no run folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from test_bad_inputs import assert_fails_clearly

from dlopt.apps import config_dir
from dlopt.checks import check
from dlopt.hydra_glue import register_resolvers
from dlopt.training.run import build

HEAD = ("head.3.weight", "head.3.bias")  # the cnn's Linear classifier
EVERY_EPOCH = ("callbacks.last_checkpoint.filename=null", "callbacks.last_checkpoint.save_top_k=-1")  # epoch=N-step=M.ckpt


def network(ckpt: Path) -> dict[str, torch.Tensor]:
    """The network's tensors in a dlopt checkpoint, named as in the model."""
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    return {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}


def optimizer_groups(ckpt: Path) -> list[dict]:
    return torch.load(ckpt, weights_only=True)["optimizer_states"][0]["param_groups"]


def backbone_equal(a: dict, b: dict) -> list[str]:
    """Names of the backbone tensors (everything but the head) that differ between two networks."""
    assert a.keys() == b.keys()
    return [k for k in a if k not in HEAD and not torch.equal(a[k], b[k])]


def composed(*overrides: str):
    register_resolvers()  # conf/ calls dlopt's resolvers by name
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose("train", overrides=list(overrides))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("transfer")


@pytest.fixture(scope="module")
def source(cli, work) -> Path:
    """A finished run on digits 0-4: the source of every transfer below."""
    return cli.train("data.classes=[0,1,2,3,4]", cwd=work)


@pytest.fixture(scope="module")
def source_net(source) -> dict[str, torch.Tensor]:
    return network(source / "checkpoints" / "best.ckpt")


# --- strategies -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probed(cli, work, source) -> Path:
    """linear_probe on digits 5-9 (same class count, other classes), plateau scheduler."""
    return cli.train("data.classes=[5,6,7,8,9]", f"transfer.from={source}", "transfer.strategy=linear_probe",
                     "scheduler=plateau", cwd=work)


def test_linear_probe_keeps_the_backbone_and_trains_a_fresh_head(cli, probed, source, source_net):
    net = network(probed / "checkpoints" / "best.ckpt")
    assert backbone_equal(net, source_net) == []  # weights and batch-norm running statistics
    assert any("running_mean" in k for k in net)
    for k in HEAD:  # same shape, but the source learnt other classes: a fresh head, trained
        assert net[k].shape == source_net[k].shape and not torch.equal(net[k], source_net[k])
    groups = optimizer_groups(probed / "checkpoints" / "best.ckpt")
    assert len(groups) == 1 and len(groups[0]["params"]) == 2  # the head's weight and bias only
    assert cli.metrics(probed)["transfer"] == {"from": str(source), "strategy": "linear_probe",
                                               "loaded_tensors": len(source_net) - 2, "fresh_tensors": list(HEAD)}
    log = (probed / "train.log").read_text()
    assert f"loaded {len(source_net) - 2} of {len(source_net)} tensors" in log
    assert "fresh: head.3.weight, head.3.bias (the source run learnt data.classes=[0, 1, 2, 3, 4]" in log


@pytest.fixture(scope="module")
def finetuned(cli, work, source) -> Path:
    """finetune from a copy of the source's .ckpt (deleted afterwards) on 3 classes (a head of
    another shape), constant lr, biases and norms undecayed."""
    copy = work / "copy.ckpt"
    shutil.copy(source / "checkpoints" / "best.ckpt", copy)
    run = cli.train("data.classes=[5,6,7]", f"transfer.from={copy}", "transfer.strategy=finetune",
                    "transfer.backbone_lr_scale=0.5", "optimizer.lr=0.01", "scheduler=none",
                    "regularization.weight_decay=0.01", "regularization.exclude_norm_bias=true", cwd=work)
    copy.unlink()
    return run


def test_finetune_trains_the_backbone_at_a_scaled_lr(cli, finetuned, source_net):
    net = network(finetuned / "checkpoints" / "best.ckpt")
    assert net["head.3.weight"].shape == (3, source_net["head.3.weight"].shape[1])
    changed = backbone_equal(net, source_net)
    assert "features.0.weight" in changed and any("running_mean" in k for k in changed)
    groups = optimizer_groups(finetuned / "checkpoints" / "best.ckpt")
    # head, backbone (decayed); head, backbone (biases and norm weights, undecayed)
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.005, 0.01, 0.005])
    assert [g["weight_decay"] for g in groups] == [0.01, 0.01, 0.0, 0.0]
    assert [len(g["params"]) for g in groups][::2] == [1, 1]  # the head's weight, then its bias
    assert sum(len(g["params"]) for g in groups) == sum(1 for k in net if "running" not in k and "num_batches" not in k)
    assert cli.metrics(finetuned)["transfer"]["fresh_tensors"] == list(HEAD)


@pytest.fixture(scope="module")
def gradual(cli, work, source) -> Path:
    """gradual, unfrozen at epoch 1 of 2, cosine scheduler (the default), a checkpoint after every epoch."""
    return cli.train("data.classes=[5,6,7,8,9]", f"transfer.from={source}", "transfer.strategy=gradual",
                     "transfer.unfreeze_at_epoch=1", "trainer.max_epochs=2", *EVERY_EPOCH, cwd=work)


def test_gradual_trains_the_backbone_from_unfreeze_at_epoch(cli, gradual, source_net):
    first = gradual / "checkpoints" / "epoch=0-step=2.ckpt"
    second = gradual / "checkpoints" / "epoch=1-step=4.ckpt"
    assert backbone_equal(network(first), source_net) == []
    changed = backbone_equal(network(second), source_net)
    assert "features.0.weight" in changed and any("running_mean" in k for k in changed)
    # the backbone's group is there from the start, at lr x 0.1, and the cosine schedule moves both
    before, after = ([g["lr"] for g in optimizer_groups(ckpt)] for ckpt in (first, second))
    assert len(before) == 2 and before[1] == pytest.approx(0.1 * before[0]) and after[1] == pytest.approx(0.1 * after[0])
    assert after[0] < before[0] <= 1e-3
    assert "epoch 1: the backbone trains from now on" in (gradual / "train.log").read_text()


def test_transfer_runs_evaluate_without_their_source(cli, finetuned, tmp_path):
    """dlopt eval rebuilds the run from its checkpoint alone: the file it started from is gone."""
    cli.ok("eval", f"run={finetuned}", cwd=tmp_path)
    tested = cli.metrics(cli.run_dirs(tmp_path, "eval")[0])
    assert tested["test/acc"] == pytest.approx(cli.metrics(finetuned)["test/acc"])


# --- sources: a state_dict file, torchvision's weights (in-process) --------------------------------


def test_a_plain_state_dict_loads_head_included(source, source_net, tmp_path):
    path = tmp_path / "net.pt"
    torch.save(source_net, path)
    _, module = build(composed("data.classes=[0,1,2,3,4]", f"transfer.from={path}", "transfer.strategy=linear_probe"))
    loaded = module.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source_net.items())
    assert module.transfer.fresh == [] and module.transfer.loaded == len(source_net)
    assert [len(g["params"]) for g in module.transfer.param_groups(module.net)] == [2]


def test_torchvision_weights_load_into_resnet_with_stem_and_head_fresh(tmp_path):
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    _, module = build(composed("model=resnet", f"transfer.from={path}", "transfer.strategy=linear_probe"))
    net = module.net.net
    assert torch.equal(net.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(net.layer1[0].bn1.running_var, state["layer1.0.bn1.running_var"])
    assert module.transfer.fresh == ["net.conv1.weight", "net.fc.1.weight", "net.fc.1.bias"]
    # the fresh 3x3 stem trains with the head, although the probe freezes the backbone
    trained = {id(p) for g in module.transfer.param_groups(module.net) for p in g["params"]}
    assert trained == {id(net.conv1.weight), id(net.fc[1].weight), id(net.fc[1].bias)}


# --- bad inputs: one line, exit 2, no run folder ----------------------------------------------------


def test_missing_source_is_named(in_process, work, tmp_path):
    result = in_process.run("train", *in_process.TINY, f"transfer.from={work / 'nowhere'}", cwd=tmp_path)
    line = assert_fails_clearly(result, tmp_path, f"transfer.from={work / 'nowhere'} does not exist")
    assert "a dlopt run folder" in line and result.returncode == 2


def test_folder_that_is_not_a_run(in_process, tmp_path):
    (tmp_path / "notarun").mkdir()
    result = in_process.run("train", *in_process.TINY, "transfer.from=notarun", cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, "transfer.from=notarun is not a dlopt run folder",
                         "checkpoints/best.ckpt")
    assert result.returncode == 2


@pytest.mark.parametrize("content, needle", [
    (b"not a checkpoint at all" * 10, "is not a file torch.load can read"),
    ("module", "holds Python objects besides tensors, which dlopt never unpickles"),
], ids=["garbage", "pickled-module"])
def test_file_that_is_not_a_checkpoint(in_process, tmp_path, content, needle):
    path = tmp_path / "weights.ckpt"
    if content == "module":  # a whole nn.Module: loading it would run pickled code
        torch.save(torch.nn.Linear(2, 2), path)
    else:
        path.write_bytes(content)
    result = in_process.run("train", *in_process.TINY, f"transfer.from={path}", cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, f"transfer.from={path}", needle)
    assert result.returncode == 2


@pytest.mark.parametrize("overrides, needles", [
    (["model=mlp"], ["20 mismatching tensors: features.1.weight (file 32, model 128x64)",
                    "the source run has model=cnn (this run: mlp)"]),
    (["model.width=16"], ["features.0.weight (file 32x1x3x3, model 16x1x3x3)",
                          "the source run has model.width=32 (this run: 16)", "same model settings"]),
], ids=["mlp", "width"])
def test_incompatible_network_names_tensors_and_settings(in_process, source, tmp_path, overrides, needles):
    result = in_process.run("train", *in_process.TINY, f"transfer.from={source}", *overrides, cwd=tmp_path)
    line = assert_fails_clearly(result, tmp_path, f"transfer.from={source} does not fit this run's network", *needles)
    assert len(line) < 500 and result.returncode == 2


@pytest.mark.parametrize("override, needle", [
    ("transfer.strategy=probe", "transfer.strategy=probe is not valid; choose one of linear_probe, finetune, gradual"),
    ("transfer.backbone_lr_scale=0", "transfer.backbone_lr_scale=0 is not valid: expected a factor in (0, 1]"),
    ("transfer.backbone_lr_scale=-0.1", "transfer.backbone_lr_scale=-0.1 is not valid"),
    ("transfer.unfreeze_at_epoch=-1", "transfer.unfreeze_at_epoch=-1 is not valid: expected an integer >= 0"),
])
def test_bad_transfer_settings_are_caught_at_composition(in_process, tmp_path, override, needle):
    result = in_process.run("train", *in_process.TINY, override, cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, needle)
    assert result.returncode == 2


def test_unreadable_files_are_told_apart(tmp_path):
    """In-process, the kinds of unreadable file dlopt.models.weights names (torch.load weights_only=True)."""
    from dlopt.errors import UserError
    from dlopt.models.weights import read_weights

    torch.save({"w": torch.ones(2)}, tmp_path / "good.pt")
    files = {"empty": b"", "garbage": b"\x80\x02garbage" * 20,
             "truncated": (tmp_path / "good.pt").read_bytes()[:200]}
    # the three are told before torch.load tries them (neither a whole zip archive nor a pickle of tensors)
    why = {"empty": "corrupt, truncated", "garbage": "corrupt, truncated", "truncated": "corrupt, truncated"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=f"x={tmp_path / name} is not a file torch.load can read .*{why[name]}"):
            read_weights(tmp_path / name, "x", "weights")
    assert torch.equal(read_weights(tmp_path / "good.pt", "x", "weights")["w"], torch.ones(2))


def test_the_example_pair_is_digits_0_4_then_5_9_from_a_tenth():
    pretrain, transfer = composed("experiment=digits_pretrain"), composed("experiment=digits_transfer")
    check(pretrain)
    check(transfer)
    assert list(pretrain.data.classes) == [0, 1, 2, 3, 4] and pretrain.transfer["from"] is None
    assert list(transfer.data.classes) == [5, 6, 7, 8, 9] and transfer.data.fraction == 0.1
    assert pretrain.model == transfer.model  # the backbone fits


def test_only_transfer_strategy_is_held_to_the_strategy_names():
    check(composed("+trainer.strategy=ddp"))  # Lightning's own `strategy` knob is not a transfer strategy
