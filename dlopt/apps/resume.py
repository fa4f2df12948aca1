"""`dlopt train resume=RUN_DIR [key=value ...]`: continue a run in its own folder, with its own config.

A run folder is a record, and a resume only appends to it. Before Hydra starts, `redirect` points Hydra's run
folder at RUN_DIR and keeps Hydra from writing RUN_DIR/.hydra, which stays how the run started. In the task,
`resumed_config` rebuilds the config the run last trained with: .hydra/config.yaml with the changes of its earlier
resumes (resumes.json, dlopt.saved_run) applied. Its overrides are composed again with this dlopt to learn what
changed since (a key this dlopt no longer has stops the resume, a new key takes its default). Overrides given now
may extend or stop the training (EXTENDING) or change how it runs, not what it computes (HOW); anything else would
make the run's record claim what it did not train, and is refused unless `resume_changes=true` asks for it. A
finished run is continued only by what extends it. dlopt.training.resumes appends the continuation to
resumes.json when its training starts. Only Hydra and OmegaConf are used here: no torch.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from omegaconf import DictConfig, OmegaConf

from dlopt import saved_run
from dlopt.checks.values import check_value
from dlopt.errors import UserError
from dlopt.saved_run import check_config, read_yaml

log = logging.getLogger(__name__)

# keys (and the keys below them) a resume may change: they extend or stop the training ...
EXTENDING = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "callbacks.early_stopping")
# ... or change how it runs and what it records, not what it computes
HOW = ("threads", "data.num_workers", "trainer.enable_progress_bar", "callbacks.progress_bar", "diagnostics")
NOT_CONFIG = ("resume", "resume_changes")  # how this command was asked, not what the run trains
_ABSENT = object()


@dataclass
class Resume:
    """The config to continue a run with, and what this continuation changes: the overrides given now and
    {dotted key: {"from": old, "to": new}} (no "from" for a key it adds, no "to" for one it removes)."""

    config: DictConfig
    overrides: list[str]
    earlier: list[str]  # the overrides the run started with and those of its earlier resumes
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # for the log, once the resume is accepted


def requested(args: list[str]) -> str | None:
    """The RUN_DIR of a `resume=RUN_DIR` override among the command's arguments, else None."""
    values = [a.split("=", 1)[1] for a in args if a.startswith("resume=")]
    return values[-1] if values and values[-1] not in ("", "null") else None


