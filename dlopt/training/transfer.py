"""Transfer learning: a run starts from the network of an earlier one (`transfer.from`) and
trains it by one of three strategies.

transfer.from is a dlopt run folder (its checkpoints/best.ckpt), a dlopt .ckpt, or a state_dict
file of the network (for model=resnet also a torchvision ResNet's); each is read with
torch.load(weights_only=True). Only the network is loaded: the input normalization comes from the
new data. The model's `head` starts fresh when its shape differs or when the source run was
trained on other classes; any other tensor that does not fit is an error naming the tensors and,
for a dlopt source, the model settings that differ.

The backbone is every loaded tensor outside the head; the head (and anything else that starts
fresh, like resnet's stem under torchvision weights) trains at optimizer.lr.
- linear_probe: the backbone is frozen (Lightning's BaseFinetuning.freeze, batch-norm running
  statistics included); only the head trains.
- finetune: everything trains, the backbone at optimizer.lr x backbone_lr_scale.
- gradual: finetune with the backbone frozen for the first unfreeze_at_epoch epochs.
The backbone's param groups are in the optimizer from the first step instead of being added when
it thaws (BaseFinetuning.unfreeze_and_add_param_group): a frozen parameter gets no gradient, so
no step moves it, and the scheduler (cosine, step, plateau) and exclude_norm_bias treat the
backbone's groups like the head's from the start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as L
from lightning.pytorch.callbacks import BaseFinetuning
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from dlopt.checks import TRANSFER_SOURCES, transfer_source
from dlopt.errors import UserError
from dlopt.models.resnet import ResNet, from_torchvision
from dlopt.models.weights import describe_mismatches, is_state_dict, mismatches, read_weights, shape_text

log = logging.getLogger(__name__)


class FreezeBackbone(BaseFinetuning):
    """Freezes the network but `trainable` before training (batch-norm statistics too) and
    thaws all of it at epoch `unfreeze_at_epoch` (None: never)."""

    def __init__(self, trainable: list[nn.Module], unfreeze_at_epoch: Optional[int] = None):
        super().__init__()
        self.trainable, self.unfreeze_at_epoch = trainable, unfreeze_at_epoch

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(pl_module.net, train_bn=False)
        self.make_trainable(self.trainable)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer) -> None:
        if self.unfreeze_at_epoch is not None and epoch >= self.unfreeze_at_epoch:  # >=: also after a resume
            self.make_trainable(pl_module.net)
            if epoch == self.unfreeze_at_epoch:
                log.info("epoch %d: the backbone trains from now on", epoch)


@dataclass
class Transfer:
    """What a run loaded and how it trains it: the Classifier asks it for param groups and callbacks."""

    source: str
    strategy: str
    backbone_lr_scale: float
    unfreeze_at_epoch: int
    trainable: list[nn.Module]  # the head and any module that starts fresh
    loaded: int
    fresh: list[str]
    callback: Optional[FreezeBackbone] = field(init=False)

    def __post_init__(self) -> None:
        unfreeze = {"linear_probe": None, "gradual": self.unfreeze_at_epoch}
        self.callback = FreezeBackbone(self.trainable, unfreeze[self.strategy]) if self.strategy in unfreeze else None

    def param_groups(self, net: nn.Module) -> list[dict[str, Any]]:
        """The head's parameters, then (unless linear_probe) the backbone's with its lr_scale."""
        head = {id(p) for m in self.trainable for p in m.parameters()}
        groups = [{"params": [p for p in net.parameters() if id(p) in head]}]
        if self.strategy != "linear_probe":
            groups.append({"params": [p for p in net.parameters() if id(p) not in head],
                           "lr_scale": self.backbone_lr_scale})
        return groups

    def callbacks(self) -> list[L.Callback]:
        return [self.callback] if self.callback is not None else []

    def summary(self) -> dict[str, Any]:
        """The `transfer` entry of metrics.json."""
        return {"from": self.source, "strategy": self.strategy, "loaded_tensors": self.loaded,
                "fresh_tensors": self.fresh}


def load(cfg: DictConfig, net: nn.Module) -> Optional[Transfer]:
    """Load transfer.from into `net`; returns how the run trains it (the Classifier's `transfer`), None without
    transfer.from."""
    node = cfg.get("transfer")
    if node is None or node.get("from") is None:
        return None
    source = str(node["from"])
    head = getattr(net, "head", None)
    if not isinstance(head, nn.Module):
        raise UserError(f"transfer.from needs the model's classification layer under the name `head`; "
                        f"{type(net).__name__} has none")
    path, state, saved = _read(source)
    state, fresh, why = _fit(net, head, state, _other_classes(cfg, saved))
    problems = mismatches(state, net.state_dict(), fresh)
    if problems:
        raise UserError(f"transfer.from={source} does not fit this run's network: "
                        f"{describe_mismatches(problems)}{_model_hint(cfg, saved)}")
    net.load_state_dict(state, strict=False)
    trainable = [head] + [m for m in {net.get_submodule(k.rpartition(".")[0]) for k in fresh}
                          if not any(m is h for h in head.modules())]
    transfer = Transfer(source, node.strategy, node.backbone_lr_scale, node.unfreeze_at_epoch, trainable, len(state),
                        fresh)
    log.info("transfer.from=%s: loaded %d of %d tensors from %s; fresh: %s%s", source, len(state),
             len(net.state_dict()), path, ", ".join(fresh) or "none", f" ({why})" if why else "")
    plans = {"linear_probe": "the backbone stays frozen, the head trains",
             "finetune": f"every layer trains, the backbone at optimizer.lr x {node.backbone_lr_scale}",
             "gradual": f"the head trains, the backbone too from epoch {node.unfreeze_at_epoch} "
                        f"at optimizer.lr x {node.backbone_lr_scale}"}
    log.info("transfer.strategy=%s: %s", node.strategy, plans[node.strategy])
    if node.strategy == "gradual" and node.unfreeze_at_epoch >= cfg.trainer.max_epochs:
        log.warning("transfer.unfreeze_at_epoch=%d >= trainer.max_epochs=%d: the backbone never trains",
                    node.unfreeze_at_epoch, cfg.trainer.max_epochs)
    return transfer


def _fit(net: nn.Module, head: nn.Module, state: dict[str, Tensor],
         other_classes: Optional[str]) -> tuple[dict[str, Tensor], list[str], Optional[str]]:
    """The tensors of `state` to load into `net`, the names that start fresh instead, and why the
    head does: the source learnt `other_classes`, or its head has another shape."""
    own = net.state_dict()
    prefix = next(name for name, m in net.named_modules() if m is head) + "."
    fresh: list[str] = []
    if isinstance(net, ResNet) and not any(k.startswith("net.") for k in state):  # torchvision's names
        state, tv_fresh, _ = from_torchvision(state, net.net.state_dict())
        state, fresh = {"net." + k: v for k, v in state.items()}, ["net." + k for k in tv_fresh]
    why = other_classes or next(
        (f"{k} is {shape_text(state[k])} in the source, {shape_text(own[k])} here" for k in own
         if k.startswith(prefix) and k in state and state[k].shape != own[k].shape), None)
    if why:
        fresh += [k for k in own if k.startswith(prefix) and k not in fresh]
    return {k: v for k, v in state.items() if k not in fresh}, fresh, why


def _read(source: str) -> tuple[Path, dict[str, Tensor], Optional[dict]]:
    """The file transfer.from names, the network's tensors in it and (for a dlopt checkpoint)
    the config of the run that wrote it."""
    path = transfer_source(source)
    loaded = read_weights(path, "transfer.from", TRANSFER_SOURCES)
    if isinstance(loaded, dict) and "dlopt" in loaded and "state_dict" in loaded:
        state = {k[len("net."):]: v for k, v in loaded["state_dict"].items() if k.startswith("net.")}
        return path, state, loaded["dlopt"].get("config") or {}
    if is_state_dict(loaded):
        return path, dict(loaded), None
    raise UserError(f"transfer.from={source} holds neither a dlopt checkpoint nor a state_dict "
                    f"(parameter name -> tensor); give {TRANSFER_SOURCES}")


def _name(node: dict) -> str:
    """model=cnn for dlopt.models.CNN, data=digits for dlopt.data.sources.digits."""
    return str(node.get("_target_", "?")).rsplit(".", 1)[-1].lower()


def _other_classes(cfg: DictConfig, saved: Optional[dict]) -> Optional[str]:
    """Why the head starts fresh although its shape fits: the source run learnt other classes."""
    if saved is None:
        return None
    then, now = saved.get("data") or {}, OmegaConf.to_container(cfg.data, resolve=True)
    if _name(then) != _name(now):
        return f"the source run learnt the classes of data={_name(then)}, this run data={_name(now)}"
    if then.get("classes") != now.get("classes"):
        return f"the source run learnt data.classes={then.get('classes')}, this run {now.get('classes')}"
    return None


def _model_hint(cfg: DictConfig, saved: Optional[dict]) -> str:
    """'; the source run has model.width=32 (this run: 48), ...' for a dlopt source, else ''."""
    if saved is None:
        return ""
    then, now = saved.get("model") or {}, OmegaConf.to_container(cfg.model, resolve=True)
    if _name(then) != _name(now):
        differ = [f"model={_name(then)} (this run: {_name(now)})"]
    else:
        differ = [f"model.{k}={then.get(k)} (this run: {now.get(k)})" for k in dict.fromkeys([*now, *then])
                  if not str(k).startswith("_") and then.get(k) != now.get(k)]
    data = saved.get("data") or {}
    if _name(data) != _name(cfg.data):
        differ.append(f"data={_name(data)} (this run: {_name(cfg.data)})")
    if not differ:
        return ""
    return f"; the source run has {', '.join(differ[:3])}: give this run the same model settings"
