"""Checkpoint files written atomically: a crash leaves the previous file or the new one, never a
truncated one.

Lightning's own save stages the bytes in the system's temporary folder and moves them into place;
when that folder is on another file system (a tmpfs /tmp, a network home) the move is a copy, and
a crash during it truncates the checkpoint. Here they go through dlopt.atomic's temporary file beside
the target (`.last.ckpt.tmp`), so the final step is one os.replace, and through a Python file, so that
a full disk is an OSError naming the checkpoint (torch.save given a path says only "enforce fail at
inline_container").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dlopt.atomic import replacing


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as file:  # an OSError names the checkpoint; the previous one of that name is still whole
            torch.save(checkpoint, file)
