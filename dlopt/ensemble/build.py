"""An ensemble, built and scored beside its members on the validation and test splits, and written: ensemble.json,
metrics.json, predictions.npz, summary.md and ensemble.png in the command's folder.

- runs=...: finished runs read (members.py), selected and weighted (selection.py); nothing trains. A greedy
  selection that keeps one run says so (ensemble.json's and summary.md's note, the log) and names top_k.
- method=bagging|boosting|stacking: the members trained first (training.py) under the folder's members/, then
  combined by the mean of their probabilities (bagging), SAMME's weighted vote (boosting.py) or a meta-learner
  fitted on held-out predictions: out-of-fold ones of the training split, or the validation split's (stacking.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from omegaconf import DictConfig

from dlopt.ensemble import boosting, stacking, training
from dlopt.ensemble.members import SPLITS, Members, read, read_folded, train_predictions
from dlopt.ensemble.plot import plot_ensemble
from dlopt.ensemble.scores import scores
from dlopt.ensemble.selection import combine, greedy, top_k
from dlopt.errors import UserError
from dlopt.training.report import write_json, write_npz

log = logging.getLogger(__name__)

Predict = Callable[[list[np.ndarray], np.ndarray], np.ndarray]  # members' probabilities of a split, weights -> ours


def ensemble(cfg: DictConfig, run_dir: Path, overrides: tuple[list[str], list[str]] = ([], []),
             config_dirs: tuple[str, ...] = ()) -> dict[str, Any]:
    """The command: `overrides` are the command line's (task, hydra), passed on to the members it trains."""
    if cfg.get("method") is None:
        return _of_runs(cfg, run_dir)
    return _trained(cfg, run_dir, overrides, config_dirs)


