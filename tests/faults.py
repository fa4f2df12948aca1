"""Faults for end-to-end tests, added to a real `dlopt train` as callbacks from the command line:
    +callbacks.kill._target_=faults.KillAt +callbacks.kill.epoch=2 +callbacks.kill.batch=5
(the test puts this folder on PYTHONPATH). They do what a crash or a diverging run does."""

import os
import signal
from pathlib import Path

import lightning.pytorch as L
import torch


class KillAt(L.Callback):
    """SIGKILL this process (no cleanup, like `kill -9` or the OOM killer) at a batch of an epoch,
    when the environment has DLOPT_TEST_KILL=1; otherwise do nothing, so that the same config
    resumes and runs to the end."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if os.environ.get("DLOPT_TEST_KILL") == "1" and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGKILL)


class BlowUpAt(L.Callback):
    """Scale every weight by 1e30 at the start of an epoch: the loss becomes inf/NaN right away."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.mul_(1e30)


class FillDiskAt(L.Callback):
    """At the start of an epoch, fill the file system that holds `path` with a file of zeros until
    the system says there is no space left, as another program filling the disk would."""

    def __init__(self, epoch: int, path: str):
        self.epoch, self.path = epoch, path

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch != self.epoch:
            return
        chunk = bytes(1 << 16)
        try:
            with open(self.path, "wb") as filler:
                while True:
                    filler.write(chunk)
                    filler.flush()
        except OSError:  # ENOSPC: the disk is full now
            pass


class Payload:
    """Unpickling this runs code: it writes a file (what a checkpoint from elsewhere may hold)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).write_text, ("pwned",))
