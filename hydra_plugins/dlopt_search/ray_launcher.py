"""Hydra finds launchers only under hydra_plugins/: this shim hands the work to dlopt.ray_jobs (imported, with Ray,
only when a sweep runs)."""

from typing import Any, List, Optional, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class RayLauncher(Launcher):
    """`hydra/launcher=ray` (conf/hydra/launcher/ray.yaml): each run as a Ray task, see dlopt/ray_jobs.py."""

    def __init__(self, **settings: Any) -> None:
        self.settings = OmegaConf.create(settings)
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from dlopt import ray_jobs

        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        ray_jobs.connect(self.settings.address)  # before the sweep writes anything
        ray_jobs.fits(self.settings.num_cpus, self.settings.num_gpus)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[JobReturn]:
        from dlopt import ray_jobs

        return ray_jobs.launch(self, job_overrides, initial_job_idx)
