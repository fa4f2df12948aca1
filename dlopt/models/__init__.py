"""Classification networks built from a Hydra partial completed with the data's input shape and
class count: `Model(in_shape=..., num_classes=..., **knobs)`; forward maps (N, *in_shape) to
logits (N, num_classes). Shared knobs (depth, width, activation, norm, dropout) mean the same in
every model."""

from dlopt.models.cnn import CNN
from dlopt.models.mlp import MLP
from dlopt.models.resnet import ResNet

__all__ = ["CNN", "MLP", "ResNet"]
