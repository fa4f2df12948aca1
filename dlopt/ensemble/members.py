"""The members of an ensemble of finished runs: each run's metrics.json and predictions.npz (the best checkpoint's
class probabilities on the whole val and test splits), read as data. Failed, pruned and unreadable runs are skipped
and named; runs of other data (other labels or classes) are refused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from dlopt.errors import UserError
from dlopt.saved_run import cross_validation, is_run_folder, metrics, run_folders

SPLITS = ("val", "test")


@dataclass(frozen=True)
class Member:
    run: Path
    objective: Optional[float]
    probabilities: dict[str, np.ndarray]  # split -> (samples, classes)


@dataclass(frozen=True)
class Members:
    members: list[Member]
    skipped: list[tuple[Path, str]]  # run, why
    labels: dict[str, np.ndarray]  # split -> (samples,), the same for every member
    monitor: str
    mode: str


def folders_of(runs: Union[str, Sequence[str]], own: Optional[Path] = None) -> list[Path]:
    """The run folders `runs=` names: a sweep or search folder (every run below it but `own`, the command's own
    folder), or a list of run folders."""
    if isinstance(runs, str):
        folder = Path(runs).expanduser()
        if not folder.is_dir():
            raise UserError(f"runs={runs} does not exist; give a sweep or search folder "
                            "(outputs/train/multirun/DATE/TIME) or a list of run folders")
        found = [folder] if is_run_folder(folder) else \
            [p for p in run_folders(folder) if own is None or p.resolve() != own.resolve()]
        if not found:
            raise UserError(f"runs={runs} holds no dlopt run folders; give a sweep or search folder or a list of run "
                            "folders")
        return found
    for run in runs:
        if not is_run_folder(Path(str(run)).expanduser()):
            raise UserError(f"runs: {run} is not a dlopt run folder (it has no .hydra/config.yaml)")
    return [Path(str(run)).expanduser() for run in runs]


def _predictions(run: Path) -> tuple[Optional[dict[str, Any]], str]:
    """(split -> (probabilities, labels)) of predictions.npz, or None and why it cannot be used."""
    path = run / "predictions.npz"
    if not path.is_file():
        folds = cross_validation(run)
        if folds:  # each fold predicts its own test split: no common samples to combine on
            return None, f"{folds}; each fold tests its own rows"
        return None, "no predictions.npz (trained before dlopt saved predictions; train it again)"
    try:
        with np.load(path, allow_pickle=False) as arrays:
            found = {s: (arrays[f"{s}_probabilities"], arrays[f"{s}_labels"]) for s in SPLITS}
    except Exception as err:  # a file from disk: cut short, empty, not numpy's (zipfile, EOFError, ...)
        return None, f"predictions.npz is not readable ({' '.join(str(err).split())[:80] or type(err).__name__})"
    for split, (probabilities, labels) in found.items():
        if probabilities.ndim != 2 or labels.ndim != 1 or len(probabilities) != len(labels) \
                or not np.issubdtype(probabilities.dtype, np.floating) or not np.issubdtype(labels.dtype, np.integer):
            return None, f"predictions.npz holds no {split} probabilities and labels of the same samples"
        if not np.isfinite(probabilities).all():
            return None, f"predictions.npz holds {split} probabilities that are not finite"
    return found, ""


def read(runs: Union[str, Sequence[str]], own: Optional[Path] = None) -> Members:
    """The usable members among `runs` (but `own`, the command's folder), their shared labels and monitor; UserError
    when runs of other data or with other monitors are mixed."""
    members, skipped, labels, monitor, first, classes = [], [], None, None, None, 0
    for run in folders_of(runs, own):
        try:
            values = metrics(run, "runs")
        except UserError as err:  # "runs: FILE is not ...": the file is named
            skipped.append((run, str(err).partition(": ")[2]))
            continue
        if values is None:
            error = run / "error.txt"
            skipped.append((run, f"failed: {error.read_text().strip()}" if error.is_file() else "no metrics.json "
                            "(failed, or still running)"))
            continue
        if "monitor" not in values:
            skipped.append((run, "not a training run (its metrics.json names no monitor)"))
            continue
        if values.get("pruned"):
            skipped.append((run, "pruned"))
            continue
        found, why = _predictions(run)
        if found is None:
            skipped.append((run, why))
            continue
        if labels is None:
            labels, first = {s: found[s][1] for s in SPLITS}, run
            monitor, classes = (values["monitor"], values.get("mode", "min")), found["val"][0].shape[1]
        for split in SPLITS:
            if not np.array_equal(found[split][1], labels[split]) or found[split][0].shape[1] != classes:
                raise UserError(f"runs: {run} and {first} were trained on different data or classes (their {split} "
                                "samples differ); an ensemble combines runs of the same data. Runs of other seeds "
                                "split the data differently unless it is fixed: train them with data.split_seed=0")
        if (values["monitor"], values.get("mode", "min")) != monitor:
            raise UserError(f"runs: {run} monitors {values['monitor']} and {first} {monitor[0]}; the runs of an "
                            "ensemble are ranked by one monitor")
        members.append(Member(run, values.get("objective"), {s: found[s][0].astype(np.float64) for s in SPLITS}))
    return Members(members, skipped, labels or {}, *(monitor or ("val/loss", "min")))



def train_predictions(run: Path) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """A finished resampled run's (probabilities, labels) of its whole training split (predictions.npz), None when
    the run did not finish."""
    if not (run / "metrics.json").is_file() or not (run / "predictions.npz").is_file():
        return None
    with np.load(run / "predictions.npz", allow_pickle=False) as arrays:
        if "train_probabilities" not in arrays:
            raise UserError(f"{run}/predictions.npz holds no training-split predictions; boosting needs a member "
                            "trained with data.bootstrap or data.sample_weights")
        return arrays["train_probabilities"].astype(np.float64), arrays["train_labels"]


def read_folded(folders: Sequence[Path], folds: int) -> Members:
    """Members trained K-fold (stacking with ensemble.folds=K): member N is the K runs N/0..N/K-1, each trained
    without one fold of the training split. A member's val and test probabilities are the mean of its K runs', its
    'train' probabilities the out-of-fold ones (each training sample predicted by the run that did not train on it).
    A member with a fold that did not finish is skipped and named."""
    members, skipped, labels, monitor = [], [], {}, ("val/loss", "min")
    for folder in folders:
        runs = read([str(folder / str(k)) for k in range(folds) if (folder / str(k)).is_dir()])
        if len(runs.members) < folds:
            why = "; ".join(f"fold {run.name}: {why}" for run, why in runs.skipped) or "folds did not train"
            skipped.append((folder, f"{folds - len(runs.members)} of its {folds} folds did not finish ({why})"))
            continue
        if labels and any(not np.array_equal(runs.labels[s], labels[s]) for s in SPLITS):
            raise UserError(f"{folder} and {members[0].run} were trained on different data")
        labels, monitor = dict(runs.labels), (runs.monitor, runs.mode)
        out_of_fold, train_labels = None, None
        for member in runs.members:
            with np.load(member.run / "predictions.npz", allow_pickle=False) as arrays:
                if "fold_index" not in arrays or "train_probabilities" not in arrays:
                    raise UserError(f"{member.run}/predictions.npz holds no out-of-fold predictions (train it with "
                                    "data.fold=k/K)")
                index, probabilities = arrays["fold_index"], arrays["train_probabilities"]
                if out_of_fold is None:
                    out_of_fold, train_labels = np.full(probabilities.shape, np.nan), arrays["train_labels"]
                out_of_fold[index] = probabilities[index]
        if np.isnan(out_of_fold).any():
            raise UserError(f"{folder}: its {folds} folds do not cover the training split (trained with other folds?)")
        labels["train"] = train_labels
        mean = {s: np.mean([m.probabilities[s] for m in runs.members], axis=0) for s in SPLITS}
        members.append(Member(folder, None, {**mean, "train": out_of_fold}))
    return Members(members, skipped, labels, *monitor)
