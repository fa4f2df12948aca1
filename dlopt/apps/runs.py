"""`dlopt runs`: list the runs below a folder (path=), filter (where=), sort, limit and print them (format=); group
them by knobs with mean ± sd and a test against the best group (by=); or compare a few (compare=). Listing writes
nothing; by= and compare= write their tables and plots to outputs/runs/DATE/TIME (dlopt/runs/)."""

import json
from pathlib import Path

from omegaconf import DictConfig

from dlopt import folders
from dlopt.apps import app, log, task
from dlopt.checks import validate
from dlopt.checks.commands import key_list
from dlopt.errors import UserError


@task
def runs(cfg: DictConfig, run_dir: Path) -> dict:
    from dlopt.runs import listing

    validate(cfg, "runs")
    if cfg.compare is not None:
        from dlopt.runs import compare

        chosen = compare.open_runs(list(cfg.compare))
        text = compare.report(chosen)
        (run_dir / "compare.md").write_text(text + "\n")
        missing = compare.plot(chosen, run_dir / "compare.png")
        print(compare.as_json(chosen) if cfg.format == "json" else text)  # md and the terminal: the report
        if missing:
            log.info("no history.json (no curves drawn) in: %s", ", ".join(missing))
        return {"compared": [str(r.folder) for r in chosen]}
    by = key_list(cfg.by, "by")
    path = Path(cfg.path).expanduser()
    if not path.is_dir():
        raise UserError(f"path={cfg.path} {'is not a folder' if path.exists() else 'does not exist'}; give the "
                        "folder your runs are in (outputs, or a sweep's outputs/train/multirun/DATE/TIME)")
    found = listing.collect(path)
    if not found:
        raise UserError(f"path={cfg.path} holds no runs (no folder with a .hydra/ below it); give the folder your "
                        "runs are in (outputs, or a sweep's outputs/train/multirun/DATE/TIME)")
    if cfg.where is not None:
        found = listing.select(found, cfg.where)
        if not found:
            raise UserError(f"where={cfg.where}: none of the runs in {cfg.path} matches")
    if by:
        return _grouped(found, by, cfg, run_dir)
    shown = listing.order(found, None if cfg.sort == "time" else cfg.sort)[:cfg.limit]
    print(listing.render(shown, path, cfg.format))
    folders.discard()  # listing leaves nothing in outputs/runs/
    return {"runs": len(shown)}


def _grouped(found: list, by: list, cfg: DictConfig, run_dir: Path) -> dict:
    from dlopt.runs import groups, listing

    metric = cfg.metric
    valid = listing.metric_keys(found) | {"objective"}
    if metric not in valid:
        from dlopt.errors import did_you_mean

        raise UserError(f"metric={metric} is not a metric of these runs{did_you_mean(metric, valid)}; give one of "
                        f"{', '.join(sorted(valid))}")
    grouped = groups.aggregate(found, by, metric)
    text = groups.report(grouped, by, metric)
    columns, rows = groups.table(grouped, by, metric)
    (run_dir / "groups.md").write_text(text + "\n")
    (run_dir / "groups.json").write_text(json.dumps(
        [{**row, "runs": [str(r.folder) for r in g.runs], "p": g.p, "not_replicates": g.mixed}
         for row, g in zip(rows, grouped)], indent=1,
        default=str))
    groups.plot(found, by, metric, run_dir / "axes.png")
    if cfg.format == "table":
        print(text.split("\n\n")[0] + "\n\n" + listing.aligned(columns, rows))
    elif cfg.format == "md":
        print(text)
    elif cfg.format == "csv":
        import csv
        import sys

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows([[row.get(c, "") for c in columns] for row in rows])
    else:
        print((run_dir / "groups.json").read_text())
    return {"groups": len(grouped)}


main = app("runs", runs)
