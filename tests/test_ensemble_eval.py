"""An ensemble folder is a run: `dlopt eval run=ENSEMBLE_DIR` rebuilds its members from their checkpoints and scores
the ensemble again, and `dlopt explain run=ENSEMBLE_DIR` explains the ensemble (dlopt.saved_run.saved_ensemble,
dlopt.training.run.rebuild, dlopt.ensemble.network).

Real tiny trainings of the installed command on digits: a bagging ensemble of 2 members (mean), a stacked one of 2
(blending), and an ensemble of finished runs (runs= the bagging ensemble's members, vote). For each, eval's test and
val metrics and predictions equal those the ensemble command wrote from its members' saved predictions; explain's
probabilities are the ensemble's; a damaged ensemble.json or a member without its checkpoint is one line, exit 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

QUIET = ("diagnostics=none", "trainer.max_epochs=2", "trainer.limit_train_batches=8",
         "trainer.enable_progress_bar=false", "callbacks.progress_bar=null")


@pytest.fixture(scope="module")
def ensembles(cli, tmp_path_factory) -> dict[str, Path]:
    cwd = tmp_path_factory.mktemp("ensembles")
    made = {"bagging": cwd / "bagging", "stacking": cwd / "stacking", "runs": cwd / "runs"}
    cli.ok("ensemble", "method=bagging", "ensemble.members=2", *QUIET, f"hydra.run.dir={made['bagging']}", cwd=cwd)
    cli.ok("ensemble", "method=stacking", "ensemble.members=2", *QUIET, f"hydra.run.dir={made['stacking']}", cwd=cwd)
    cli.ok("ensemble", f"runs={made['bagging'] / 'members'}", "ensemble.select=top_k", "ensemble.k=2",
           "ensemble.combine=vote", f"hydra.run.dir={made['runs']}", cwd=cwd)
    return made


def _evaluated(cli, folder: Path, split: str, tmp_path: Path) -> tuple[dict, dict]:
    out = tmp_path / f"eval_{folder.name}_{split}"
    cli.ok("eval", f"run={folder}", f"split={split}", f"hydra.run.dir={out}", cwd=tmp_path)
    with np.load(out / "predictions.npz", allow_pickle=False) as arrays:
        return json.loads((out / "metrics.json").read_text()), {k: arrays[k] for k in arrays.files}


@pytest.mark.parametrize("kind", ["bagging", "stacking", "runs"])
@pytest.mark.parametrize("split", ["test", "val"])
def test_eval_of_an_ensemble_scores_it_again_from_its_members_checkpoints(cli, ensembles, tmp_path, kind, split):
    folder = ensembles[kind]
    metrics, arrays = _evaluated(cli, folder, split, tmp_path)
    written = json.loads((folder / "metrics.json").read_text())
    with np.load(folder / "predictions.npz", allow_pickle=False) as saved:
        np.testing.assert_allclose(arrays[f"{split}_probabilities"], saved[f"{split}_probabilities"], atol=2e-5)
        np.testing.assert_array_equal(arrays[f"{split}_labels"], saved[f"{split}_labels"])
    for key in ("acc", "ece"):
        assert metrics[f"{split}/{key}"] == pytest.approx(written[f"{split}/{key}"], abs=1e-4), key
    if kind == "runs":  # a vote: class shares, no probabilities, no loss
        assert f"{split}/loss" not in metrics and written[f"{split}/loss"] is None
    else:
        assert metrics[f"{split}/loss"] == pytest.approx(written[f"{split}/loss"], abs=1e-4)
    assert metrics["ensemble"] == str(folder.resolve())


def test_explain_of_an_ensemble_explains_the_ensemble(cli, ensembles, tmp_path):
    out = tmp_path / "explained"
    cli.ok("explain", f"run={ensembles['bagging']}", "method=[integrated_gradients,permutation]",
           "explain.samples=6", "explain.repeats=1", f"hydra.run.dir={out}", cwd=tmp_path)
    summary = json.loads((out / "explain.json").read_text())
    assert set(summary["methods"]) == {"integrated_gradients", "permutation"}
    with np.load(out / "attributions.npz", allow_pickle=False) as arrays, \
            np.load(ensembles["bagging"] / "predictions.npz", allow_pickle=False) as saved:
        assert np.isfinite(arrays["integrated_gradients"]).all() and np.abs(arrays["integrated_gradients"]).sum() > 0
        ensemble = saved["test_probabilities"]
        for row in arrays["probabilities"]:  # each explained sample's probabilities are the ensemble's for it
            assert np.abs(ensemble - row).max(1).min() < 2e-5


@pytest.mark.parametrize("damage", ["ensemble.json", "member checkpoint"])
def test_a_damaged_ensemble_folder_is_one_line(in_process, ensembles, tmp_path, damage):
    copy = tmp_path / "copy"
    shutil.copytree(ensembles["bagging"], copy)
    if damage == "ensemble.json":
        (copy / "ensemble.json").write_text('{"members": [1, 2')
        needle = "ensemble.json"
    else:
        (copy / "members" / "1" / "checkpoints" / "best.ckpt").unlink()
        needle = "member 1 has no checkpoint"
    result = in_process.run("eval", f"run={copy}", cwd=tmp_path)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and needle in lines[0] and f"run={copy}" in lines[0], \
        result.describe()
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("metrics.json"))
