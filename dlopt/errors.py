"""The one exception type for mistakes a user can make (bad config value, missing file, NaN loss).

Its message is shown as is, without a traceback, so it must name the key or path and say what
would be valid.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message says how."""


class SweepError(UserError):
    """A UserError every run of a sweep would meet alike: the sweep stops at the first one."""


def cause_of(err: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The first exception of type `kind` in err's chain of causes, or None (Hydra's instantiate
    and Lightning wrap what the code they call raised)."""
    while err is not None and not isinstance(err, kind):
        err = err.__cause__ or err.__context__
    return err


def did_you_mean(name: str, options) -> str:
    """" (did you mean X?)" for the closest of `options` to a misspelt `name`, else ""."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]}?)" if close else ""
