"""End to end: `dlopt explain run=RUN_DIR | ckpt_path=FILE` on real runs (dlopt/apps/explain.py, dlopt/explain/).

- ground truth: an MLP trained on data=synthetic data.informative=5 (only x0..x4 carry the class) is explained by
  permutation, integrated gradients, KernelSHAP and LIME, and each ranks the five informative inputs on top
  (precision@5) and beats random deletion;
- a digits CNN, explained by default: explain.json (the four default methods, top features, deletion AUCs that
  agree with the curves), attributions.npz (loadable without pickle), three PNGs, TensorBoard images; the features
  are the patches of a 4 x 4 grid; the samples are stratified by class and fixed by the seed, and so are the
  attributions; nothing is written into the run explained;
- ckpt_path=FILE and the other methods (occlusion, gradient_shap, shapley_sampling, saliency); explain.target
  (label, a class number), explain.baseline (zero, blur), explain.patch (1, and 3, which does not divide 8),
  explain.randomization;
- other inputs and models: a ViT on MNIST-1D signals (segments), an MLP on a CSV table with a categorical column
  (one feature per CSV column, the one-hot columns grouped under the column's name);
- bad inputs are one line naming the key, exit 2, nothing left under outputs/.

Trainings are small (seeds fixed) and shared through module-scoped fixtures; each explanation runs once and is read
by several tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("attributions", "importance", "faithfulness")
DEFAULT_METHODS = ["permutation", "integrated_gradients", "lime", "kernel_shap"]
# a few epochs of the default digits CNN: it learns enough (test acc ~0.9) for the deletion check to mean something
DIGITS = ("trainer.max_epochs=3", "trainer.limit_train_batches=8", "trainer.limit_val_batches=2",
          "trainer.limit_test_batches=2")
# 20 inputs, of which only the first 5 carry the class; whole splits (cli.train's limits undone), early stopping on
GROUND_TRUTH = ("data=synthetic", "model=mlp", "data.shape=[20]", "data.informative=5", "data.num_classes=4",
                "data.num_samples=2000", "trainer.max_epochs=20", "trainer.limit_train_batches=null",
                "trainer.limit_val_batches=null", "trainer.limit_test_batches=null")
CSV_COLUMNS = ["height", "weight", "age", "color", "noise"]  # the features; `label` is the target


@dataclass
class Explained:
    """One finished `dlopt explain`: its output, folder, explain.json and attributions.npz."""

    output: str
    folder: Path
    summary: dict
    arrays: dict[str, np.ndarray]


def strict_json(path: Path):
    def reject(constant: str):
        raise ValueError(f"{path} holds the non-JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def explain(cli, cwd: Path, *args: str) -> Explained:
    """`dlopt explain ARGS` in cwd: exit 0, no traceback, one new outputs/explain/DATE/TIME folder."""
    cwd.mkdir(parents=True, exist_ok=True)
    result = cli.ok("explain", *args, cwd=cwd, timeout=600)
    [folder] = cli.run_dirs(cwd, "explain")
    with np.load(folder / "attributions.npz", allow_pickle=False) as npz:  # plain arrays, no pickled objects
        arrays = {key: npz[key] for key in npz.files}
    return Explained(result.output, folder, strict_json(folder / "explain.json"), arrays)


def files_of(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def importance(arrays: dict[str, np.ndarray], method: str) -> np.ndarray:
    """What explain.json ranks a method's features by: permutation's accuracy drop (global, the same in every row),
    else the mean |attribution| over the samples."""
    return arrays[method][0] if method == "permutation" else np.abs(arrays[method]).mean(0)


def area(curves: np.ndarray, fractions: np.ndarray) -> float:
    """The trapezoid area under the mean of deletion curves (N, fractions)."""
    mean = curves.mean(0)
    return float(((mean[1:] + mean[:-1]) / 2 * np.diff(fractions)).sum())


def target_probability(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return arrays["probabilities"][np.arange(len(arrays["targets"])), arrays["targets"]]


# --- runs and explanations, shared -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(cli, tmp_path_factory) -> Path:
    return cli.train(*DIGITS, cwd=tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def signal_run(cli, tmp_path_factory) -> Path:
    """A tiny ViT on MNIST-1D (signals of 1 x 40)."""
    return cli.train("data=mnist1d", "model=vit", cwd=tmp_path_factory.mktemp("signal"))


@pytest.fixture(scope="module")
def table_run(cli, tmp_path_factory) -> Path:
    """A tiny MLP on a CSV of 300 rows: four numeric columns, a categorical `color` (3 values), a `label` that
    depends on height, weight and color."""
    cwd = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(0)
    rows = ["height,weight,age,color,noise,label"]
    for _ in range(300):
        height, weight, age, noise = rng.normal(size=4)
        color = ("red", "green", "blue")[rng.integers(3)]
        label = "big" if height + weight + (color == "red") > 0.5 else "small"
        rows.append(f"{height:.3f},{weight:.3f},{age:.3f},{color},{noise:.3f},{label}")
    (cwd / "table.csv").write_text("\n".join(rows) + "\n")
    # an absolute path: the explanation runs in another folder
    return cli.train("data=csv", f"data.path={cwd / 'table.csv'}", "data.target=label", "data.categorical=[color]",
                     "model=mlp", cwd=cwd)


@pytest.fixture(scope="module")
def default(cli, digits_run, tmp_path_factory) -> Explained:
    """`dlopt explain run=DIGITS_RUN`, nothing else."""
    before = files_of(digits_run)
    done = explain(cli, tmp_path_factory.mktemp("default"), f"run={digits_run}")
    assert files_of(digits_run) == before, "dlopt explain changed the run it explained"
    return done


@pytest.fixture(scope="module")
def by_checkpoint(cli, digits_run, tmp_path_factory) -> Explained:
    """The other per-sample methods, and lime again, through ckpt_path=; the default seed and samples."""
    return explain(cli, tmp_path_factory.mktemp("ckpt"), f"ckpt_path={digits_run / 'checkpoints' / 'best.ckpt'}",
                   "method=[occlusion,gradient_shap,shapley_sampling,saliency,lime]")


@pytest.fixture(scope="module")
def coarse(cli, digits_run, tmp_path_factory) -> Explained:
    """3 x 3 patches (3 does not divide 8), the blurred sample as baseline, class 3 explained, one sample a class."""
    return explain(cli, tmp_path_factory.mktemp("coarse"), f"run={digits_run}", "method=occlusion",
                   "explain.patch=3", "explain.baseline=blur", "explain.target=3", "explain.samples=10")


@pytest.fixture(scope="module")
def fine(cli, digits_run, tmp_path_factory) -> Explained:
    """One feature per pixel, zero baseline, the true class explained, with the model-randomization check."""
    return explain(cli, tmp_path_factory.mktemp("fine"), f"run={digits_run}", "method=[saliency,integrated_gradients]",
                   "explain.patch=1", "explain.baseline=zero", "explain.target=label", "explain.randomization=true")


# --- 1. ground truth --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_method_finds_the_informative_inputs_of_synthetic_data(cli, tmp_path):
    (tmp_path / "train").mkdir()
    run_dir = cli.train(*GROUND_TRUTH, cwd=tmp_path / "train")
    assert cli.metrics(run_dir)["test/acc"] > 0.6, cli.metrics(run_dir)  # it learned (a guess is 0.25)
    methods = ["permutation", "integrated_gradients", "kernel_shap", "lime"]
    done = explain(cli, tmp_path / "explain", f"run={run_dir}",
                   f"method=[{','.join(methods)}]", "explain.samples=32")
    summary = done.summary
    assert summary["kind"] == "table" and summary["features"] == [f"x{i}" for i in range(20)], summary["features"]
    assert summary["informative_features"] == ["x0", "x1", "x2", "x3", "x4"]
    assert set(summary["methods"]) == set(methods) and summary["samples"] == 32  # JSON keys: sorted
    for method in methods:
        entry = summary["methods"][method]
        assert entry["precision_at_k"] >= 0.8, (method, entry)
        assert entry["beats_random"] is True and entry["deletion_auc"] < entry["random_auc"], (method, entry)
        assert done.arrays[method].shape == (32, 20), (method, done.arrays[method].shape)
        # the precision explain.json reports is that of the attributions it saved
        top5 = set(np.argsort(-importance(done.arrays, method), kind="stable")[:5].tolist())
        assert len(top5 & set(range(5))) / 5 == pytest.approx(entry["precision_at_k"]), (method, top5)
        assert f"precision_at_k={entry['precision_at_k']:.2f}" in done.output
    assert done.arrays["permutation_sd"].shape == (20,)


# --- 2. a digits CNN, explained by default ----------------------------------------------------------------------------


def test_the_default_explanation_writes_every_file(default):
    folder = default.folder
    for name in ("explain.json", "attributions.npz", "explain.log", *(f"{f}.png" for f in FIGURES)):
        assert (folder / name).is_file(), (name, sorted(p.name for p in folder.iterdir()))
    for figure in FIGURES:
        from PIL import Image

        data = (folder / f"{figure}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, (figure, len(data))
        with Image.open(folder / f"{figure}.png") as picture:
            assert min(picture.size) >= 200, (figure, picture.size)
    assert "explanations (deletion AUC below random" in (folder / "explain.log").read_text()


def test_the_pictures_are_in_tensorboard(default):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events] = list((default.folder / "tensorboard").glob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    assert set(accumulator.Tags()["images"]) == {f"explain/{f}" for f in FIGURES}, accumulator.Tags()
    image = accumulator.Images("explain/attributions")[0]
    assert image.encoded_image_string.startswith(PNG_MAGIC) and image.width > 100


def test_the_default_methods_and_their_summary(default, digits_run):
    summary, arrays = default.summary, default.arrays
    assert set(summary["methods"]) == set(DEFAULT_METHODS), list(summary["methods"])
    assert (summary["run"], summary["checkpoint"]) == (f"run={digits_run}",
                                                       str((digits_run / "checkpoints" / "best.ckpt").resolve()))
    assert (summary["split"], summary["samples"], summary["seed"], summary["target"], summary["baseline"],
            summary["kind"], summary["model"]) == ("test", 16, 0, "predicted", "mean", "image", "dlopt.models.CNN")
    assert summary["classes"] == [str(c) for c in range(10)]
    assert "informative_features" not in summary  # no ground truth outside data=synthetic
    random_auc = area(arrays["random_deletion"], arrays["fractions"])
    for method in DEFAULT_METHODS:
        entry = summary["methods"][method]
        assert entry["seconds_per_sample"] > 0 and "precision_at_k" not in entry, entry
        assert "randomization_rank_corr" not in entry  # only with explain.randomization=true
        # the top features are the five highest of the saved attributions, named (ties in either order)
        score = dict(zip(summary["features"], importance(arrays, method).tolist()))
        top = entry["top_features"]
        assert [t["importance"] for t in top] == pytest.approx(sorted(score.values(), reverse=True)[:5]), top
        assert all(t["importance"] == pytest.approx(score[t["name"]]) for t in top), (top, score)
        assert len({t["name"] for t in top}) == 5
        assert ("sd" in entry["top_features"][0]) == (method == "permutation")
        # the AUCs are those of the saved curves, and a CNN that learned is explained better than random
        curve = arrays[f"{method}_deletion"]
        assert curve.shape == (16, 21)
        assert entry["deletion_auc"] == pytest.approx(area(curve, arrays["fractions"]), abs=1e-5)
        assert entry["random_auc"] == pytest.approx(random_auc, abs=1e-5)
        assert entry["beats_random"] is True and entry["deletion_auc"] < entry["random_auc"], (method, entry)
    sd = dict(zip(summary["features"], arrays["permutation_sd"]))
    for top in summary["methods"]["permutation"]["top_features"]:
        assert top["sd"] == pytest.approx(float(sd[top["name"]])) and top["sd"] >= 0
    lines = default.output.splitlines()
    assert all(any(line.startswith(method) for line in lines) for method in DEFAULT_METHODS), default.output


def test_the_arrays_of_the_default_explanation(default):
    arrays = default.arrays
    assert arrays["inputs"].shape == (16, 1, 8, 8) and arrays["labels"].shape == (16,)
    assert arrays["probabilities"].shape == (16, 10)
    np.testing.assert_allclose(arrays["probabilities"].sum(1), 1, atol=1e-5)
    assert (arrays["targets"] == arrays["probabilities"].argmax(1)).all()  # target=predicted
    np.testing.assert_allclose(arrays["fractions"], np.linspace(0, 1, 21), atol=1e-6)
    for method in DEFAULT_METHODS:
        assert arrays[method].shape == (16, 16) and np.isfinite(arrays[method]).all(), method
        # nothing removed: the curve starts at the probability of the target
        np.testing.assert_allclose(arrays[f"{method}_deletion"][:, 0], target_probability(arrays), atol=1e-5)
    permutation = arrays["permutation"]
    assert (permutation == permutation[0]).all()  # global: one row, repeated
    assert arrays["permutation_sd"].shape == (16,)
    # everything removed: the mean image, the same for every sample explained for the same class
    last = arrays["random_deletion"][:, -1]
    for target in set(arrays["targets"].tolist()):
        assert np.ptp(last[arrays["targets"] == target]) < 1e-5, target


def test_image_features_are_the_patches_of_a_4_by_4_grid(default):
    names = default.summary["features"]
    assert len(names) == 16 and names[:2] == ["rows 0-1 cols 0-1", "rows 0-1 cols 2-3"], names
    assert names[4] == "rows 2-3 cols 0-1" and names[-1] == "rows 6-7 cols 6-7", names
    assert default.arrays["feature_names"].tolist() == names
    mask = default.arrays["feature_mask"]
    assert mask.shape == (1, 8, 8)
    rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    assert (mask[0] == rows // 2 * 4 + cols // 2).all(), mask


def test_samples_are_stratified_and_fixed_by_the_seed(default, coarse):
    labels = default.arrays["labels"]
    assert sorted(labels[:10].tolist()) == list(range(10)), labels  # one of each class first
    assert np.bincount(labels, minlength=10).max() == 2, labels
    assert sorted(coarse.arrays["labels"].tolist()) == list(range(10))  # explain.samples=10: ten classes
    # the same seed, the same samples: ten of them are the first ten of sixteen
    np.testing.assert_array_equal(coarse.arrays["inputs"], default.arrays["inputs"][:10])
    np.testing.assert_array_equal(coarse.arrays["labels"], labels[:10])


# --- 3. ckpt_path, the other methods and the options ------------------------------------------------------------------


def test_ckpt_path_and_the_other_per_sample_methods(by_checkpoint, digits_run):
    summary, arrays = by_checkpoint.summary, by_checkpoint.arrays
    ckpt = digits_run / "checkpoints" / "best.ckpt"
    assert summary["run"] == f"ckpt_path={ckpt}" and summary["checkpoint"] == str(ckpt.resolve())
    methods = ["occlusion", "gradient_shap", "shapley_sampling", "saliency", "lime"]
    assert set(summary["methods"]) == set(methods)
    for method in methods:
        assert arrays[method].shape == (16, 16) and np.isfinite(arrays[method]).all(), method
        assert np.abs(arrays[method]).max() > 0, method  # the method attributed something
        assert arrays[f"{method}_deletion"].shape == (16, 21)
        assert summary["methods"][method]["deletion_auc"] < summary["methods"][method]["random_auc"], method
    assert (arrays["saliency"] >= 0).all()  # |gradient| summed over a patch
    assert "permutation_sd" not in arrays


def test_the_same_seed_gives_the_same_attributions(default, by_checkpoint):
    """LIME draws at random: with the same seed, the same samples and values, whatever the other methods."""
    np.testing.assert_array_equal(by_checkpoint.arrays["inputs"], default.arrays["inputs"])
    np.testing.assert_array_equal(by_checkpoint.arrays["targets"], default.arrays["targets"])
    np.testing.assert_allclose(by_checkpoint.arrays["lime"], default.arrays["lime"], rtol=1e-5, atol=1e-7)
    top = "top_features"
    assert by_checkpoint.summary["methods"]["lime"][top] == default.summary["methods"]["lime"][top]


def test_patch_3_gives_9_patches_the_last_ones_narrower(coarse):
    names = coarse.summary["features"]
    assert len(names) == 9 and names[0] == "rows 0-2 cols 0-2" and names[-1] == "rows 6-7 cols 6-7", names
    assert coarse.arrays["occlusion"].shape == (10, 9)
    assert "explain.patch=3 does not divide the input (8 x 8): the last row and column of patches are narrower" \
        in coarse.output, coarse.output
    mask = coarse.arrays["feature_mask"][0]
    assert np.bincount(mask.flatten()).tolist() == [9, 9, 6, 9, 9, 6, 6, 6, 4]


def test_a_class_number_target_and_the_blur_baseline(coarse):
    assert (coarse.arrays["targets"] == 3).all(), coarse.arrays["targets"]
    assert (coarse.summary["target"], coarse.summary["baseline"]) == (3, "blur")
    np.testing.assert_allclose(coarse.arrays["occlusion_deletion"][:, 0], target_probability(coarse.arrays), atol=1e-5)
    # everything removed: each sample blurred, a different image each, so not one probability for all
    assert np.ptp(coarse.arrays["random_deletion"][:, -1]) > 1e-4, coarse.arrays["random_deletion"][:, -1]


def test_patch_1_label_target_zero_baseline_and_randomization(fine):
    summary, arrays = fine.summary, fine.arrays
    assert len(summary["features"]) == 64 and summary["features"][:2] == ["rows 0 cols 0", "rows 0 cols 1"]
    assert summary["features"][-1] == "rows 7 cols 7"
    assert (arrays["targets"] == arrays["labels"]).all()  # explain.target=label
    assert (summary["target"], summary["baseline"]) == ("label", "zero")
    for method in ("saliency", "integrated_gradients"):
        assert arrays[method].shape == (16, 64), method
        corr = summary["methods"][method]["randomization_rank_corr"]
        assert isinstance(corr, float) and -1 <= corr <= 1, (method, corr)
        assert f"randomization_rank_corr={corr:.2f}" in fine.output
    # the network really is drawn again: the same network would correlate 1 with itself
    assert summary["methods"]["saliency"]["randomization_rank_corr"] < 0.9, summary["methods"]["saliency"]
    # everything removed: the zero image, the same for every sample of the same class
    last = arrays["random_deletion"][:, -1]
    for label in set(arrays["labels"].tolist()):
        assert np.ptp(last[arrays["labels"] == label]) < 1e-5, label


# --- 4. signals, tables, a transformer --------------------------------------------------------------------------------


def test_a_vit_on_signals_is_explained_by_segments(cli, signal_run, tmp_path):
    done = explain(cli, tmp_path, f"run={signal_run}", "method=[integrated_gradients,occlusion]")
    summary = done.summary
    assert summary["kind"] == "signal" and summary["model"] == "dlopt.models.ViT", summary
    names = summary["features"]  # 40 steps, segments of 40 // 16 = 2
    assert names == [f"t {i}-{i + 1}" for i in range(0, 40, 2)], names
    assert done.arrays["inputs"].shape == (16, 1, 40) and done.arrays["feature_mask"].shape == (1, 40)
    assert (done.arrays["feature_mask"][0] == np.arange(40) // 2).all()
    for method in ("integrated_gradients", "occlusion"):
        assert done.arrays[method].shape == (16, 20) and np.isfinite(done.arrays[method]).all(), method
        assert summary["methods"][method]["top_features"][0]["name"] in names
    for figure in FIGURES:
        assert (done.folder / f"{figure}.png").read_bytes().startswith(PNG_MAGIC)


def test_a_csv_table_is_explained_by_its_columns(cli, table_run, tmp_path):
    done = explain(cli, tmp_path, f"run={table_run}")
    summary, arrays = done.summary, done.arrays
    assert summary["kind"] == "table" and summary["features"] == CSV_COLUMNS, summary["features"]
    assert summary["features"].count("color") == 1 and arrays["feature_names"].tolist() == CSV_COLUMNS
    assert arrays["inputs"].shape == (16, 7)  # color one-hot: three inputs
    assert arrays["feature_mask"].tolist() == [0, 1, 2, 3, 3, 3, 4]
    assert summary["classes"] == ["big", "small"]
    for method in DEFAULT_METHODS:
        assert arrays[method].shape == (16, len(CSV_COLUMNS)), method
        assert {t["name"] for t in summary["methods"][method]["top_features"]} <= set(CSV_COLUMNS)
    assert arrays["permutation_sd"].shape == (len(CSV_COLUMNS),)


# --- 5. bad inputs ----------------------------------------------------------------------------------------------------


def one_line(result, *needles: str) -> str:
    """Exit 2, no traceback, and the whole output one line holding every needle."""
    assert result.returncode == 2 and "Traceback" not in result.output, result.describe()
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), (needles, result.describe())
    return lines[0]


BAD = {  # id -> (arguments, needles of the one line); {digits}, {signal}, {tmp} are filled in
    # told before torch is imported
    "unknown method": (("run={digits}", "method=lyme"),
                       ("method=lyme is not a method of dlopt explain (did you mean lime?)", "kernel_shap")),
    "no method": (("run={digits}", "method=[]"), ("method=[] names no method",)),
    "no samples": (("run={digits}", "explain.samples=0"),
                   ("explain.samples=0 is not valid: expected an integer >= 1",)),
    "not a run": (("run={tmp}/notes",), ("run={tmp}/notes is not a dlopt run folder",)),
    "neither run nor checkpoint": ((), ("give exactly one of run=RUN_DIR", "ckpt_path=FILE")),
    "run and checkpoint": (("run={digits}", "ckpt_path={digits}/checkpoints/best.ckpt"),
                           ("give exactly one of run=RUN_DIR",)),
    # told once the run is rebuilt
    "more samples than the split": (("run={digits}", "explain.samples=100000"),
                                    ("explain.samples=100000 is more than the", "samples of the test split",
                                     "give at most")),
    "no such class": (("run={digits}", "explain.target=99"),
                      ("explain.target=99 is not a class of this run", "from 0 to 9")),
    "patch larger than the image": (("run={digits}", "explain.patch=9"),
                                    ("explain.patch=9 is larger than the input (8 x 8); give at most 8",)),
    "blur of a signal": (("run={signal}", "explain.baseline=blur", "method=saliency"),
                         ("explain.baseline=blur is for images", "signal", "mean or zero")),
    "not a dlopt checkpoint": (("ckpt_path={tmp}/plain.ckpt",),
                               ("ckpt_path={tmp}/plain.ckpt", "was not written by dlopt train")),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_input_is_one_line_and_leaves_nothing(in_process, digits_run, signal_run, tmp_path, case):
    args, needles = BAD[case]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("not a run\n")
    if case == "not a dlopt checkpoint":
        import torch

        torch.save({"epoch": 3, "weights": torch.zeros(2)}, tmp_path / "plain.ckpt")
    names = {"digits": digits_run, "signal": signal_run, "tmp": tmp_path}
    before = files_of(digits_run)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = in_process.run("explain", *(a.format(**names) for a in args), cwd=cwd)
    one_line(result, *(n.format(**names) for n in needles))
    assert not (cwd / "outputs").exists(), sorted(map(str, (cwd / "outputs").rglob("*")))
    assert files_of(digits_run) == before
