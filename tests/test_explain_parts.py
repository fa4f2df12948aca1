"""The parts of dlopt explain on their own, without training: the features of each input kind, the stratified
samples, the deletion curve and the checks of faithfulness on a model whose truth is known, and the synthetic data's
informative values (dlopt/explain/, dlopt/data/sources.synthetic)."""

from __future__ import annotations

import pytest
import torch

from dlopt.data.sources import synthetic
from dlopt.errors import UserError
from dlopt.explain import faithfulness as faith
from dlopt.explain.features import baseline, features, pick
from dlopt.explain.methods import Settings, attribute, permutation


def test_image_patches_cover_the_image_in_a_grid():
    f = features((3, 8, 8), None)  # default: a 4 x 4 grid, every channel of a patch one feature
    assert f.kind == "image" and f.count == 16
    assert f.names[0] == "rows 0-1 cols 0-1" and f.names[-1] == "rows 6-7 cols 6-7"
    assert torch.equal(torch.bincount(f.mask.flatten()), torch.full((16,), 3 * 4))
    assert torch.equal(f.mask[0, 0], f.mask[0, 2])


def test_a_patch_that_does_not_divide_leaves_narrower_last_patches():
    f = features((1, 8, 8), 3)
    assert f.count == 9 and f.names[-1] == "rows 6-7 cols 6-7"
    assert torch.bincount(f.mask.flatten()).tolist() == [9, 9, 6, 9, 9, 6, 6, 6, 4]


def test_a_patch_larger_than_the_image_is_refused():
    with pytest.raises(UserError, match=r"explain.patch=9 is larger than the input \(8 x 8\); give at most 8"):
        features((1, 8, 8), 9)


def test_signal_segments_and_table_columns():
    signal = features((2, 40), 4)
    assert signal.kind == "signal" and signal.count == 10 and signal.names[:2] == ["t 0-3", "t 4-7"]
    table = features((5,), None, ["age", "color", "color", "color", "income"])  # one-hot color grouped back
    assert table.names == ["age", "color", "income"] and table.mask.tolist() == [[0, 1, 1, 1, 2]]
    assert features((3,), None).names == ["x0", "x1", "x2"]


def test_totals_means_and_spread_are_consistent():
    f = features((1, 4, 4), 2)
    values = torch.arange(16.0).reshape(1, 1, 4, 4)
    totals = f.totals(values)
    assert totals.tolist() == [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]
    assert torch.allclose(f.means(values), totals / 4)
    assert torch.equal(f.totals(f.spread(torch.tensor([[1.0, 2, 3, 4]]))), torch.tensor([[4.0, 8, 12, 16]]))


def test_samples_are_stratified_and_fixed_by_the_seed():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    chosen = pick(y, 9, seed=3)
    assert sorted(y[chosen].tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2] and len(set(chosen.tolist())) == 9
    assert torch.equal(chosen, pick(y, 9, seed=3)) and not torch.equal(chosen, pick(y, 9, seed=4))


def test_baselines():
    x, train = torch.rand(2, 1, 8, 8), torch.rand(10, 1, 8, 8)
    assert torch.allclose(baseline("mean", x, train, "image", 2)[1], train.mean(0))
    assert not baseline("zero", x, train, "image", 2).any()
    blurred = baseline("blur", x, train, "image", 2)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    with pytest.raises(UserError, match="explain.baseline=blur is for images; this run's inputs are a table"):
        baseline("blur", torch.rand(2, 5), torch.rand(4, 5), "table", 1)


