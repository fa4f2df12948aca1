"""The sweeper behind `search=grid|random|bayes|genetic`: an Optuna study driven by ask and tell.

Each batch of search.n_jobs trials is asked of the study, launched through the configured Hydra
launcher as ordinary jobs (one run folder each, `search.trial=N` telling the job which trial it
is, so that it reports each epoch to the pruner), and told back: the returned objective, pruned
(the run's metrics.json says so) or failed (with the reason the run left in error.txt). The
study lives in search.storage (default: study.db in the sweep folder), so running the same
search.study_name again continues it. Hydra's Optuna sweeper is not used: it needs optuna<3 and
cannot prune (Hydra issues 1710, 1954).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from dlopt import folders
from dlopt.checks import check_values
from dlopt.errors import UserError
from dlopt.search import space as spaces
from dlopt.search import study as studies

log = logging.getLogger("dlopt.search")
_ABSENT = object()
optuna.logging.set_verbosity(optuna.logging.WARNING)  # dlopt prints one line per trial itself


class Search:
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        cfg = self.config
        search = cfg.search
        check_values(search, "search")
        declared = {str(key): f"{key}={value}" for key, value in (search.get("params") or {}).items()}
        given = [a for a in arguments if not a.startswith("search.trial=")]
        space, fixed = spaces.parse([*declared.values(), *given])
        space = self._checked(space, fixed, set(declared) - set(spaces.parse(given)[0]))
        if not space:
            raise UserError("search: the search space is empty; give search.params or sweep overrides such as "
                            "'optimizer.lr=tag(log,interval(1e-4,1e-1))'")
        grid = spaces.grid(space) if search.sampler == "grid" else None
        n_trials = search.n_trials or (math.prod(map(len, grid.values())) if grid else None)
        if not n_trials:
            raise UserError("search.n_trials=null: give a number of trials (only search=grid has one "
                            "by itself)")
        sampler = studies.sampler(search, seed=cfg.seed, grid=grid)
        pruner = studies.pruner(search, cfg.trainer.max_epochs)

        named = search.study_name is not None
        if not named:  # a new study, named by the time it starts; two started in the same second get two names
            search.study_name = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            if Path(cfg.hydra.sweep.dir).name == search.study_name:
                search.study_name = Path(folders.claim(cfg.hydra.sweep.dir)).name
        sweep_dir = Path(cfg.hydra.sweep.dir)
        new = not named or not sweep_dir.exists()
        url = studies.storage_url(search, sweep_dir)
        owned = not search.get("storage")  # the default SQLite file: this sweeper is the only one using it
        if owned:
            folders.make(sweep_dir)
        storage = studies.storage(url)  # a bad search.storage fails here, before anything is written
        folders.make(sweep_dir)
        study = optuna.create_study(study_name=str(search.study_name), storage=storage, sampler=sampler,
                                    pruner=pruner, direction="maximize" if cfg.mode == "max" else "minimize",
                                    load_if_exists=True)
        _same_space(study, space, search.study_name)
        # a continued study draws new points: its sampler's seed counts the trials it has (the grid sampler
        # keeps its own record of the points it visited, and its seed orders the grid: it stays)
        if study.trials and search.sampler != "grid":
            study.sampler = studies.sampler(search, seed=cfg.seed + len(study.trials), grid=grid)
        OmegaConf.save(cfg, sweep_dir / "multirun.yaml")
        if owned:
            self._retry_interrupted(study)
        done = len(_counted(study))
        if done:
            log.info("search %s: continuing, %d of %d trials done (%s)", search.study_name, done, n_trials, url)
        else:
            log.info("search %s: %d trials, %s sampler, %s pruner, %s -> %s", search.study_name, n_trials,
                     search.sampler, search.pruner, url, sweep_dir)

        try:
            return self._run(study, space, fixed, n_trials, named)
        except BaseException:  # a SweepError in the first trial, Ctrl-C: a new study that ran nothing leaves nothing
            if new and owned and not _counted(study):
                shutil.rmtree(sweep_dir, ignore_errors=True)
                folders.discard()
            raise

    def _run(self, study: optuna.Study, space: dict, fixed: dict[str, str], n_trials: int,
             named: bool) -> list[Sequence[JobReturn]]:
        """Ask, launch and tell batches of search.n_jobs trials until the study has n_trials."""
        search, sweep_dir = self.config.search, Path(self.config.hydra.sweep.dir)
        returns: list[Sequence[JobReturn]] = []
        # n_trials counts the study's trials, also those that other machines on the same storage ran
        while (done := len(_counted(study))) < n_trials:
            trials = [study.ask(space) for _ in range(min(search.n_jobs, n_trials - done))]
            batch = [[*fixed.values(), *(spaces.override(k, v) for k, v in t.params.items()),
                      *([] if named else [f"search.study_name={search.study_name}"]), f"search.trial={t.number}"]
                     for t in trials]
            # run folder N holds trial N (with other machines on the same study, the first of the batch)
            results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, result in zip(trials, results):
                self._tell(study, trial, result)
                log.info("%s", _progress(study, trial.number, len(_counted(study)), n_trials, self.config.monitor))
            returns.append(results)
        write_plots(study, sweep_dir, self.config.monitor)
        return returns

    def _checked(self, space: dict, fixed: dict[str, str], declared: set[str]) -> dict:
        """The space, each key checked against the composed config before any trial starts: an unknown key
        or group option given on the command line is Hydra's one-line error; a key of search.params that
        this config lacks (model.depth with model=resnet) is left out of the search, with a warning."""
        loader = self.hydra_context.config_loader
        base = loader.load_sweep_config(self.config, list(fixed.values()))
        groups = base.hydra.runtime.choices
        checked = {}
        for key, dist in space.items():
            first = dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low
            if key in groups:
                for option in dist.choices:
                    loader.load_sweep_config(self.config, [*fixed.values(), spaces.override(key, option)])
            elif key[0] not in "+~" and OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
                if key in declared:
                    log.warning("search: %s is not a key of this config; left out of the search", key)
                    continue
                loader.load_sweep_config(self.config, [*fixed.values(), spaces.override(key, first)])  # Hydra's error
            checked[key] = dist
        return checked

    @staticmethod
    def _retry_interrupted(study: optuna.Study) -> None:
        """Trials left running by a sweep that was killed: failed, and their parameters asked again."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params)
            log.info("search: trial %d was interrupted; its parameters run again", trial.number)

    @staticmethod
    def _tell(study: optuna.Study, trial: optuna.Trial, result: JobReturn) -> None:
        run = Path(result.hydra_cfg.hydra.runtime.output_dir)
        trial.set_user_attr("run", str(run))
        value = result._return_value  # noqa: SLF001 - JobReturn.return_value re-raises a job's exception
        metrics = _read_json(run / "metrics.json")
        if result.status == JobStatus.COMPLETED and value is not None and metrics is not None:
            trial.set_user_attr("epochs", metrics.get("epochs"))
            trial.set_user_attr("wall_time_s", metrics.get("wall_time_s"))
            if metrics.get("pruned"):
                trial.set_user_attr("stop_reason", metrics.get("stop_reason"))
                _told(study, trial, state=TrialState.PRUNED)
            else:
                _told(study, trial, float(value))
            return
        error = run / "error.txt"
        if isinstance(value, BaseException) and not error.is_file():  # not a user error: a bug, with its traceback
            log.error("trial %d raised", trial.number, exc_info=value)
            if run.is_dir():
                error.write_text(f"{type(value).__name__}: {value}\n")
        reason = error.read_text().strip() if error.is_file() else "no metrics.json"
        trial.set_user_attr("error", reason)
        _told(study, trial, state=TrialState.FAIL)


