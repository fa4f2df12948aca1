"""The one exception type for mistakes a user can make (bad config value, missing file, NaN loss).

Its message is shown as is, without a traceback, so it must name the key or path and say what
would be valid.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class UserError(Exception):
    """A problem the user can fix; the message says how."""


class SweepError(UserError):
    """A UserError every run of a sweep would meet alike: the sweep stops at the first one."""


INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C (128 + SIGINT), as a shell reports it


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, after the run it stopped has said what it keeps (dlopt.apps.task): stops a sweep like Ctrl-C."""


def cause_of(err: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The first exception of type `kind` in err's chain of causes, or None (Hydra's instantiate
    and Lightning wrap what the code they call raised)."""
    seen = set()
    while err is not None and not isinstance(err, kind) and id(err) not in seen:  # a chain may loop back
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return err if isinstance(err, kind) else None


def did_you_mean(name: str, options) -> str:
    """" (did you mean X?)" for the closest of `options` to a misspelt `name`, else ""."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def os_error_message(err: OSError) -> str:
    """One line on a file or folder the system refused (no space, no permission, a file where a
    folder should be): which path, why, and what to do."""
    import errno
    from pathlib import Path

    if err.filename is None:
        return str(err)
    path = str(err.filename)
    shown = path if len(path) <= 200 else f"{path[:80]}... ({len(path)} characters)"
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        candidate = Path(path)
        blocker = next((p for p in reversed((candidate, *candidate.parents)) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return (f"cannot write {shown}: {blocker} is a file where dlopt needs a folder; move it away or "
                    f"write elsewhere (hydra.run.dir=DIR)")
    hint = {errno.ENOSPC: "free some space or write elsewhere (hydra.run.dir=DIR)",
            errno.EDQUOT: "free some space or write elsewhere (hydra.run.dir=DIR)",
            errno.EACCES: "check its permissions, or write elsewhere (hydra.run.dir=DIR)",
            errno.EPERM: "check its permissions, or write elsewhere (hydra.run.dir=DIR)",
            errno.EROFS: "write elsewhere (hydra.run.dir=DIR)",
            errno.ENAMETOOLONG: "a name must fit in a file name (255 characters)"}.get(err.errno)
    return f"{shown}: {err.strerror or err}" + (f"; {hint}" if hint else "")


@contextmanager
def naming(path) -> Iterator[None]:
    """An OSError while writing `path` names it: a write that fails for lack of space says errno 28 without
    a file name, since the file was already open."""
    try:
        yield
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
