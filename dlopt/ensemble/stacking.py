"""Stacking: a scikit-learn meta-learner fitted on the members' class probabilities of held-out samples (the
validation split: blending), predicting from the members' probabilities on any split. Its parameters are saved as
numbers in meta.npz (no pickle) and predict without scikit-learn's object.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

META = ("logistic", "logistic_cv")  # LogisticRegression (C=1), LogisticRegressionCV (C by 5-fold CV log-loss)


def features(probabilities: list[np.ndarray]) -> np.ndarray:
    """The meta-learner's input: the members' class probabilities side by side (samples x members*classes)."""
    return np.concatenate(probabilities, axis=1)


def fit(meta: str, probabilities: list[np.ndarray], labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The fitted meta-learner's parameters: coef (classes x features), intercept, classes (its label per row)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    if meta == "logistic_cv":  # C by the held-out log-loss: by accuracy (scikit-learn's default) ties go to the
        # smallest C, whose probabilities are nearly uniform (a test NLL of 1.7 against 0.07 on mnist1d)
        model = LogisticRegressionCV(Cs=10, cv=5, scoring="neg_log_loss", max_iter=2000, random_state=seed)
    else:
        model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    model.fit(features(probabilities), labels)
    return {"coef": model.coef_, "intercept": model.intercept_, "classes": model.classes_}


def predict(parameters: dict[str, np.ndarray], probabilities: list[np.ndarray], classes: int) -> np.ndarray:
    """Class probabilities (samples x classes) from the members' probabilities: a softmax of the linear scores
    (a sigmoid when the meta-learner saw two classes), as LogisticRegression.predict_proba."""
    scores = features(probabilities) @ parameters["coef"].T + parameters["intercept"]
    if scores.shape[1] == 1:
        scores = np.concatenate([np.zeros_like(scores), scores], axis=1)
    scores = np.exp(scores - scores.max(1, keepdims=True))
    known = scores / scores.sum(1, keepdims=True)
    out = np.zeros((len(known), classes))
    out[:, parameters["classes"].astype(int)] = known  # a class no held-out sample had gets probability 0
    return out


def save(parameters: dict[str, np.ndarray], path: Path) -> None:
    from dlopt.training.report import write_npz

    write_npz(parameters, path)


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as arrays:
        return {k: arrays[k] for k in ("coef", "intercept", "classes")}
