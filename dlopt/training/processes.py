"""Several processes per run (Lightning's DDP): refuse the process counts that cannot work, before
Lightning starts them.

Lightning's DDP strategy starts ranks >= 1 on this machine by running the command again
(`_SubprocessScriptLauncher`; dlopt.apps makes the command re-runnable). Under SLURM or torchrun
the cluster starts every process itself, and its allocation decides the counts.
"""

from __future__ import annotations

import os

import lightning.pytorch as L
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.strategies import ParallelStrategy
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

from dlopt.errors import UserError


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class NoRelaunch(L.Callback):
    """Marks a run whose command must not be run again to start more processes (inside a Hydra
    sweep each would run the whole sweep): `check_processes` raises `error` if the Trainer would."""

    def __init__(self, error: UserError):
        self.error = error


def check_processes(trainer: L.Trainer) -> None:
    """Raise UserError if the Trainer would start more CPU processes here than there are cores, or
    would run the command again for a run marked `NoRelaunch`."""
    strategy = trainer.strategy
    if not isinstance(strategy, ParallelStrategy) or strategy.cluster_environment.creates_processes_externally:
        return
    cores = cpu_cores()
    if isinstance(trainer.accelerator, CPUAccelerator) and trainer.num_devices > cores:
        raise UserError(f"trainer.devices={trainer.num_devices} starts {trainer.num_devices} processes on the CPU, but "
                        f"this machine has {cores} CPU cores: set trainer.devices={cores} or fewer")
    marks = [c for c in trainer.callbacks if isinstance(c, NoRelaunch)]
    if marks and isinstance(strategy.launcher, _SubprocessScriptLauncher) and trainer.num_devices > 1:
        raise marks[0].error


def check_accelerator(name) -> None:
    """Raise UserError naming trainer.accelerator when this machine has no such device (Lightning says
    only "No supported gpu backend found!"), or when Lightning has no accelerator of that name."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    if name is None or name in ("auto", "cpu"):
        return
    names = sorted(AcceleratorRegistry.available_accelerators())
    available = [n for n in names if AcceleratorRegistry[n]["accelerator"].is_available()]
    wanted = ("cuda", "mps") if name == "gpu" else (name,)
    if not any(n in names for n in wanted):
        raise UserError(f"trainer.accelerator={name} is not an accelerator; choose one of auto, gpu, {', '.join(names)}")
    if not any(n in available for n in wanted):
        raise UserError(f"trainer.accelerator={name}: this machine has no {name} device; use trainer.accelerator=auto "
                        f"(or one of {', '.join(available)})")
