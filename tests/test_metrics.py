"""The calibration error every run reports (val/ece, test/ece: dlopt.training.module.CalibrationError) is the textbook
one that dlopt ensemble computes from saved predictions (dlopt.ensemble.scores)."""

import torch

from dlopt.ensemble.scores import calibration_error as expected_calibration_error  # the textbook ECE, in numpy
from dlopt.training.module import CalibrationError


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
