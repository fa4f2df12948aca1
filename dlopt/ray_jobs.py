"""`hydra/launcher=ray`: each run of a sweep (a search's trial, a `-m` combination, an ensemble's member) as one Ray
task, on a running Ray cluster or on a local Ray.

Hydra's own Ray plugin is not used: it pins cloudpickle<3 (joblib 1.6, the joblib launcher's, needs >=3), always
passes object_store_memory (which ray.init refuses when it joins a cluster), and runs several jobs in one worker
process. Here, on Ray's public API:
- `address: null` joins the cluster `ray start` runs on this machine (or RAY_ADDRESS), else starts a local Ray;
- each job gets a fresh worker process (max_calls=1: torch threads, logging handlers and CUDA state never carry
  over), hydra.launcher.num_cpus and num_gpus, and the driver's DLOPT_* variables and those named in env_vars;
- every path stays the driver's: the sweep folder is made absolute (so are a study's default storage and the run
  folders in it) and the job runs in the driver's folder, for data paths given relative to it;
- a job whose node cannot see the sweep folder, or whose worker died, is recorded in its run folder (error.txt)
  on the driver, so the sweep, the search and its summary count it as a failed run with its reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from dlopt.errors import UserError

log = logging.getLogger("dlopt.ray")
_connecting = threading.Lock()  # an asynchronous search launches from several threads


def connect(address: str | None) -> None:
    """ray.init once per process, each failure a user can cause in one line."""
    with _connecting:
        try:
            import ray
        except ImportError:
            raise UserError("hydra/launcher=ray needs Ray: pip install 'dlopt[ray]'") from None
        if ray.is_initialized():
            return
        target = address or os.environ.get("RAY_ADDRESS")
        where = (f"hydra.launcher.address={address}" if address else f"RAY_ADDRESS={target}" if target else
                 "this machine")
        _reachable(target, where)  # ray.init retries an address nobody answers at for minutes
        try:
            # each run's log is its train.log; the terminal shows the sweep's or search's lines
            with _stderr_kept() as kept:  # Ray's core prints a line a second while it retries
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, ray.exceptions.RayError) as err:  # a wrong token: a ConnectionError saying so
            if "Authentication" not in f"{err} {err.__cause__} {kept}":
                raise _no_cluster("reached", where, str(err).splitlines()[0]) from None
            raise UserError(f"hydra/launcher=ray: the Ray cluster at {where} refused this machine's token; give this "
                            "machine the cluster's (RAY_AUTH_TOKEN, or the file ~/.ray/auth_token; "
                            "`ray get-auth-token` on the head node prints it)") from None
        nodes, resources = [n for n in ray.nodes() if n["Alive"]], ray.cluster_resources()
        log.info("ray: %d node(s), %g CPUs, %g GPUs at %s", len(nodes), resources.get("CPU", 0),
                 resources.get("GPU", 0), ray.get_runtime_context().gcs_address)


def _no_cluster(how: str, where: str, why: str) -> UserError:
    return UserError(f"hydra/launcher=ray: no Ray cluster {how} at {where} ({why}); start one with `ray start --head` "
                     "and give its HOST:PORT, or hydra.launcher.address=null for this machine's (else a local Ray)")


@contextlib.contextmanager
def _stderr_kept() -> Iterator[list[str]]:
    """File descriptor 2 (where Ray's C++ core writes) into a file while the block runs, its text kept in the list
    yielded; written out after all if the block succeeds."""
    kept: list[str] = []
    with tempfile.TemporaryFile("w+", prefix="dlopt-ray-") as file:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(file.fileno(), 2)
        try:
            yield kept
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            file.seek(0)
            kept.append(file.read())
    sys.stderr.write(kept[0])


def _reachable(address: str | None, where: str) -> None:
    host, _, port = (address or "").rpartition(":")
    if not port.isdigit():  # none, "auto" or "local": Ray's own lookup, which fails at once
        return
    try:
        socket.create_connection((host.removeprefix("ray://") or "127.0.0.1", int(port)), timeout=10).close()
    except OSError as err:
        raise _no_cluster("answers", where, err.strerror or str(err)) from None


def fits(num_cpus: float, num_gpus: float) -> None:
    """A job no node of the cluster can take would wait for ever: say so before any is sent."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    for name, knob, wanted in (("CPU", "num_cpus", num_cpus), ("GPU", "num_gpus", num_gpus)):
        most = max((n.get(name, 0) for n in nodes), default=0)
        if wanted > most:
            raise UserError(f"hydra.launcher.{knob}={wanted:g}: no node of the Ray cluster has that many "
                            f"{name}s (at most {most:g}); ask for at most {most:g}")


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run each job as a Ray task and wait for them all; job i runs in sweep folder initial_job_idx + i."""
    import ray

    config, settings = launcher.config, launcher.settings
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    env = {k: v for k, v in os.environ.items() if k.startswith("DLOPT_") or k in settings.env_vars}
    remote = ray.remote(max_calls=1, max_retries=0)(_run).options(
        num_cpus=settings.num_cpus, num_gpus=settings.num_gpus, runtime_env={"env_vars": env} if env else None)
    state = Singleton.get_state()
    if len(job_overrides) > 1:  # one job at a time is a search's trial: the search says which
        for i, overrides in enumerate(job_overrides):
            log.info("ray: run %d: %s", initial_job_idx + i, " ".join(filter_overrides(overrides)))
    quoted = str(sweep_dir).replace("\\", "\\\\").replace("'", "\\'")
    jobs = [[*overrides, f"hydra.sweep.dir='{quoted}'"] for overrides in job_overrides]
    futures = [remote.remote(initial_job_idx + i, overrides, launcher.hydra_context, config, launcher.task_function,
                             state, os.getcwd(), sweep_dir) for i, overrides in enumerate(jobs)]
    results = []
    for i, (overrides, future) in enumerate(zip(jobs, futures)):
        try:
            result = ray.get(future)
        except ray.exceptions.RayTaskError:  # _run itself raised: a bug, with its traceback (a job's own error is
            raise                            # in its JobReturn)
        except ray.exceptions.RayError as err:  # the worker process or its node died
            result = f"its Ray worker died ({type(err).__name__}: {str(err).splitlines()[0]})"
        if isinstance(result, str):
            result = _recorded_failure(launcher, initial_job_idx + i, overrides, result)
        results.append(result)
    return results


def _run(idx: int, overrides: Sequence[str], hydra_context: HydraContext, config: DictConfig,
         task_function: TaskFunction, state: dict, cwd: str, sweep: Path) -> JobReturn | str:
    """On the worker: the job as Hydra's launchers run one (the joblib launcher's execute_job), in the driver's
    folder when this node has it. The reason, when the sweep folder is not on a file system this node sees."""
    setup_globals()
    Singleton.set_state(state)
    node = f"{socket.gethostname()}/{_node_id()}"
    if not (sweep / "multirun.yaml").is_file():
        return (f"the sweep folder {sweep} is not on a file system Ray node {node} sees: start every node on a "
                "shared file system that holds it, or give hydra.sweep.dir=/SHARED/FOLDER")
    if os.path.isdir(cwd):
        os.chdir(cwd)
    os.environ["DLOPT_NODE"] = node  # metrics.json records where the run ran
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()[:8]


def _recorded_failure(launcher: Any, idx: int, overrides: Sequence[str], reason: str) -> JobReturn:
    """A job that could not run, recorded on the driver as a run folder that failed before training: its config
    (.hydra/, as Hydra writes it) and error.txt with the reason."""
    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(config):
        config.hydra.job.num = idx
        run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        config.hydra.runtime.output_dir = str(run_dir)
    hydra_cfg = OmegaConf.masked_copy(config, "hydra")
    task_overrides = list(config.hydra.overrides.task)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    OmegaConf.save(task_cfg, run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(hydra_cfg, run_dir / ".hydra" / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(task_overrides), run_dir / ".hydra" / "overrides.yaml")
    (run_dir / "error.txt").write_text(f"{reason}\n")
    log.error("run %d: %s", idx, reason)
    return JobReturn(overrides=task_overrides, cfg=task_cfg, hydra_cfg=hydra_cfg, working_dir=str(run_dir),
                     task_name=config.hydra.job.name, status=JobStatus.COMPLETED, _return_value=None)
