"""A file replaced in one step: a crash leaves the previous file or the new one under its name, never a truncated
one. metrics.json and predictions.npz (dlopt.training.report), checkpoints (dlopt.training.checkpoint_io) and
diagnostics.jsonl (dlopt.diagnostics.recorder) are written through `replacing`. Imports no torch.

The bytes go to a hidden temporary file beside the target (`.NAME.tmp`): on the same file system the last step is
one os.replace, never a copy (Lightning's own checkpoint save stages in the system's temporary folder, which may be
another file system). They go through a Python file, so a full disk is an OSError naming the target. The temporary
file is removed whatever happens; one left by a killed process is overwritten by the next write of that name.
No fsync: this guards against a process that dies, not against a machine that loses power.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


@contextmanager
def replacing(path: Path | str) -> Iterator[BinaryIO]:
    """A binary file whose content replaces `path` when the block ends; if it raises, `path` is left as it was.
    An OSError of the temporary file (no space, no permission) names `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as file:
            yield file
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is not None and str(err.filename) != str(tmp):
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)
