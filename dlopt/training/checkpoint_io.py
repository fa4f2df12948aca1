"""Checkpoint files written atomically: a crash leaves the previous file or the new one, never a
truncated one.

Lightning's own save stages the bytes in the system's temporary folder and moves them into place;
when that folder is on another file system (a tmpfs /tmp, a network home) the move is a copy, and
a crash during it truncates the checkpoint. Here the temporary file sits beside the target, so the
final step is one os.replace. The bytes go through a Python file, so that a full disk is an
OSError naming the checkpoint (torch.save given a path says only "enforce fail at inline_container").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as file:
                torch.save(checkpoint, file)
            os.replace(tmp, path)
        except OSError as err:  # the previous checkpoint of that name is still whole
            raise OSError(err.errno, err.strerror, str(path)) from None
        finally:
            tmp.unlink(missing_ok=True)
