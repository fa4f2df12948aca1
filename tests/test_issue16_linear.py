"""Issue 16 item 17: `model=linear`, a linear classifier on the flattened input (multinomial logistic
regression), the first row of a baseline table. It trains on every data kind (images, signals, CSV
columns), and the commands that read a finished run (eval, explain) take a linear run. The real
`dlopt` command runs in a temporary folder.
"""

from __future__ import annotations

import csv
import json

import pytest

from dlopt.diagnostics.remedies import remedies
from dlopt.diagnostics.symptoms import Finding


def metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def digits(cli, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("linear")
    run_dir = cli.train("model=linear", "trainer.max_epochs=5", "trainer.limit_train_batches=null",
                        "trainer.limit_test_batches=null", "optimizer.lr=0.01", cwd=cwd)
    return cwd, run_dir


def test_linear_on_digits_is_one_linear_layer_and_learns(cli, digits):
    _, run_dir = digits
    found = metrics(run_dir)
    assert found["params"] == 8 * 8 * 10 + 10  # weights and biases of one Linear, nothing else
    assert found["epochs"] == 5 and found["test/acc"] > 0.85, found
    assert cli.config(run_dir)["model"]["_target_"] == "dlopt.models.Linear"


def test_eval_and_explain_take_a_linear_run(cli, digits):
    cwd, run_dir = digits
    cli.ok("eval", f"run={run_dir}", cwd=cwd)
    (evaluated,) = cli.run_dirs(cwd, "eval")
    assert metrics(evaluated)["test/acc"] == pytest.approx(metrics(run_dir)["test/acc"], abs=1e-6)
    cli.ok("explain", f"run={run_dir}", "method=[integrated_gradients,permutation]", "explain.samples=4", cwd=cwd)
    (explained,) = cli.run_dirs(cwd, "explain")
    assert (explained / "explain.json").is_file() and (explained / "attributions.png").is_file()


def test_linear_trains_on_signals(cli, tmp_path):
    run_dir = cli.train("data=mnist1d", "model=linear", cwd=tmp_path)
    found = metrics(run_dir)
    assert found["params"] == 40 * 10 + 10  # MNIST-1D: 1 channel x 40 points, 10 classes
    cli.assert_finite(found)


def test_linear_trains_on_csv_columns(cli, tmp_path):
    from sklearn.datasets import load_iris

    iris = load_iris()
    path = tmp_path / "iris.csv"
    with path.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow([*iris.feature_names, "species"])
        rows.writerows([*x, iris.target_names[y]] for x, y in zip(iris.data, iris.target))
    run_dir = cli.train("data=csv", f"data.path={path}", "data.target=species", "model=linear", cwd=tmp_path)
    found = metrics(run_dir)
    assert found["params"] == 4 * 3 + 3  # 4 columns, 3 classes
    cli.assert_finite(found)


def test_doctor_remedies_for_a_linear_model():
    config = {"model": {"_target_": "dlopt.models.Linear", "compile": False},
              "data": {"_target_": "dlopt.data.sources.digits"}, "optimizer": {"lr": 0.001}}

    def offered(symptom: str) -> list[list[str]]:
        return [r.overrides for r in remedies(Finding(symptom, symptom, "", "", 1.0, ""), config)]

    assert offered("underfitting")[:2] == [["model=mlp"], ["model=cnn"]]
    assert ["regularization=dropout"] not in offered("overfitting")  # a linear model has no dropout to set
