"""The one exception type for mistakes a user can make (bad config value, missing file, NaN loss).

Its message is shown as is, without a traceback, so it must name the key or path and say what
would be valid.
"""


class UserError(Exception):
    """A problem the user can fix; the message says how."""
