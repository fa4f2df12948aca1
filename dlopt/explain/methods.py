"""The attribution methods by name, all of them Captum's, on the probability of the target class.

Each method returns one value per feature of every sample (dlopt.explain.features): for the gradient methods the sum
of the values of the feature's inputs, for the perturbation methods the value Captum gives the feature. A removed
feature takes the baseline's values. `occlusion` is Captum's FeatureAblation with the features as its mask: occlusion
with non-overlapping windows of a patch, which also covers segments and table columns. LIME fits a ridge regression
(alpha 1, as the lime package does) instead of Captum's default lasso, whose zeros tie most features. `saliency` is the
gradient's size per unit of the run's input normalization (a standard deviation by default): in raw units a
column measured in small numbers would get a large gradient for that reason alone. The DeepLift
family is left out: it breaks on in-place activations and reused activation modules.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from dlopt.explain import GRADIENT
from dlopt.explain.features import Features

# "multiple inputs for Lime / Kernel SHAP": one model per sample is what they are; inputs get gradients on purpose
warnings.filterwarnings("ignore", message=".*(multiple inputs for Lime|did not already require gradients).*")



@dataclass(frozen=True)
class Settings:
    steps: int  # integration steps of integrated_gradients, samples of gradient_shap
    evaluations: int  # model evaluations per sample of lime, kernel_shap and shapley_sampling
    repeats: int  # permutations of each feature (permutation)
    batch_size: int  # inputs per forward pass
    seed: int


def attribute(method: str, forward: Callable, x: torch.Tensor, target: torch.Tensor, features: Features,
              baseline: torch.Tensor, background: torch.Tensor, settings: Settings,
              scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(N, features) attributions of the per-sample `method` for the probability of `target` (N,) given `x`;
    `background`: training inputs, the baselines gradient_shap draws from; `scale`: the run's input normalization
    scale (per feature or channel), the unit saliency's gradients are taken in."""
    import captum.attr as captum
    from captum._utils.models.linear_model import SkLearnRidge

    torch.manual_seed(settings.seed)  # LIME, KernelSHAP and the sampling methods draw at random
    per_eval = max(1, settings.batch_size // len(x))  # perturbed copies of all N inputs per forward pass
    mask = features.mask
    if method == "saliency":  # |d p / d (x / scale)|: per standard unit, so that columns in other units compare
        values = captum.Saliency(forward).attribute(x, target=target) * (1 if scale is None else scale.abs())
    elif method == "integrated_gradients":
        values = captum.IntegratedGradients(forward).attribute(x, baseline, target=target, n_steps=settings.steps,
                                                               internal_batch_size=settings.batch_size)
    elif method == "gradient_shap":
        values = captum.GradientShap(forward).attribute(x, background, target=target, n_samples=settings.steps)
    elif method == "occlusion":
        values = captum.FeatureAblation(forward).attribute(x, baseline, target=target, feature_mask=mask,
                                                           perturbations_per_eval=per_eval)
    elif method in ("lime", "kernel_shap"):  # one sample at a time: the perturbations of one sample per batch
        explainer = captum.Lime(forward, interpretable_model=SkLearnRidge(alpha=1.0)) if method == "lime" \
            else captum.KernelShap(forward)
        return torch.cat([explainer.attribute(x[i:i + 1], baselines=baseline[i:i + 1], target=target[i:i + 1],
                                              feature_mask=mask, n_samples=settings.evaluations,
                                              perturbations_per_eval=settings.batch_size,
                                              return_input_shape=False).detach().float() for i in range(len(x))])
    elif method == "shapley_sampling":  # a permutation costs one evaluation per feature and one more
        values = captum.ShapleyValueSampling(forward).attribute(
            x, baseline, target=target, feature_mask=mask, perturbations_per_eval=per_eval,
            n_samples=max(1, settings.evaluations // (features.count + 1)))
    else:
        raise ValueError(f"not a per-sample method: {method}")
    return features.totals(values) if method in GRADIENT else features.means(values)


def permutation(predict: Callable, x: torch.Tensor, y: torch.Tensor, features: Features,
                settings: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Global importance (Captum's FeaturePermutation): the drop in accuracy on (x, y) when a feature's values are
    shuffled among the samples, over `repeats` shuffles: (mean, sd) per feature."""
    import captum.attr as captum

    def accuracy(inputs: torch.Tensor) -> torch.Tensor:
        return (predict(inputs).argmax(1) == y).float().mean()

    drops = []
    for repeat in range(settings.repeats):
        torch.manual_seed(settings.seed + repeat)
        with torch.no_grad():
            drops.append(features.means(captum.FeaturePermutation(accuracy).attribute(x, feature_mask=features.mask)))
    drops = torch.cat(drops)
    return drops.mean(0), drops.std(0) if len(drops) > 1 else torch.zeros(features.count)
