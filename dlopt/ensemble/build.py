"""An ensemble of finished runs: its members read (members.py), selected and weighted (selection.py), scored beside
them on the validation and test splits, and written: ensemble.json, metrics.json, predictions.npz, summary.md and
ensemble.png in the command's folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from dlopt.ensemble.members import SPLITS, read
from dlopt.ensemble.plot import plot_ensemble
from dlopt.ensemble.scores import scores
from dlopt.ensemble.selection import combine, greedy, top_k
from dlopt.errors import UserError
from dlopt.training.report import write_json, write_npz

log = logging.getLogger(__name__)


def ensemble(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    options = cfg.ensemble
    found = read(cfg.runs if isinstance(cfg.runs, str) else list(cfg.runs), own=run_dir)
    members, labels = found.members, found.labels
    skipped = "; ".join(f"{run}: {why}" for run, why in found.skipped)
    if len(members) < 2:
        raise UserError(f"runs={cfg.runs} has {len(members)} finished run(s) to combine; an ensemble needs at least 2"
                        + (f" (skipped {skipped})" if skipped else ""))
    for run, why in found.skipped:
        log.warning("skipped %s: %s", run, why)
    if options.select == "top_k":
        if options.k > len(members):
            raise UserError(f"ensemble.k={options.k} is more than the {len(members)} finished runs of runs={cfg.runs}; "
                            f"give at most {len(members)}")
        objectives = [m.objective for m in members]
        weights = top_k(objectives, options.k, found.mode)
        steps = [top_k(objectives, size, found.mode) for size in range(1, options.k + 1)]
    else:
        weights, steps = greedy([m.probabilities["val"] for m in members], labels["val"], options.rounds)

    def ensembled(w: np.ndarray, splits: tuple[str, ...] = SPLITS) -> dict[str, np.ndarray]:
        return {s: combine([m.probabilities[s] for m in members], w, options.combine) for s in splits}

    def scored(probabilities: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
        """The ensemble's scores per split; a vote's class shares are no probabilities: no NLL for them."""
        values = {s: scores(p, labels[s]) for s, p in probabilities.items()}
        return {s: {**v, "nll": None} if options.combine == "vote" else v for s, v in values.items()}

    rows = [{"name": _name(m.run, cfg.runs), "run": str(m.run), "weight": float(w), "objective": m.objective,
             **{s: scores(m.probabilities[s], labels[s]) for s in SPLITS}} for m, w in zip(members, weights)]
    final = ensembled(weights)
    combined = scored(final)
    taken = [r for r in rows if r["weight"]]
    best = min(taken, key=lambda r: r["val"]["nll"])  # by validation: the test split decides nothing here
    mean = {k: float(np.mean([r["test"][k] for r in taken])) for k in combined["test"]}
    summary = {
        "select": options.select, "combine": options.combine, "monitor": found.monitor, "runs": str(cfg.runs),
        "members": rows, "ensemble": combined, "best_member": best["name"],
        "ensemble_minus_best_member": _minus(combined["test"], best["test"]),
        "ensemble_minus_mean_member": _minus(combined["test"], mean),
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
    log.info("ensemble of %d of %d runs (%s, %s):\n%s", len(taken), len(rows), options.select, options.combine, table)
    return summary


def _minus(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: None if a[k] is None else a[k] - b[k] for k in a}


def _number(value: Any, sign: str = "") -> str:
    return "-" if value is None else f"{value:{sign}.4f}"


def _name(run: Path, runs: Any) -> str:
    """The run's folder below a sweep folder (0, 1, ...), else its path."""
    if isinstance(runs, str) and run != Path(runs).expanduser():
        return str(run.relative_to(Path(runs).expanduser()))
    return str(run)


def _table(rows: list[dict[str, Any]], combined: dict[str, dict[str, float]], summary: dict[str, Any]) -> str:
    lines = ["| run | weight | val nll | test acc | test nll | test ece |", "|---|---:|---:|---:|---:|---:|"]
    for row in sorted(rows, key=lambda r: (-r["weight"], r["val"]["nll"])):
        lines.append(f"| {row['name']} | {row['weight']:g} | {row['val']['nll']:.4f} | {row['test']['acc']:.4f} | "
                     f"{row['test']['nll']:.4f} | {row['test']['ece']:.4f} |")
    test = combined["test"]
    lines.append(f"| **ensemble** | | {_number(combined['val']['nll'])} | {test['acc']:.4f} | {_number(test['nll'])} | "
                 f"{test['ece']:.4f} |")
    lines.append("")
    for name, delta in ((f"best member ({summary['best_member']}, by val nll)", summary["ensemble_minus_best_member"]),
                        ("mean member", summary["ensemble_minus_mean_member"])):
        lines.append(f"ensemble - {name}: " + ", ".join(f"{k} {_number(delta[k], '+')}" for k in ("acc", "nll", "ece")))
    return "\n".join(lines) + "\n"