def _told(study: optuna.Study, trial: optuna.Trial, *args: Any, **kwargs: Any) -> None:
    """study.tell; GridSampler calls study.stop() once the grid is done, which Optuna allows only inside
    study.optimize: the trial is stored by then (Optuna's _tell stores it in a finally), so that is ignored."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


def _same_space(study: optuna.Study, space: dict, name: str) -> None:
    """A study continues only with the space it started with: trials of two spaces in one study would mix
    in its sampler, its summary and its best."""
    from optuna.distributions import distribution_to_json

    wanted = {key: distribution_to_json(dist) for key, dist in space.items()}
    started = study.user_attrs.get("space")
    if started is None:
        study.set_user_attr("space", wanted)
    elif started != wanted:
        changed = sorted(k for k in started.keys() | wanted.keys() if started.get(k) != wanted.get(k))
        raise UserError(f"search.study_name={name} was started with another search space ({', '.join(changed)} "
                        f"differ); give the same space to continue it, or a new search.study_name")


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else None


def _counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count towards search.n_trials: finished ones, but not those a killed sweep interrupted."""
    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and "error" in t.user_attrs)]


def _progress(study: optuna.Study, number: int, done: int, total: int, monitor: str) -> str:
    trial = study.get_trials(deepcopy=False)[number]
    if trial.state == TrialState.COMPLETE:
        outcome = f"{monitor}={trial.value:.4f}"
    elif trial.state == TrialState.PRUNED:
        outcome = trial.user_attrs.get("stop_reason", "pruned")
    else:
        outcome = f"failed: {trial.user_attrs.get('error', '')}"
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        best = "no trial finished yet"
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    return f"trial {done}/{total} (#{number} {params}): {outcome} | {best}"


def write_plots(study: optuna.Study, sweep_dir: Path, monitor: str) -> None:
    """history.png, importances.png, parallel_coordinates.png: Optuna's matplotlib figures of the study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        log.info("search: no trial completed, nothing to plot")
        return
    figures = {"history.png": plots.plot_optimization_history, "parallel_coordinates.png": plots.plot_parallel_coordinate}
    if len(complete) >= 2 and len({str(t.params) for t in complete}) >= 2:
        figures["importances.png"] = plots.plot_param_importances
    for name, plot in figures.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                axes = plot(study, target_name=monitor)
            except (ValueError, RuntimeError) as err:  # e.g. importances of a parameter with one value
                log.info("search: %s not drawn: %s", name, err)
                continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(9, 5.5)
        figure.tight_layout()
        figure.savefig(sweep_dir / name, dpi=110)
        plt.close(figure)
