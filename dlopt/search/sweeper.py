"""The sweeper behind `search=grid|random|bayes|genetic`: an Optuna study driven by ask and tell.

Trials are asked of the study one at a time and launched through the configured Hydra launcher as
ordinary jobs (one run folder each, run folder N for trial N, `search.trial=N` telling the job which
trial it is, so that it reports each epoch to the pruner), and told back: the returned objective,
pruned (the run's metrics.json says so) or failed (with the reason the run left in error.txt). The
search is asynchronous: with a launcher that runs jobs side by side (joblib, submitit, ray),
search.n_jobs trials are in flight at all times, each launched on its own thread, and as soon as one
ends the trials that ended are told and new ones asked, so the sampler sees every finished trial
before it is asked again and a pruned or short trial frees its worker at once. The sweeper's own
thread does all the study's work (ask, tell); Hydra's basic launcher (the default) runs a job in
this very process, so there trials run one at a time. The study lives in search.storage (default: study.db in the sweep folder),
so running the same search.study_name again continues it. Hydra's Optuna sweeper is not used: it
needs optuna<3 and cannot prune (Hydra issues 1710, 1954), and it launches batches.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence

import optuna
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from dlopt import folders, terminal
from dlopt.checks.values import check_values
from dlopt.errors import UserError
from dlopt.search import space as spaces
from dlopt.search import study as studies

log = logging.getLogger("dlopt.search")
_ABSENT = object()
optuna.logging.set_verbosity(optuna.logging.WARNING)  # dlopt prints one line per trial itself
# launchers that log their sweep folder and the job's overrides at each launch: here, a launch per trial
FEW_TRIALS = 20  # below this many completed trials, importances.png says it is a rough guide
QUIET_LAUNCHERS = ("hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_submitit_launcher")


class Search:
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        terminal.library_warnings_off_console()  # this process has no log file before (and between) the trials
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
        self.beat = studies.heartbeat(search, url)
        storage = studies.storage(url, self.beat)  # a bad search.storage fails here, before anything is written
        folders.make(sweep_dir)
        study = optuna.create_study(study_name=str(search.study_name), storage=storage, sampler=sampler,
                                    pruner=pruner, direction="maximize" if cfg.mode == "max" else "minimize",
                                    load_if_exists=True)
        _same_space(study, space, search.study_name)
        # a continued study draws new points: its sampler's seed counts the trials it has (the grid sampler
        # keeps its own record of the points it visited, and its seed orders the grid: it stays)
        if study.trials and search.sampler != "grid":
            study.sampler = studies.sampler(search, seed=cfg.seed + len(study.trials), grid=grid)
        elif not owned and search.sampler != "grid":  # processes sharing a study start together: one seed each
            study.sampler = studies.sampler(search, seed=cfg.seed + os.getpid(), grid=grid)
        OmegaConf.save(cfg, sweep_dir / "multirun.yaml")
        if owned:
            self._retry_interrupted(study, sweep_dir)
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
        """Keep search.n_jobs trials in flight until the study has n_trials: as soon as trials end, tell them, then ask
        new ones for the free slots. The JobReturns of each launch (one trial each), in the order the trials ended."""
        search, sweep_dir = self.config.search, Path(self.config.hydra.sweep.dir)
        slots = search.n_jobs if _side_by_side(self.launcher) else 1
        if slots < search.n_jobs:
            log.info("search: search.n_jobs=%d, but this launcher runs a trial in this process: one at a time "
                     "(hydra/launcher=joblib runs them side by side)", search.n_jobs)
        pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="dlopt-trial") if slots > 1 else None
        running: dict[Future, optuna.Trial] = {}
        returns: list[Sequence[JobReturn]] = []
        levels = {name: logging.getLogger(name).level for name in QUIET_LAUNCHERS}
        for name in QUIET_LAUNCHERS:  # their lines at each launch would come once per trial; dlopt logs its own
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            # n_trials counts the study's trials, also those that other processes on the same storage ran or run
            room = self._room(study, n_trials, len(running))
            while room > 0 or running:
                while room > 0 and len(running) < slots:
                    with _heartbeats_quiet():
                        trial = study.ask(space)
                    if _surplus(study, trial, n_trials):
                        room = 0
                        break
                    overrides = [*fixed.values(), *(spaces.override(k, v) for k, v in trial.params.items()),
                                 *([] if named else [f"search.study_name={search.study_name}"]),
                                 f"search.trial={trial.number}"]
                    running[self._launch(pool, overrides, trial.number)] = trial
                    room -= 1
                if not running:
                    break
                ended, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(ended, key=lambda f: running[f].number):
                    trial, results = running.pop(future), future.result()
                    self._tell(study, trial, results[0])
                    log.info("%s", _progress(study, trial.number, len(_counted(study)), n_trials, self.config.monitor))
                    returns.append(results)
                room = self._room(study, n_trials, len(running))
        except BaseException:  # a SweepError in a trial, Ctrl-C: no new trial; those in flight end, the same cause
            # stops them (joblib ends them all), and those that finish are told
            if running:
                log.warning("search: stopping; waiting for the trials still running (%s)",
                            ", ".join(str(t.number) for t in running.values()))
            for future in as_completed(running):
                with contextlib.suppress(BaseException):
                    self._tell(study, running[future], future.result()[0])
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
        log.info("%s", _ended(study, self.config.monitor))
        write_plots(study, sweep_dir, self.config.monitor)
        return returns

    def _launch(self, pool: Optional[ThreadPoolExecutor], overrides: list[str], number: int) -> Future:
        """Trial `number` launched in run folder `number`: on a thread of the pool, or without one here and now."""
        if pool is not None:
            return pool.submit(self.launcher.launch, [overrides], initial_job_idx=number)
        future: Future = Future()
        future.set_result(self.launcher.launch([overrides], initial_job_idx=number))
        return future

    def _room(self, study: optuna.Study, n_trials: int, mine: int) -> int:
        """How many trials to ask now: n_trials less those finished and those running (`mine` of them this sweeper's).
        With heartbeats, a trial whose process died is failed (and its parameters enqueued once more, Optuna's
        RetryHeartbeatStaleTrialCallback) once it is silent for two heartbeats; while only other processes run the last
        trials, wait for them, since a dead one is found so."""
        terminal.library_warnings_off_console()  # Hydra's launchers put their console handler back at each launch
        while True:
            if self.beat:
                with _heartbeats_quiet():
                    optuna.storages.fail_stale_trials(study)
            done, running = len(_counted(study)), len(_running(study))
            if done >= n_trials or n_trials - done - running > 0 or mine or not (self.beat and running):
                return n_trials - done - running
            time.sleep(self.beat)

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
    def _retry_interrupted(study: optuna.Study, sweep_dir: Path) -> None:
        """Trials left running by a sweep that was killed: marked interrupted (a FAIL state in the study, told
        apart from failures by the user attribute "interrupted") and their parameters asked again, as a new
        trial. The interrupted run's folder (if it was made) says so in interrupted.txt, for the summary."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.enqueue_trial(trial.params)
            rerun = study.get_trials(deepcopy=False)[-1].number  # enqueue_trial makes the waiting trial now
            running = optuna.Trial(study, trial._trial_id)  # noqa: SLF001 (the id of a trial still running)
            running.set_user_attr("interrupted", True)
            running.set_user_attr("rerun", rerun)
            study.tell(trial.number, state=TrialState.FAIL)
            run = sweep_dir / str(trial.number)
            if (run / ".hydra").is_dir() and not (run / "metrics.json").is_file():
                (run / "interrupted.txt").write_text(f"interrupted; re-run as trial {rerun}\n")
            log.info("search: trial %d was interrupted; its parameters run again as trial %d", trial.number, rerun)

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


@contextlib.contextmanager
def _heartbeats_quiet():
    """Without Optuna's warnings about the heartbeats dlopt keeps on purpose: fail_stale_trials is "experimental", and
    a trial asked outside Study.optimize with heartbeats on is "supposed" not to be (a trial keeps its heartbeat in the
    process that runs it: dlopt.search.study.heartbeats). On a side-by-side launcher these come while Hydra puts its
    console handler back for a launch, so library_warnings_off_console may not be on it yet."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*fail_stale_trials is experimental", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        yield


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


def _side_by_side(launcher: Any) -> bool:
    """Whether the launcher runs a job in a process of its own, so that launches may wait on several threads at once:
    not Hydra's basic launcher (this very process), nor joblib's with n_jobs=1 (joblib then runs it in the caller)."""
    return not isinstance(launcher, BasicLauncher) and getattr(launcher, "joblib", {}).get("n_jobs") != 1


def _running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials in flight: this sweeper's and, on a shared storage, other processes'."""
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def _surplus(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """Whether the trial just asked is beyond n_trials because another process on the same storage asked at the
    same moment: then it is told failed, marked surplus (not a result, not counted), and not run."""
    ahead = {t.number for t in [*_counted(study), *_running(study)] if t.number < trial.number}
    if len(ahead) < n_trials:
        return False
    trial.set_user_attr("surplus", True)
    study.tell(trial, state=TrialState.FAIL)
    return True


def _counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count towards search.n_trials: finished ones, but not those a killed sweep interrupted."""
    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and "error" in t.user_attrs)]


def rounded(value: Any, digits: int = 4) -> str:
    """A sampled value as a person reads it: floats to `digits` significant digits (study.db, each run's
    config and metrics.json keep the full value)."""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _progress(study: optuna.Study, number: int, done: int, total: int, monitor: str) -> str:
    """One line per trial. Trials are numbered as Optuna numbers them, from 0, and trial N runs in folder N."""
    trial = study.get_trials(deepcopy=False)[number]
    if trial.state == TrialState.COMPLETE:
        outcome = f"{monitor}={rounded(trial.value)}"
    elif trial.state == TrialState.PRUNED:
        outcome = f"pruned ({trial.user_attrs.get('stop_reason', 'behind the others')})"
    else:
        outcome = f"failed: {trial.user_attrs.get('error', '')}"
    try:
        best = f"best {monitor}={rounded(study.best_value)} (trial {study.best_trial.number})"
    except ValueError:
        best = "no trial finished yet"
    params = " ".join(f"{k}={rounded(v)}" for k, v in trial.params.items())
    return f"search: trial {number} ({done} of {total} finished): {outcome} | {params} | {best}"


def tally(study: optuna.Study) -> dict[str, int]:
    """The study's trials by outcome: done, pruned, failed, interrupted (a killed sweep's, not a failure)."""
    count = dict.fromkeys(("done", "pruned", "failed", "interrupted"), 0)
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}  # a dead process's trial, run again (heartbeats)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            count["done"] += 1
        elif t.state == TrialState.PRUNED:
            count["pruned"] += 1
        elif t.state == TrialState.FAIL and not t.user_attrs.get("surplus"):
            count["interrupted" if t.user_attrs.get("interrupted") or t.number in retried else "failed"] += 1
    return count


def _ended(study: optuna.Study, monitor: str) -> str:
    """The search's own summary line."""
    count = tally(study)
    text = ", ".join(f"{n} {name}" for name, n in count.items() if n or name != "interrupted")
    if count["interrupted"]:
        text += " (re-run)"
    try:
        best = study.best_trial
        params = " ".join(f"{k}={rounded(v)}" for k, v in best.params.items())
        text += f"; best {monitor}={rounded(best.value)} in trial {best.number} ({params})"
    except ValueError:
        text += "; no trial finished"
    return f"search {study.study_name} ended: {text}"


def short_names(names: Sequence[str]) -> dict[str, str]:
    """Knob names short enough for an axis: the last part of a dotted key (regularization.dropout -> dropout),
    the whole key where two knobs share their last part."""
    last = [name.rsplit(".", 1)[-1] for name in names]
    return {name: short if last.count(short) == 1 else name for name, short in zip(names, last)}


def write_plots(study: optuna.Study, sweep_dir: Path, monitor: str) -> None:
    """history.png (dlopt's own: every trial, pruned ones marked apart), parallel_coordinates.png (Optuna's,
    with short knob names and their full names beneath) and importances.png (Optuna's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        log.info("search: no trial completed, nothing to plot")
        return
    _history(study, sweep_dir / "history.png", monitor)
    figures = {"parallel_coordinates.png": plots.plot_parallel_coordinate}
    if len(complete) >= 2 and len({str(t.params) for t in complete}) >= 2:
        figures["importances.png"] = plots.plot_param_importances
    names = sorted({k for t in complete for k in t.params})
    integers = {k: isinstance(d, optuna.distributions.IntDistribution)
                for t in complete for k, d in t.distributions.items()}
    short = short_names(names)
    truncated = {(n if len(n) < 20 else f"{n[:17]}..."): n for n in names}  # Optuna's own axis labels
    for name, plot in figures.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                axes = plot(study, target_name=monitor)
            except (ValueError, RuntimeError) as err:  # e.g. importances of a parameter with one value
                log.info("search: %s not drawn: %s", name, err)
                continue
        ax = axes.flat[0] if hasattr(axes, "flat") else axes
        figure = ax.figure
        if name == "parallel_coordinates.png":
            labels = [label.get_text() for label in ax.get_xticklabels()]
            full = [truncated.get(label, label) for label in labels]
            _readable_lines(ax, [integers.get(f, False) for f in full[1:]])
            ax.set_xticks(ax.get_xticks(), [short.get(f, f) for f in full], rotation=0)
            legend = [f"{short[f]} = {f}" for f in full if f in short and short[f] != f]
            figure.set_size_inches(max(9, 1.6 * len(labels)), 6)
            if legend:
                figure.text(0.01, 0.01, "   ".join(legend), fontsize=8, va="bottom")
            figure.tight_layout(rect=(0, 0.05, 1, 1))
        else:
            figure.set_size_inches(9, 5.5)
            ax.set_title(f"Hyperparameter importances (fANOVA over {len(complete)} completed trials)", loc="left")
            if len(complete) < FEW_TRIALS:
                figure.text(0.01, 0.01, f"{len(complete)} trials: a rough guide only; importances settle with a few "
                            f"dozen trials", fontsize=9, color="tab:red", va="bottom")
            figure.tight_layout(rect=(0, 0.04, 1, 1))
        figure.savefig(sweep_dir / name, dpi=110)
        plt.close(figure)


def _readable_lines(ax: Any, integer: list[bool]) -> None:
    """Optuna's parallel coordinates, every line visible: its Blues run from white (the worst trials vanish) to
    dark blue; here from mid blue. And whole numbers on the axis of an integer knob."""
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import MaxNLocator

    lines = next((c for c in ax.collections if c.get_array() is not None), None)  # the trials, coloured by value
    colorbar = None
    if lines is not None:
        cmap = lines.get_cmap()  # Blues, or Blues_r (the best, lowest, dark) when the objective is minimized
        lines.set_cmap(ListedColormap(cmap(np.linspace(0.0, 0.6, 256) if cmap.name.endswith("_r") else
                                           np.linspace(0.4, 1.0, 256))))
        if lines.colorbar is not None:
            lines.colorbar.update_normal(lines)
            colorbar = lines.colorbar.ax
    twins = [a for a in ax.figure.axes if a is not ax and a is not colorbar]  # one per knob, in axis order
    for twin, whole in zip(twins, integer):
        if whole and twin.get_yscale() == "linear":
            twin.yaxis.set_major_locator(MaxNLocator(integer=True))


def _history(study: optuna.Study, path: Path, monitor: str) -> list[str]:
    """history.png (`history_figure`); the labels of its legend."""
    import matplotlib.pyplot as plt

    figure = history_figure(study, monitor)
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return labels


def history_figure(study: optuna.Study, monitor: str):
    """The objective of each trial by trial number: done trials as dots with the best so far as a line (from two done),
    pruned trials as crosses at the last value they reported, failed and interrupted ones as ticks on the axis; the
    legend below the axes, whole trial numbers on the x axis."""
    import matplotlib.pyplot as plt

    from dlopt.training import report

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    better = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    figure, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    ax.plot([t.number for t in done], [t.value for t in done], "o", color="tab:blue", label=f"done ({len(done)})")
    best, so_far = [], None
    for t in done:
        so_far = t.value if so_far is None else better(so_far, t.value)
        best.append(so_far)
    if len(done) > 1:  # of one trial, no line
        ax.step([t.number for t in done], best, where="post", color="tab:red", label="best so far")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.plot([t.number for t in pruned], last, "x", color="tab:orange", markersize=8,
                label=f"pruned ({len(pruned)}; value when stopped)")
    if failed:
        ax.plot([t.number for t in failed], [0] * len(failed), "|", color="tab:gray", markersize=14,
                transform=ax.get_xaxis_transform(), clip_on=False, label=f"failed or interrupted ({len(failed)})")
    ax.set_xlabel("trial (run folder)")
    ax.set_ylabel(monitor)
    ax.set_title(f"search {study.study_name}: {monitor} by trial")
    report.whole_ticks(ax, [t.number for t in [*done, *pruned, *failed]])
    ax.grid(alpha=0.3)
    report.legend_below(figure)
    return figure
