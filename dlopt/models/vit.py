"""A small vision transformer for images (C, H, W), signals (C, L) and vectors (F,) (a vector is
a 1-channel signal of length F): a patch embedding (Conv2d or Conv1d with kernel = stride =
patch; a remainder smaller than a patch is dropped), a class token and a learned position
embedding, `depth` x nn.TransformerEncoderLayer (pre-norm), a final LayerNorm and a Linear head
on the class token. Written here because torchvision.models.VisionTransformer takes only square
images whose size the patch divides and fixes GELU; the layers themselves are torch's."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dlopt.errors import UserError
from dlopt.models.layers import check_knobs, init_weights, make_activation


class ViT(nn.Module):
    """Patches -> [class token] + positions -> depth x TransformerEncoderLayer -> LayerNorm ->
    Dropout -> Linear on the class token."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, depth: int = 4,
                 width: int = 64, heads: int = 4, patch: int = 2, mlp_ratio: int = 2,
                 activation: str = "gelu", negative_slope: float = 0.01, dropout: float = 0.0,
                 init: str = "default") -> None:
        super().__init__()
        check_knobs(depth=depth, width=width, heads=heads, patch=patch, mlp_ratio=mlp_ratio,
                    activation=activation, negative_slope=negative_slope, dropout=dropout,
                    init=init)
        if width % heads:
            raise UserError(f"model.width={width} is not divisible by model.heads={heads}; "
                            f"choose heads that divide the width")
        shape = tuple(int(s) for s in in_shape)
        if len(shape) not in (1, 2, 3):
            raise UserError(f"model=vit needs images (C,H,W), signals (C,L) or vectors (F,); "
                            f"the data gives inputs of shape {shape}")
        self.vector = len(shape) == 1
        channels, spatial = (1, shape) if self.vector else (shape[0], shape[1:])
        if patch > min(spatial):
            raise UserError(f"model.patch={patch} is larger than the input {shape}; "
                            f"choose model.patch <= {min(spatial)}")
        conv = (nn.Conv1d, nn.Conv2d)[len(spatial) - 1]
        self.embed = conv(channels, width, patch, stride=patch)
        tokens = math.prod(s // patch for s in spatial)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, tokens + 1, width), std=0.02))
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=mlp_ratio * width, dropout=dropout,
            activation=make_activation(activation, negative_slope), batch_first=True,
            norm_first=True)
        # TransformerEncoder deep-copies the layer, so each copy owns its activation module
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(width),
                                             enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))
        init_weights(self, init, activation, negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x.unsqueeze(1) if self.vector else x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], 1) + self.pos
        return self.head(self.encoder(tokens)[:, 0])
