"""`dlopt train resume=RUN_DIR [key=value ...]`: continue a run in its own folder, with its own config.

Before Hydra starts, `redirect` points Hydra's run folder at RUN_DIR (and keeps Hydra from
rewriting RUN_DIR/.hydra). In the task, `resumed_config` rebuilds the run's config: the saved
.hydra/config.yaml is the truth; the run's overrides are composed again with this dlopt to learn
what changed since (a key this dlopt no longer has stops the resume, a new key takes its default),
and overrides given now (trainer.max_epochs=60 to train longer) are applied on top and saved.
Only Hydra and OmegaConf are used here: no torch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlopt.errors import UserError
from dlopt.saved_run import check_config, read_yaml

log = logging.getLogger(__name__)


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


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of every leaf, interpolations kept as written."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)) if isinstance(value, dict)
                    else {f"{prefix}.{key}" if prefix else str(key): value})
    return flat


def _compose(config_name: str, overrides: list[str], run_dir: Path) -> dict:
    from hydra import compose
    from hydra.errors import CompactHydraException

    from dlopt.apps import composition_error

    try:
        return OmegaConf.to_container(compose(config_name, overrides=overrides), resolve=False)
    except CompactHydraException as err:
        raise UserError(f"resume={run_dir}: the overrides [{' '.join(overrides)}] do not compose with this "
                        f"dlopt: {composition_error(err)}") from None


def resumed_config(cfg: DictConfig, run_dir: Path, new_overrides: list[str], allowed: frozenset[str],
                   config_name: str = "train") -> DictConfig:
    """The config to continue the run in run_dir with (see the module docstring). The run folder is
    a file from disk: its config builds only `allowed` targets (dlopt.saved_run)."""
    named = f"resume={run_dir}"
    saved = OmegaConf.to_container(read_yaml(run_dir / ".hydra" / "config.yaml", named), resolve=False)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in read_yaml(overrides_file, named)] if overrides_file.is_file() else []
    fresh = _compose(config_name, overrides, run_dir)
    was, now = _flat(saved), _flat(fresh)
    gone = sorted(set(was) - set(now))
    if gone:
        raise UserError(f"resume={run_dir}: this dlopt no longer has {', '.join(gone[:5])}"
                        f"{' and more' if len(gone) > 5 else ''}, which the run's config sets; resume it with "
                        "the dlopt version that started it, or start a new run")
    added = sorted(set(now) - set(was))
    if added:
        log.info("resume: keys new since the run started take their defaults: %s", ", ".join(added))
    resumed = OmegaConf.merge(OmegaConf.create(fresh), OmegaConf.create(saved))
    if not new_overrides and (run_dir / "metrics.json").is_file():
        raise UserError(f"resume={run_dir} has already finished (its metrics.json is written); to train it longer, "
                        f"add trainer.max_epochs=N with N above its {resumed.trainer.max_epochs}")
    if new_overrides:
        changed = _flat(_compose(config_name, [*overrides, *new_overrides], run_dir))
        for key in sorted(set(now) | set(changed)):
            if key not in changed:
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(resumed, parent) if parent else resumed
                node.pop(leaf, None)
            elif now.get(key, object()) != changed[key]:
                OmegaConf.update(resumed, key, changed[key], force_add=True)
    resumed.resume = None  # the config is the run's own; how it was continued is in the log
    check_config(resumed, f"{named}: its .hydra/config.yaml and overrides.yaml", allowed)
    if new_overrides:
        log.info("resume with changes: %s", " ".join(new_overrides))
        _save_atomically(OmegaConf.to_yaml(resumed), run_dir / ".hydra" / "config.yaml")
        _save_atomically(OmegaConf.to_yaml(OmegaConf.create([*overrides, *new_overrides])), overrides_file)
    return resumed


def _save_atomically(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
