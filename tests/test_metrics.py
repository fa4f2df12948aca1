"""The calibration error every run reports (val/ece, test/ece: dlopt.training.module.CalibrationError)."""

import numpy as np
import torch

from dlopt.training.module import CalibrationError


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """The textbook ECE: bins [0, 1/15), ..., [14/15, 1] of the top confidence; sum of |accuracy - confidence|
    weighted by each bin's share of the samples."""
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    return sum(abs(correct[index == b].mean() - confidence[index == b].mean()) * (index == b).mean()
               for b in range(bins) if (index == b).any())


def test_a_confidence_of_exactly_one_is_in_the_last_bin():
    # torch's float32 softmax of these is exactly 1.0 for the first two rows (torchmetrics issue 3510)
    logits = torch.tensor([[40.0, 0.0], [0.0, 40.0], [2.7, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 0, 1])
    probs = logits.softmax(1)
    assert probs.max(1).values[:2].eq(1.0).all()
    metric = CalibrationError(2)
    metric.update(logits, labels)
    expected = expected_calibration_error(probs.double().numpy(), labels.numpy())
    assert abs(float(metric.compute()) - expected) < 1e-6


def test_logits_that_look_like_probabilities_are_still_logits():
    logits, labels = torch.tensor([[0.2, 0.9], [0.9, 0.1]]), torch.tensor([1, 0])
    metric = CalibrationError(2)
    metric.update(logits, labels)
    assert abs(float(metric.compute()) - expected_calibration_error(logits.softmax(1).numpy(), labels.numpy())) < 1e-6
