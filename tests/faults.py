"""Faults for end-to-end tests, added to a real `dlopt train` as callbacks from the command line:
    +callbacks.kill._target_=faults.KillAt +callbacks.kill.epoch=2 +callbacks.kill.batch=5
(the test puts this folder on PYTHONPATH). They do what a crash or a diverging run does."""

import os
import signal
from pathlib import Path

import lightning.pytorch as L
import torch


class KillAt(L.Callback):
    """SIGKILL this process (no cleanup, like `kill -9` or the OOM killer) where the environment says:
    DLOPT_TEST_KILL=1 at batch `batch` of epoch `epoch` (counted from 0), or DLOPT_TEST_KILL=EPOCH:WHERE with EPOCH
    counted from 1 as dlopt counts them and WHERE one of
        start        when the epoch starts, before its first batch
        batchN       before its batch N (from 0)
        validation   before its first validation batch
        checkpointN  while the epoch's Nth checkpoint is written (1: best.ckpt when the epoch improved, else
                     last.ckpt), leaving half a file in a temporary place, as a kill during a write does.
    Otherwise it does nothing, so that the same config resumes and runs to the end. With `run`, only in the run folder of
    that name (a sweep's run N)."""

    def __init__(self, epoch: int, batch: int, run: str | None = None):
        self.epoch, self.batch, self.run = epoch, batch, run
        self._saves = 0

    def _due(self, trainer, where: str) -> bool:
        wanted = os.environ.get("DLOPT_TEST_KILL", "0")
        if self.run is not None and Path(trainer.default_root_dir).name != str(self.run):
            return False
        return wanted == f"{trainer.current_epoch + 1}:{where}" and trainer.state.fn == "fit" \
            and not trainer.sanity_checking

    def on_train_epoch_start(self, trainer, pl_module):
        self._saves = 0
        if self._due(trainer, "start"):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if os.environ.get("DLOPT_TEST_KILL") == "1" and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) \
                and (self.run is None or Path(trainer.default_root_dir).name == str(self.run)) \
                or self._due(trainer, f"batch{batch_idx}"):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and self._due(trainer, "validation"):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self._saves += 1
        if self._due(trainer, f"checkpoint{self._saves}"):
            # where dlopt's AtomicCheckpointIO writes last.ckpt before it moves it in place (the next save replaces it)
            (Path(trainer.default_root_dir) / "checkpoints" / ".last.ckpt.tmp").write_bytes(b"PK\x03\x04 half of it")
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