class Linear(torch.nn.Module):
    """Logits of class 1 minus class 0 = w . x: only the inputs with weight matter."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.layer = torch.nn.Linear(len(w), 2, bias=False)
        with torch.no_grad():
            self.layer.weight.copy_(torch.stack([torch.zeros_like(w), w]))

    def forward(self, x):
        return self.layer(x)


SETTINGS = Settings(steps=16, evaluations=256, repeats=3, batch_size=512, seed=0)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "gradient_shap", "occlusion", "lime",
                                    "kernel_shap", "shapley_sampling"])
def test_every_method_finds_the_weighted_inputs_and_beats_random(method):
    torch.manual_seed(0)
    w = torch.tensor([3.0, -2.0, 2.5, 0, 0, 0, 0, 0])  # inputs 0-2 matter, the rest do not
    model = Linear(w).eval()
    x = torch.randn(12, 8) + torch.tensor([1.0, -1.0, 1.0, 0, 0, 0, 0, 0])  # evidence for class 1
    f, base = features((8,), None), torch.zeros(12, 8)
    probs = lambda inputs: torch.softmax(model(inputs), 1)  # noqa: E731
    target = torch.ones(12, dtype=torch.long)
    values = attribute(method, probs, x, target, f, base, torch.randn(32, 8), SETTINGS)
    assert values.shape == (12, 8)
    assert faith.precision_at_k(values.abs().mean(0), [0, 1, 2]) == 1.0
    curve = faith.deletion(probs, x, target, values.argsort(1, descending=True), f, base, 512)
    random = torch.stack([faith.deletion(probs, x, target, o, f, base, 512)
                          for o in faith.random_orders(12, 8, 0)]).mean(0)
    assert torch.allclose(curve[:, 0], probs(x)[:, 1]) and faith.area(curve) < faith.area(random)


def test_permutation_importance_is_the_accuracy_drop():
    torch.manual_seed(0)
    model = Linear(torch.tensor([1.0, 0, 0, 0])).eval()
    x = torch.randn(400, 4)
    y = (x[:, 0] > 0).long()  # the model is always right; shuffling x0 makes it right half the time
    mean, sd = permutation(model, x, y, features((4,), None), SETTINGS)
    assert 0.35 < mean[0] < 0.65 and mean[1:].abs().max() == 0 and sd.shape == (4,)


def test_the_randomization_check_tells_a_model_dependent_map_from_a_constant_one():
    a = torch.randn(20, 10)
    assert faith.rank_correlation(a, a * 2) == pytest.approx(1.0)
    assert abs(faith.rank_correlation(a, torch.randn(20, 10))) < 0.3
    model = Linear(torch.ones(4))
    twin = faith.randomized(model, seed=0)
    assert not torch.equal(twin.layer.weight, model.layer.weight) and torch.equal(model.layer.weight[1], torch.ones(4))


def test_truth_of_the_informative_values_per_feature():
    assert faith.truth(features((20,), None), 5) == [0, 1, 2, 3, 4]
    assert faith.truth(features((1, 8, 8), 2), 16) == [0, 1, 2, 3]  # the top two rows: the first row of patches


def test_synthetic_informative_values_alone_carry_the_class():
    data = synthetic(shape=[20], num_classes=4, num_samples=800, informative=5, noise=0.5, split_seed=1)
    x, y = data.splits["train"]
    means = torch.stack([x[y == c].mean(0) for c in range(4)])
    spread = means.std(0)  # between the class means, per feature
    assert spread[:5].min() > 0.3 and spread[5:].max() < 0.15
    with pytest.raises(UserError, match=r"data.informative=21 is not valid; .* an integer from 1 to 20"):
        synthetic(shape=[20], informative=21)


def test_saliency_is_per_unit_of_the_input_normalization():
    """A column in small units (scale 0.01) gets a 100x larger raw gradient for the same use; per unit of the run's
    normalization both weigh the same."""
    scale = torch.tensor([1.0, 0.01])
    model = Linear(torch.tensor([1.0, 1.0]) / scale).eval()  # the network sees x / scale with equal weights
    x, f = torch.randn(6, 2), features((2,), None)
    probs = lambda inputs: torch.softmax(model(inputs), 1)  # noqa: E731
    target = torch.ones(6, dtype=torch.long)
    raw = attribute("saliency", probs, x, target, f, x, x, SETTINGS)
    assert torch.allclose(raw[:, 1], 100 * raw[:, 0])
    scaled = attribute("saliency", probs, x, target, f, x, x, SETTINGS, scale)
    assert torch.allclose(scaled[:, 0], scaled[:, 1])
