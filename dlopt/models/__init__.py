"""Classification networks built from a Hydra partial completed with the data's input shape and
class count: `Model(in_shape=..., num_classes=..., **knobs)`; forward maps (N, *in_shape) to
logits (N, num_classes). Shared knobs (depth, width, activation, negative_slope, norm, residual,
dropout, init) mean the same in every model that has them. Every model calls its classification
layer `head` (transfer learning replaces it when the classes change)."""

from dlopt.models.cnn import CNN
from dlopt.models.linear import Linear
from dlopt.models.mlp import MLP
from dlopt.models.resnet import ResNet
from dlopt.models.vit import ViT

__all__ = ["CNN", "Linear", "MLP", "ResNet", "ViT"]
