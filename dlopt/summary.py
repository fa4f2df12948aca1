"""Sweep summary: a Hydra callback that tabulates every run of a multirun when the sweep ends.

Reads each run folder's metrics.json and .hydra/overrides.yaml and writes summary.csv and
summary.md in the sweep folder, best run first by the monitored metric (then pruned, failed and
interrupted runs), and best.yaml: the overrides that reproduce the best run. summary.md and the log
show the overrides as `dlopt runs` does (a search's drawn values first, a doctor try-run's remedy as
what it changes); summary.csv and best.yaml keep them as given. Imports no torch.
"""

from __future__ import annotations

import csv
import logging
import shlex
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dlopt.runs import listing

log = logging.getLogger(__name__)

SUMMARIZED = ("train", "eval")  # the commands whose runs write metrics.json; the others' results stay in their runs
COLUMNS = ("run", "overrides", "status", "objective", "val/acc", "test/acc", "test/f1", "epochs", "wall_time_s",
           "error")


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per run folder of the sweep, read by dlopt.runs.listing (as `dlopt runs` reads them), sorted best
    first; a run that left no result is 'failed' (the sweep has ended: nothing runs in it any more)."""
    rows = []
    for folder in sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=lambda p: p.name):
        run = listing.read(folder, ended=True)
        overrides = [o for o in run.overrides if not o.startswith("search.trial=")]  # the sweeper's note to the trial
        study = [o for o in overrides if o.startswith("search.study_name=")]  # continues the search: keep it in view
        status = {"dev run": "done", "corrupt": "failed", "running": "failed"}.get(run.status, run.status)
        row: dict[str, Any] = {"run": folder.name, "overrides": " ".join(overrides),
                               "shown": " ".join(run.shown() + study), "status": status, "error": run.reason}
        if run.metrics:
            row.update({k: run.metrics.get(k) for k in COLUMNS[3:-1]}, mode=run.metrics.get("mode", "min"),
                       metrics=run.metrics)
        rows.append(row)
    finished = [r for r in rows if r["status"] in ("done", "pruned") and r.get("objective") is not None]
    sign = -1 if finished and finished[0]["mode"] == "max" else 1
    finished.sort(key=lambda r: (r["status"] != "done", sign * r["objective"]))
    # pruned, then failed, then interrupted runs last
    return finished + [r for r in rows if r not in finished and r["status"] != "interrupted"] + \
        [r for r in rows if r["status"] == "interrupted"]


def common_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """The overrides every run of a sweep of several runs shares (search=bayes, trainer.max_epochs=5), as shown."""
    return listing.shared([_shown(row).split() for row in rows])


def own_overrides(row: dict[str, Any], common: list[str]) -> str:
    """The row's overrides as shown, without those every run shares."""
    return " ".join(o for o in _shown(row).split() if o not in common)


def _shown(row: dict[str, Any]) -> str:
    return row.get("shown", row["overrides"])


def write_best(rows: list[dict[str, Any]], sweep_dir: Path, monitor: str, command: str) -> Path | None:
    """best.yaml: the overrides that run the best run again on its own (without the sweep's search=...)."""
    done = [row for row in rows if row["status"] == "done"]
    if not done:
        return None
    best = done[0]
    overrides = [o for o in best["overrides"].split() if not o.startswith(("search=", "search.", "hydra."))]
    text = (f"# the best run of this sweep by {monitor}; run it again with\n"
            f"#   dlopt {command} {' '.join(map(shlex.quote, overrides))}\n")
    text += yaml.safe_dump({"run": best["run"], monitor: best["objective"], "overrides": overrides}, sort_keys=False)
    (sweep_dir / "best.yaml").write_text(text)
    return sweep_dir / "best.yaml"


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)


def rounded_overrides(overrides: str, digits: int = 4) -> str:
    """Overrides as a person reads them (dlopt.runs.listing.rounded); the files keep the full value."""
    return listing.rounded(overrides.split(), digits)


def columns(monitor: str) -> list[str]:
    """COLUMNS without the monitored metric's own column: the objective column is it (monitor=val/acc)."""
    return [c for c in COLUMNS if c != monitor]


def write(rows: list[dict[str, Any]], sweep_dir: Path, monitor: str) -> None:
    """summary.csv (every run's overrides) and summary.md (the overrides all runs share above the table,
    the ones that differ in it)."""
    shown = columns(monitor)
    header = [monitor if c == "objective" else c for c in shown]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[row.get(c, "") for c in shown] for row in rows])
    common = common_overrides(rows)
    lines = [f"All runs: `{' '.join(common)}`", ""] if common else []
    table = [{h: _cell(own_overrides(row, common) if c == "overrides" else
                       listing.shown_metric(row["metrics"], c) if row.get("metrics") and c in COLUMNS[3:-1] else
                       row.get(c)) for h, c in zip(header, shown)}  # a cross-validation's: mean ± sd
             for row in rows]
    for row in table:
        row["overrides"] = rounded_overrides(row["overrides"])
    lines.append(listing.markdown(header, table))  # the table of `dlopt runs format=md`
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        command = OmegaConf.select(config, "hydra.job.name", default="train")
        if command not in SUMMARIZED:
            runs = sum((p / ".hydra").is_dir() for p in sweep_dir.iterdir())
            log.info("%d runs, each with its own results", runs)
            log.info("results in %s", sweep_dir.resolve())  # the last line of every command that writes
            return
        rows = collect(sweep_dir)
        monitor = config.get("monitor", "objective")
        write(rows, sweep_dir, monitor)
        best = write_best(rows, sweep_dir, monitor, command)
        count = {status: sum(row["status"] == status for row in rows) for status in ("pruned", "failed", "interrupted")}
        interrupted = f", {count['interrupted']} interrupted" if count["interrupted"] else ""
        log.info("sweep summary (%d runs, %d pruned, %d failed%s; best first by %s): %s", len(rows), count["pruned"],
                 count["failed"], interrupted, monitor, sweep_dir / "summary.md")
        common = common_overrides(rows)
        for row in rows[:10]:
            log.info("  %s  %s=%s  %s  %s", row["run"], monitor, _cell(row.get("objective")), row["status"],
                     rounded_overrides(own_overrides(row, common)))
        if len(rows) > 10:
            log.info("  ... %d more in summary.md", len(rows) - 10)
        if best is not None:
            log.info("best run's overrides: %s", best)
        log.info("results in %s", sweep_dir.resolve())  # the last line of every command that writes