def check_run_folder(folder: str) -> Path:
    """RUN_DIR as a path, if it is a dlopt train run with a checkpoint to continue from."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UserError(f"resume={folder} does not exist; give the folder of a dlopt train run")
    if not (path / ".hydra" / "config.yaml").is_file():
        raise UserError(f"resume={folder} is not a dlopt train run folder (it has no .hydra/config.yaml)")
    if (path / "folds").is_dir() and not (path / "checkpoints").exists():
        raise UserError(f"resume={folder} is a cross-validation (data.cv): its folds are runs of their own in "
                        f"{path / 'folds'}; resuming all of them is not supported: start it again")
    if not (path / "checkpoints" / "last.ckpt").is_file():
        raise UserError(f"resume={folder} has no checkpoints/last.ckpt: the run ended before its first epoch did, "
                        "or ran with callbacks.last_checkpoint=null; start it again instead")
    return path


def redirect(args: list[str]) -> list[str]:
    """The Hydra arguments for a resumed run: its folder is the run folder, and .hydra stays as it is."""
    folder = requested(args)
    if folder is None:
        return args
    if any(a in ("-m", "--multirun") for a in args):
        raise UserError(f"resume={folder} continues one run and cannot be combined with -m; drop -m")
    path = check_run_folder(folder)
    return [*args, f"hydra.run.dir={path.resolve()}", "hydra.output_subdir=null"]


@contextmanager
def log_untouched(run_dir: Path) -> Iterator[None]:
    """Keep the run's log file out of what happens inside: a refused resume leaves the run folder as it was, its
    one line on the terminal only. The file gets the lines logged after an accepted resume."""
    root = logging.getLogger()
    inside = [h for h in root.handlers if isinstance(h, logging.FileHandler)
              and Path(h.baseFilename).resolve().parent == run_dir.resolve()]
    for handler in inside:
        root.removeHandler(handler)
    try:
        yield
    except BaseException:
        for handler in inside:
            handler.close()
        raise
    for handler in inside:
        root.addHandler(handler)


def _compose(config_name: str, overrides: list[str], run_dir: Path) -> dict:
    from hydra import compose
    from hydra.errors import CompactHydraException

    from dlopt.apps import composition_error

    try:
        return OmegaConf.to_container(compose(config_name, overrides=overrides), resolve=False)
    except CompactHydraException as err:
        raise UserError(f"resume={run_dir}: the overrides [{' '.join(overrides)}] do not compose with this "
                        f"dlopt: {composition_error(err)}") from None


def _overrides_so_far(run_dir: Path, records: list[dict[str, Any]]) -> list[str]:
    """The overrides the run started with, then those of each of its resumes (`records`): what its config was
    composed from."""
    return saved_run.run_overrides(run_dir, f"resume={run_dir}") + [
        o for record in records for o in record["overrides"] if _key(o) not in NOT_CONFIG]


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def resumed_config(cfg: DictConfig, run_dir: Path, new_overrides: list[str], allowed: frozenset[str],
                   config_name: str = "train") -> Resume:
    """The config to continue the run in run_dir with, after every check that could refuse it (see the module
    docstring). The run folder is a file from disk: its config builds only `allowed` targets (dlopt.saved_run).
    Writes nothing."""
    named = f"resume={run_dir}"
    check_value("resume_changes", cfg.get("resume_changes", False))
    records = saved_run.resumes(run_dir, named)
    started = read_yaml(run_dir / ".hydra" / "config.yaml", named)
    saved = saved_run.apply_resumes(OmegaConf.to_container(started, resolve=False), records)
    overrides = _overrides_so_far(run_dir, records)
    fresh = _compose(config_name, overrides, run_dir)
    was, now = saved_run.flat(saved), saved_run.flat(fresh)
    gone = sorted(k for k in set(was) - set(now) if not _under(k, NOT_CONFIG))
    if gone:
        raise UserError(f"resume={run_dir}: this dlopt no longer has {', '.join(gone[:5])}"
                        f"{' and more' if len(gone) > 5 else ''}, which the run's config sets; resume it with "
                        "the dlopt version that started it, or start a new run")
    merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(fresh), OmegaConf.create(saved)), resolve=False)
    before = saved_run.flat(merged)
    added = sorted(k for k in set(now) - set(was) if not _under(k, NOT_CONFIG))
    notes = [f"resume: keys new since the run started take their defaults: {', '.join(added)}"] if added else []
    changed: dict[str, dict[str, Any]] = {}
    if new_overrides:
        wanted = saved_run.flat(_compose(config_name, [*overrides, *new_overrides], run_dir))
        for key in sorted(set(now) | set(wanted)):  # a parent before its children, as apply_resumes needs them
            if _under(key, NOT_CONFIG):
                continue
            if key not in wanted:
                if key in before:
                    changed[key] = {"from": before[key]}
            elif now.get(key, _ABSENT) != wanted[key] and before.get(key, _ABSENT) != wanted[key]:
                changed[key] = {**({"from": before[key]} if key in before else {}), "to": wanted[key]}
        merged = saved_run.apply_resumes(merged, [{"changed": changed}])
    resumed = OmegaConf.create(merged)
    after = saved_run.flat(merged)
    history = saved_run.read_json(run_dir / "history.json", named) or []
    metrics = saved_run.metrics(run_dir, named)
    if metrics is not None and metrics.get("epochs", 0) >= len(history):  # finished, and not extended since
        why = _finished(metrics, before, after, changed)
        if why:
            raise UserError(f"resume={run_dir} has already finished (its metrics.json is written): {why}; nothing "
                            "was changed")
    _refuse_changes(run_dir, cfg, changed, overrides, new_overrides, history)
    if after.get("diagnostics._target_") and history:
        _refuse_partial_records(run_dir, history)
    resumed.resume = None  # the config is the run's own; how it was continued is in resumes.json
    check_config(resumed, f"{named}: its .hydra/config.yaml, overrides.yaml and resumes.json", allowed)
    return Resume(resumed, list(new_overrides), overrides, changed, notes)


def _finished(metrics: dict, before: dict, after: dict, changed: dict) -> Optional[str]:
    """Why a finished run cannot train on with the config `after`, None when it can."""
    epochs = metrics.get("epochs") or 0
    limit = after.get("trainer.max_epochs")
    room = limit == -1 or isinstance(limit, int) and limit > epochs
    reason = str(metrics.get("stop_reason") or "")
    if metrics.get("stopped_early") and reason.startswith("early stopping"):
        if room and any(_under(k, ("callbacks.early_stopping",)) for k in changed):
            return None
        patience = before.get("callbacks.early_stopping.patience")
        return (f"early stopping ended it at epoch {epochs}; to train on, give it more patience "
                f"(callbacks.early_stopping.patience=N above its {patience}) or switch it off "
                f"(callbacks.early_stopping=null)" + ("" if room else f", and trainer.max_epochs=N above {epochs}"))
    if metrics.get("stopped_early"):
        return f"it stopped at epoch {epochs} ({reason}), which a resume cannot undo; start a new run"
    if room:
        return None
    return (f"it trained its {epochs} epochs; to train it longer, add trainer.max_epochs=N with N above its "
            f"{before.get('trainer.max_epochs')}")


def _refuse_changes(run_dir: Path, cfg: DictConfig, changed: dict[str, dict[str, Any]], overrides: list[str],
                    new_overrides: list[str], history: list[dict]) -> None:
    """UserError when the overrides change what the run trains and resume_changes=true does not ask for it."""
    trained = [k for k in changed if not _under(k, EXTENDING + HOW)]
    if not trained or cfg.get("resume_changes") is True:
        return
    shown = ", ".join(f"{k} {_value(changed[k], 'from')} -> {_value(changed[k], 'to')}" for k in trained[:3])
    given = [o for o in new_overrides if _key(o) not in NOT_CONFIG]
    new_run = " ".join(["dlopt", "train", *{_key(o): o for o in [*overrides, *given]}.values()])
    weights = "" if any(k.startswith("model.") for k in trained) else f" (transfer.from={run_dir} starts it from " \
                                                                        "this run's weights)"
    epoch = history[-1]["epoch"] + 1 if history else "its next epoch"
    raise UserError(f"resume={run_dir}: {' '.join(given)} would change what the run trained ({shown}"
                    f"{', ...' if len(trained) > 3 else ''}); a resume only extends or stops a run "
                    f"({', '.join(EXTENDING)}) or changes how it runs ({', '.join(HOW)}). For a new run: {new_run}"
                    f"{weights}; to change this run from epoch {epoch} on, add resume_changes=true (its resumes.json "
                    "records it)")


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def _value(change: dict[str, Any], side: str) -> str:
    value = change.get(side, "(absent)")
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _refuse_partial_records(run_dir: Path, history: list[dict]) -> None:
    """UserError when diagnostics.jsonl misses the records of the run's first epochs (an older dlopt kept only those
    after a resume): continuing it would extend a record with a gap."""
    path = run_dir / "diagnostics.jsonl"
    if not path.is_file():
        return
    header, first = _first_records(path)
    start = header.get("from_epoch", history[0]["epoch"]) if isinstance(header, dict) else history[0]["epoch"]
    if first is not None and first.get("epoch", start) <= start:
        return
    held = f"from epoch {first['epoch']} on" if first is not None else "no record"
    raise UserError(f"resume={run_dir}: its diagnostics.jsonl holds {held}, but history.json starts at epoch "
                    f"{history[0]['epoch']} (an older dlopt dropped the records before a resume); continuing would "
                    "extend a per-layer record with a gap: resume it with diagnostics=none (no per-layer records "
                    "from now on), or start a new run")


def _first_records(path: Path) -> tuple[Any, Optional[dict]]:
    """The header and the first record of a diagnostics.jsonl (None when it has none), read as data."""
    header, first = None, None
    with path.open(errors="replace") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                break
            if isinstance(record, dict) and record.get("kind") == "layers":
                header = record
            elif isinstance(record, dict):
                first = record
                break
    return header, first
