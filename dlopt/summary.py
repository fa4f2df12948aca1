"""Sweep summary: a Hydra callback that tabulates every run of a multirun when the sweep ends.

Reads each run folder's metrics.json and .hydra/overrides.yaml and writes summary.csv and
summary.md in the sweep folder, best run first by the monitored metric. Imports no torch.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

COLUMNS = ("run", "overrides", "status", "objective", "val/acc", "test/acc", "test/f1", "epochs", "wall_time_s",
           "error")


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per run folder of the sweep, sorted best first; runs without metrics.json are 'failed'."""
    rows = []
    for run in sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=lambda p: p.name):
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
        error = run / "error.txt"
        row: dict[str, Any] = {"run": run.name, "overrides": " ".join(overrides), "status": "failed",
                               "error": error.read_text().strip() if error.is_file() else "no metrics.json"}
        if (run / "metrics.json").is_file():
            metrics = json.loads((run / "metrics.json").read_text())
            row.update({k: metrics.get(k) for k in COLUMNS[3:-1]}, status="done", error="")
            row["mode"] = metrics.get("mode", "min")
        rows.append(row)
    done = [r for r in rows if r["status"] == "done"]
    sign = -1 if done and done[0]["mode"] == "max" else 1
    done.sort(key=lambda r: sign * r["objective"])
    return done + [r for r in rows if r["status"] != "done"]  # failed runs last


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)


def write(rows: list[dict[str, Any]], sweep_dir: Path, monitor: str) -> None:
    header = [monitor if c == "objective" else c for c in COLUMNS]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[row.get(c, "") for c in COLUMNS] for row in rows])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |" for row in rows]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = collect(sweep_dir)
        monitor = config.get("monitor", "objective")
        write(rows, sweep_dir, monitor)
        failed = sum(row["status"] != "done" for row in rows)
        log.info("sweep summary (%d runs, %d failed; best first by %s): %s", len(rows), failed, monitor,
                 sweep_dir / "summary.md")
        for row in rows:
            log.info("  %s  %s=%s  %s", row["run"], monitor, _cell(row.get("objective")), row["overrides"])
