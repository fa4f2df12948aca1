"""What a run shows on the terminal, set up when its task starts: problems to stderr, the rest to stdout.
The run's log file keeps everything. Imports no torch."""

from __future__ import annotations

import logging
import sys


FILE_ONLY = {"file_only": True}  # `extra` of a log record that goes to the run's log file only


def set_up() -> None:
    """The terminal's handlers for a run that is starting (dlopt.apps.task)."""
    problems_to_stderr()
    terminal_skips_file_only()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_hardware_to_file)


def _hardware_to_file(record: logging.LogRecord) -> bool:
    """Lightning's "GPU available: False, used: False" and its TPU and HPU lines go to the log file only: on the
    terminal they came before everything else, a user's one-line error included."""
    if record.getMessage().startswith(("GPU available", "TPU available", "HPU available")):
        record.file_only = True
    return True


class _FileOnly(logging.Filter):
    """Keeps the records marked FILE_ONLY to the run's log file: off the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


def terminal_skips_file_only() -> None:
    """Put _FileOnly on the root logger's console handlers (plain StreamHandlers: Hydra's console; not its file
    handler, nor a test's capture handler)."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not any(isinstance(f, _FileOnly) for f in handler.filters):
            handler.addFilter(_FileOnly())


def problems_to_stderr() -> None:
    """Warnings and errors of the run's log to stderr, the rest to stdout: Hydra's console handler writes every
    level to stdout, where `dlopt train ... > out.txt` would hide the one line saying why it failed. The log file
    keeps everything."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream is sys.stdout \
                and not getattr(handler, "dlopt_split", False):
            handler.addFilter(lambda record: record.levelno < logging.WARNING)
            handler.dlopt_split = True
            problems = logging.StreamHandler(sys.stderr)
            problems.setLevel(max(handler.level, logging.WARNING))
            problems.setFormatter(handler.formatter)
            problems.dlopt_split = True
            root.addHandler(problems)
