"""The `threads` knob of every command that runs a network: how many threads torch computes one operation with.

`threads=auto` (the default) is one thread per process unless the user set OMP_NUM_THREADS (or MKL_NUM_THREADS),
which torch then follows. One, because dlopt's networks are small: a second thread makes the default job little
faster on an idle 2-core machine and much slower when another run shares the cores (bench/threads.py), and sweeps,
ensembles and DDP run one process per core anyway. `threads=N` asks for N (e.g. a large model alone on a big
machine).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from dlopt.errors import UserError
from dlopt.terminal import FILE_ONLY

log = logging.getLogger(__name__)
VALID = "auto (1 per process unless OMP_NUM_THREADS is set) or an integer >= 1"
ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # what torch reads at import to choose its thread count


def valid(threads: Any) -> bool:
    return threads == "auto" or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1)


def check(threads: Any) -> None:
    if not valid(threads):
        raise UserError(f"threads={threads} is not valid: expected {VALID}")


def use(threads: Any, quiet: bool = False) -> int:
    """Set torch's intra-op thread count from the knob's value, log it (unless the caller does), and return it."""
    check(threads)
    import torch

    if threads != "auto":
        torch.set_num_threads(threads)
        why = f"threads={threads}"
    elif chosen := [f"{name}={os.environ[name]}" for name in ENVIRONMENT if os.environ.get(name)]:
        why = f"threads=auto follows {' '.join(chosen)}"
    else:
        torch.set_num_threads(1)
        why = "threads=auto: one per process; threads=N for more"
    (log.debug if quiet else log.info)("torch computes with %d thread%s (%s)", torch.get_num_threads(),
             "" if torch.get_num_threads() == 1 else "s", why, extra=FILE_ONLY)  # the run's log keeps it
    return torch.get_num_threads()
