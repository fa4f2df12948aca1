"""The Optuna study of a search: its storage, sampler and pruner, built from the `search` config node.

The sweeper and every trial (which reports to the pruner) build them from the same node, so both
sides agree without passing objects between processes.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig

from dlopt.errors import UserError, did_you_mean

SAMPLERS = ("grid", "random", "tpe", "gp", "cmaes", "nsga2")
PRUNERS = ("none", "median", "hyperband")
STORAGE_FILE = "study.db"


JOURNAL = "journal:"  # search.storage=journal:FILE: Optuna's journal file, for a file system several machines share


def storage_url(search: DictConfig, sweep_dir: str | Path) -> str:
    """search.storage (a journal file made absolute: a trial may start in another folder), or a SQLite file in the
    sweep folder."""
    url = search.get("storage")
    if url and str(url).startswith(JOURNAL):
        return JOURNAL + str(Path(str(url)[len(JOURNAL):]).expanduser().resolve())
    return url or f"sqlite:///{Path(sweep_dir).resolve() / STORAGE_FILE}"


def heartbeat(search: DictConfig, url: str) -> int | None:
    """search.heartbeat in seconds, None when off: auto is 60 s on database storage, off on a journal file."""
    value = search.get("heartbeat", "auto")
    journal = url.startswith(JOURNAL)
    if value == "auto":
        return None if journal else 60
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"search.heartbeat={value} is not valid: expected seconds (an integer >= 1), auto or null")
    if journal:
        raise UserError(f"search.heartbeat={value}: search.storage={url} is a journal file, which keeps no "
                        "heartbeats (a database does); set search.heartbeat=null, or use a database URL")
    return value


def storage(url: str, beat: int | None = None) -> optuna.storages.BaseStorage:
    """The study's storage; SQLite waits for a lock (trials of a parallel launcher write beside the sweeper).
    journal:FILE is Optuna's JournalFileBackend: an append-only file with its own lock, safe on a shared file system
    (NFS) where SQLite's locking is not, and no server. An unreachable or unknown URL is one line naming
    search.storage."""
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len(JOURNAL):])
        if not path.parent.is_dir() or path.is_dir():
            raise UserError(f"search.storage={url}: {path.parent if not path.parent.is_dir() else path} is not "
                            "a folder this machine has; give journal:FILE in an existing folder (on a file system "
                            "every machine of the search shares)")
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except Exception as err:
            raise UserError(f"search.storage={url} cannot be opened: {' '.join(str(err).split())[:300]}") from None
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for _ in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
                # a trial silent for 2 heartbeats is failed, and its parameters enqueued once more (Optuna's callback)
                beats = {} if beat is None else {"heartbeat_interval": beat, "heartbeat_stale_trial_callback":
                                                 optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **beats)
        except Exception as err:
            error = err
            # two sweepers starting on a new database both create its tables: the later one finds them made
            if not any(clash in str(err) for clash in ("already exists", "UNIQUE constraint", "duplicate key")):
                break
            time.sleep(0.5)
    reason = " ".join(str(error).split())[:300]
    if "DB access module" in reason:  # Optuna's words for a database driver that is not installed
        reason += " (PostgreSQL: pip install 'dlopt[postgres]' and postgresql+psycopg://...)"
    raise UserError(f"search.storage={url} cannot be opened: {reason}; give a SQLAlchemy URL that this machine "
                    f"reaches (sqlite:///FILE, postgresql+psycopg://USER@HOST/DB, ...), journal:FILE, or leave it "
                    f"null for {STORAGE_FILE} in the sweep folder") from None


def sampler(search: DictConfig, seed: int, grid: dict[str, list[Any]] | None = None) -> optuna.samplers.BaseSampler:
    name = search.sampler
    if name == "grid":
        return optuna.samplers.GridSampler(grid or {}, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.startup_trials)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=search.startup_trials)
    if name == "cmaes":  # the numeric knobs; choices are drawn at random, as conf/search/cmaes.yaml says
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=search.startup_trials,
                                            warn_independent_sampling=False)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=search.population)
    raise UserError(f"search.sampler={name} is not a sampler{did_you_mean(name, SAMPLERS)}; choose one of "
                    f"{', '.join(SAMPLERS)}")


def pruner(search: DictConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    """median: stop a trial whose value at an epoch is worse than the median of earlier trials at that
    epoch (after search.warmup_epochs, once search.startup_trials have finished); hyperband: Optuna's."""
    name = str(search.pruner)
    if name in ("none", "None"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials,
                                           n_warmup_steps=search.warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, search.warmup_epochs), max_resource=max_epochs)
    raise UserError(f"search.pruner={name} is not a pruner{did_you_mean(name, PRUNERS)}; choose one of "
                    f"{', '.join(PRUNERS)}")


def trial(search: DictConfig, url: str, max_epochs: int) -> optuna.Trial:
    """Trial number search.trial of the study, as the job that runs it sees it (to report and prune, and to keep its
    heartbeat: `heartbeats`)."""
    store = storage(url, heartbeat(search, url))
    study = optuna.load_study(study_name=str(search.study_name), storage=store, pruner=pruner(search, max_epochs))
    study_id = store.get_study_id_from_name(str(search.study_name))
    return optuna.Trial(study, store.get_trial_id_from_study_id_trial_number(study_id, int(search.trial)))


def heartbeats(trial: optuna.Trial):
    """A context that keeps the trial's heartbeat while it runs (Optuna's heartbeat thread; nothing on a storage
    without heartbeats)."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, trial.study._storage)  # noqa: SLF001 - Optuna's optimize() does so