def _of_runs(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    options = cfg.ensemble
    found = read(cfg.runs if isinstance(cfg.runs, str) else list(cfg.runs), own=run_dir)
    _enough(found, f"runs={cfg.runs} has")
    members = found.members
    if options.select == "top_k":
        if options.k > len(members):
            raise UserError(f"ensemble.k={options.k} is more than the {len(members)} finished runs of runs={cfg.runs}; "
                            f"give at most {len(members)}")
        objectives = [m.objective for m in members]
        weights = top_k(objectives, options.k, found.mode)
        steps = [top_k(objectives, size, found.mode) for size in range(1, options.k + 1)]
    else:
        weights, steps = greedy([m.probabilities["val"] for m in members], found.labels["val"], options.rounds)
    names = [_name(m.run, cfg.runs) for m in members]
    info = {"select": options.select, "combine": options.combine, "runs": str(cfg.runs)}
    if np.count_nonzero(weights) == 1:
        info["note"] = _one_run(names[int(np.argmax(weights))], len(members))
    return _write(run_dir, found, names, weights, steps, _weighted(options.combine), info,
                  vote=options.combine == "vote")


def _trained(cfg: DictConfig, run_dir: Path, overrides: tuple[list[str], list[str]],
             config_dirs: tuple[str, ...]) -> dict[str, Any]:
    options, method = cfg.ensemble, cfg.method
    folds = options.folds if method == "stacking" else 0
    plan = training.plan(*overrides, options.members, cfg.seed, cfg.data.split_seed)
    training.check_members(plan, config_dirs)
    members_dir = run_dir / "members"
    numbers = list(range(len(plan.own)))
    rounds: list[boosting.Round] = []
    if method == "boosting":
        numbers, rounds = _boost(plan, members_dir, numbers, config_dirs)
        if len(numbers) < 2 and rounds:
            raise UserError(f"boosting stopped after member 0: {rounds[0].stop}; with one member there is no "
                            "ensemble: train weaker members (fewer epochs, trainer.max_epochs=2, or a smaller model) "
                            "or use method=bagging")
    else:
        extra = {n: _extra(method, n, members_dir) for n in numbers}
        training.train(plan, members_dir, numbers, extra, config_dirs, folds=folds)
    present = [members_dir / str(n) for n in numbers if (members_dir / str(n)).is_dir()]
    found = read_folded(present, folds) if folds else read([str(p) for p in present], own=run_dir)
    missing = [n for n in numbers if not (members_dir / str(n)).is_dir()]
    found.skipped.extend((members_dir / str(n), "did not train (its sweep stopped)") for n in missing)
    _enough(found, f"method={method}: of its {len(numbers)} members, {members_dir} has")
    if found.skipped:
        log.warning("the ensemble is built from the %d members that finished", len(found.members))
    names = [m.run.name for m in found.members]
    info: dict[str, Any] = {"method": method, "members_dir": str(members_dir),
                            "overrides": {str(n): plan.overrides(n, _extra(method, n, members_dir, folds))
                                          for n in numbers}}
    sizes = range(1, len(found.members) + 1)
    if method == "stacking":
        held_out = "train" if folds else "val"  # out-of-fold predictions of the training split, or blending
        classes = found.members[0].probabilities["val"].shape[1]
        fitted = [stacking.fit(options.meta, [m.probabilities[held_out] for m in found.members[:size]],
                               found.labels[held_out], cfg.seed) for size in sizes]
        stacking.save(fitted[-1], run_dir / "meta.npz")
        info.update(meta=options.meta, folds=folds, fitted_on=f"{held_out} ({'out-of-fold' if folds else 'blending'})")
        if not folds:
            info["note"] = "the validation scores of a blended ensemble are those of the data its meta-learner saw"
        return _write(run_dir, found, names, np.ones(len(found.members)), [np.arange(len(found.members)) < size
                                                                           for size in sizes],
                      lambda p, w: stacking.predict(fitted[int(w.sum()) - 1], [q for q, x in zip(p, w) if x], classes),
                      info)
    if method == "boosting":
        alphas = {str(m.run.name): r.alpha for m, r in zip(found.members, rounds)}
        weights = np.array([alphas.get(n) or 0.0 for n in names])
        info.update(combine="vote", rounds=[{"member": n, "weighted_error": r.error, "alpha": r.alpha,
                                             "stop": r.stop} for n, r in zip(numbers, rounds)])
        return _write(run_dir, found, names, weights, [np.where(np.arange(len(weights)) < size, weights, 0)
                                                       for size in sizes], _weighted("vote"), info, vote=True)
    info.update(combine=options.combine)
    return _write(run_dir, found, names, np.ones(len(found.members)),
                  [(np.arange(len(found.members)) < size).astype(float) for size in sizes],
                  _weighted(options.combine), info, vote=options.combine == "vote")


def _boost(plan: training.Plan, members_dir: Path, numbers: list[int],
           config_dirs: tuple[str, ...]) -> tuple[list[int], list[boosting.Round]]:
    """SAMME, one member after another: member 0 on a uniform bootstrap, member m on a resample drawn with the
    weights the earlier members' errors left (weights/m.npy). Returns the members that count and their rounds."""
    rounds: list[boosting.Round] = []
    for n in numbers:
        if rounds:
            (members_dir.parent / "sample_weights").mkdir(exist_ok=True)
            np.save(_weights_file(members_dir, n), rounds[-1].weights, allow_pickle=False)
        training.train(plan, members_dir, [n], {n: _extra("boosting", n, members_dir)}, config_dirs)
        found = train_predictions(members_dir / str(n))
        if found is None:
            log.warning("boosting stops: member %d did not finish", n)
            return numbers[:n], rounds
        probabilities, labels = found
        step = boosting.samme(rounds[-1].weights if rounds else boosting.uniform(len(labels)), probabilities, labels)
        log.info("boosting member %d: weighted training error %.4f, alpha %s", n, step.error,
                 "-" if step.alpha is None else f"{step.alpha:.3f}")
        rounds.append(step)
        if step.stop:
            log.warning("boosting stops after member %d: %s", n, step.stop)
            return numbers[:n + 1], rounds
    return numbers, rounds


def _weights_file(members_dir: Path, n: int) -> Path:
    return (members_dir.parent / "sample_weights" / f"{n}.npy").resolve()


def _extra(method: str, n: int, members_dir: Path, folds: int = 0) -> list[str]:
    """Member n's overrides that its method adds: bagging's bootstrap, boosting's sample weights (member 0: a
    uniform bootstrap), stacking's folds (a sweep over them)."""
    if method == "bagging" or method == "boosting" and n == 0:
        return ["data.bootstrap=true"]
    if method == "boosting":
        return [f"data.sample_weights={_weights_file(members_dir, n)}"]
    return ["data.fold=" + ",".join(f"{k}/{folds}" for k in range(folds))] if folds else []


def _enough(found: Members, what: str) -> None:
    """UserError unless at least 2 members finished (naming the skipped ones); else the skipped ones logged."""
    if len(found.members) < 2:
        skipped = "; ".join(f"{run}: {why}" for run, why in found.skipped)
        raise UserError(f"{what} {len(found.members)} finished run(s) to combine; an ensemble needs at least 2"
                        + (f" (skipped {skipped})" if skipped else ""))
    for run, why in found.skipped:
        log.warning("skipped %s: %s", run, why)


def _weighted(how: str) -> Predict:
    return lambda probabilities, weights: combine(probabilities, weights, how)


def _write(run_dir: Path, found: Members, names: list[str], weights: np.ndarray, steps: list[np.ndarray],
           predict: Predict, info: dict[str, Any], vote: bool = False) -> dict[str, Any]:
    """Score the ensemble (`predict` with `weights`) and its members, and write the folder's files; `steps`: the
    weights at each size of the ensemble, for its curve."""
    members, labels = found.members, found.labels

    def ensembled(w: np.ndarray, splits: tuple[str, ...] = SPLITS) -> dict[str, np.ndarray]:
        return {s: predict([m.probabilities[s] for m in members], np.asarray(w, dtype=np.float64)) for s in splits}

    def scored(probabilities: dict[str, np.ndarray]) -> dict[str, dict[str, Optional[float]]]:
        """The ensemble's scores per split; a vote's class shares are no probabilities: no NLL for them."""
        values = {s: scores(p, labels[s]) for s, p in probabilities.items()}
        return {s: {**v, "nll": None} if vote else v for s, v in values.items()}

    rows = [{"name": name, "run": str(m.run), "weight": float(w), "objective": m.objective,
             **{s: scores(m.probabilities[s], labels[s]) for s in SPLITS}}
            for name, m, w in zip(names, members, weights)]
    final = ensembled(weights)
    combined = scored(final)
    taken = [r for r in rows if r["weight"]]
    best = min(taken, key=lambda r: r["val"]["nll"])  # by validation: the test split decides nothing here
    mean = {k: float(np.mean([r["test"][k] for r in taken])) for k in combined["test"]}
    summary = {
        **info, "monitor": found.monitor, "members": rows, "ensemble": combined, "best_member": best["name"],
        "ensemble_minus_best_member": _minus(combined["test"], best["test"]),
        "ensemble_minus_mean_member": _minus(combined["test"], mean),
        "mean_confidence": {s: float(p.max(1).mean()) for s, p in final.items()},
        "skipped": [{"run": str(run), "why": why} for run, why in found.skipped],
        "curve": [scored(ensembled(w, ("test",)))["test"] for w in steps],
    }
    write_npz({**{f"{s}_probabilities": p.astype(np.float32) for s, p in final.items()},
               **{f"{s}_labels": labels[s] for s in SPLITS}}, run_dir / "predictions.npz")
    plot_ensemble(rows, combined["test"], summary["curve"], run_dir / "ensemble.png")
    table = _table(rows, combined, summary)
    (run_dir / "summary.md").write_text(table)
    write_json(summary, run_dir / "ensemble.json")
    write_json({"kind": "ensemble", "members": len(taken), **{f"{s}/{'loss' if k == 'nll' else k}": v
                                                               for s in SPLITS for k, v in combined[s].items()}},
               run_dir / "metrics.json")
    how = info.get("method") or f"{info['select']}, {info['combine']}"
    if len(taken) == 1:
        log.info("not an ensemble: 1 of %d runs kept (%s):\n%s", len(rows), how, table)
    else:
        log.info("ensemble of %d of %d runs (%s):\n%s", len(taken), len(rows), how, table)
    return summary


def _one_run(name: str, runs: int) -> str:
    """What a greedy selection that kept one run means, and how to average runs anyway."""
    average = ("ensemble.select=top_k ensemble.k=2 averages both" if runs == 2 else
               f"ensemble.select=top_k ensemble.k=N averages the N best (2 <= N <= {runs})")
    return (f"greedy selection kept one run, {name}: no other run lowered its validation NLL, so this is that run "
            f"alone, not an ensemble, and its gains are 0; {average} instead")


def _minus(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: None if a[k] is None else a[k] - b[k] for k in a}


def _fixed(value: Any, sign: str = "") -> str:
    """A score with 4 decimals for the report's table, '-' for none."""
    return "-" if value is None else f"{value:{sign}.4f}"


def _name(run: Path, runs: Any) -> str:
    """The run's folder below a sweep folder (0, 1, ...), else its path."""
    if isinstance(runs, str) and run != Path(runs).expanduser():
        return str(run.relative_to(Path(runs).expanduser()))
    return str(run)


def _table(rows: list[dict[str, Any]], combined: dict[str, dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = ["| run | weight | val nll | test acc | test nll | test ece |", "|---|---:|---:|---:|---:|---:|"]
    for row in sorted(rows, key=lambda r: (-r["weight"], r["val"]["nll"])):
        lines.append(f"| {row['name']} | {row['weight']:.4g} | {row['val']['nll']:.4f} | {row['test']['acc']:.4f} | "
                     f"{row['test']['nll']:.4f} | {row['test']['ece']:.4f} |")
    test = combined["test"]
    lines.append(f"| **ensemble** | | {_fixed(combined['val']['nll'])} | {test['acc']:.4f} | {_fixed(test['nll'])} | "
                 f"{test['ece']:.4f} |")
    lines.append("")
    for name, delta in ((f"best member ({summary['best_member']}, by val nll)", summary["ensemble_minus_best_member"]),
                        ("mean member", summary["ensemble_minus_mean_member"])):
        lines.append(f"ensemble - {name}: " + ", ".join(f"{k} {_fixed(delta[k], '+')}" for k in ("acc", "nll", "ece")))
    if summary.get("note"):
        lines.append(f"({summary['note']})")
    return "\n".join(lines) + "\n"
