"""An ensemble as one torch module: its members' networks (dlopt.training.run.rebuild each), combined as the
ensemble command combined their predictions: the weighted mean of their probabilities, a weighted vote, or the
stacking meta-learner (a linear layer on their probabilities, parameters from meta.npz). Its output is the log of the
ensemble's class probabilities, so softmax(output) are the probabilities, as for a single run's logits: what
`dlopt eval` and `dlopt explain` use."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch


class Ensemble(torch.nn.Module):
    def __init__(self, members: list[list[torch.nn.Module]], weights: list[float], combine: str,
                 meta: Optional[dict[str, np.ndarray]] = None, classes: int = 0):
        super().__init__()
        self.members = torch.nn.ModuleList(torch.nn.ModuleList(runs) for runs in members)  # a member: its K folds
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.combine, self.classes = combine, classes
        if meta is not None:
            self.register_buffer("coef", torch.as_tensor(meta["coef"], dtype=torch.float32))
            self.register_buffer("intercept", torch.as_tensor(meta["intercept"], dtype=torch.float32))
            self.register_buffer("meta_classes", torch.as_tensor(meta["classes"].astype(np.int64)))

    @property
    def input_scale(self) -> torch.Tensor:  # the members share their data, and so its normalization
        return self.members[0][0].input_scale

    @property
    def device(self) -> torch.device:
        return self.weights.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = [torch.stack([torch.softmax(run(x), 1) for run in runs]).mean(0) for runs in self.members]
        if self.combine == "stacking":
            scores = torch.cat(probabilities, 1) @ self.coef.T + self.intercept
            if scores.shape[1] == 1:  # two classes: LogisticRegression's one score, a sigmoid
                scores = torch.cat([torch.zeros_like(scores), scores], 1)
            known = torch.softmax(scores, 1)
            out = known.new_zeros(len(x), self.classes)
            out[:, self.meta_classes] = known
        else:
            if self.combine == "vote":
                probabilities = [torch.nn.functional.one_hot(p.argmax(1), p.shape[1]).to(p.dtype)
                                 for p in probabilities]
            out = sum(w * p for w, p in zip(self.weights, probabilities)) / self.weights.sum()
        return torch.log(out.clamp_min(1e-12))
