"""What a run shows on the terminal, set up when its task starts: problems to stderr, the rest to stdout, a library's
warnings to the run's log file only, and a progress bar only where stdout is a terminal (`interactive`). The run's
log file keeps everything. Imports no torch."""

from __future__ import annotations

import logging
import sys


FILE_ONLY = {"file_only": True}  # `extra` of a log record that goes to the run's log file only


_interactive: bool | None = None  # stdout a terminal, as `set_up` found it when the run started


def set_up() -> None:
    """The terminal's handlers for a run that is starting (dlopt.apps.task)."""
    global _interactive
    _interactive = sys.stdout.isatty()
    logging.raiseExceptions = False  # a log line that cannot be written (a full disk) prints no traceback over the error
    problems_to_stderr()
    terminal_skips_file_only()
    logging.captureWarnings(True)  # the warnings module's warnings become records of "py.warnings": see _FileOnly
    lightning_through_root()
    # Lightning's lines that came before everything else on the terminal, a user's one-line error included, and its
    # "Detected KeyboardInterrupt" (dlopt.apps.task says what an interrupted run keeps)
    file_only_lines("lightning.pytorch.utilities.rank_zero", "GPU available:", "TPU available:", "HPU available:",
                    "was configured so", "Detected KeyboardInterrupt")
    logging.getLogger("torch").setLevel(logging.WARNING)  # torch's INFO lines (fake tensor cache statistics at exit)


def lightning_through_root() -> None:
    """Lightning's lines through the run's handlers (its log file, the terminal's filters). Imported before logging
    was set up (by a process that imports dlopt's modules early: the tests' preloaded dlopt, a launcher's worker),
    Lightning gives its loggers a stderr handler of their own and stops them from propagating; imported later, only
    "lightning" gets one (dlopt.training.run clears it)."""
    through_root("lightning", "lightning.pytorch", "lightning.fabric")


def through_root(*names: str) -> None:
    """The loggers `names` without a stderr handler of their own, passing their records to the root logger's handlers
    (and so to the terminal's filters and the run's log file)."""
    for name in names:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True


def interactive() -> bool:
    """Whether stdout is a terminal (decided when the run started; without `set_up`, now), where a progress bar
    redraws itself in place. Off one (CI, a pipe, a file) a bar is a stream of fragments, so none is built and the
    run's one log line per epoch takes its place (dlopt.training.run)."""
    return sys.stdout.isatty() if _interactive is None else _interactive


class _Lines(logging.Filter):
    """Marks the records whose message contains one of `texts` FILE_ONLY."""

    def __init__(self, texts: tuple[str, ...]):
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        if any(text in record.getMessage() for text in self.texts):
            record.file_only = True
        return True


def file_only_lines(logger: str, *texts: str) -> None:
    """The records logged by `logger` (a filter of its own: not those of the loggers below it) whose message contains
    one of `texts`: to the run's log file only, as if logged with FILE_ONLY."""
    lines = logging.getLogger(logger)
    if not any(isinstance(f, _Lines) and f.texts == texts for f in lines.filters):  # set_up runs once per run
        lines.addFilter(_Lines(texts))


def library_warning(record: logging.LogRecord) -> bool:
    """A warning of a library (Lightning, torch, Optuna, matplotlib; through `warnings` or its logger), not of
    dlopt: the log file keeps it, the terminal does not show it. dlopt's own warnings and every error do show."""
    return record.levelno == logging.WARNING and not (record.name == "dlopt" or record.name.startswith("dlopt."))


class _FileOnly(logging.Filter):
    """Keeps the records marked FILE_ONLY, and a library's warnings, to the run's log file: off the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False) and not library_warning(record)


def terminal_skips_file_only() -> None:
    """Put _FileOnly on the root logger's console handlers (plain StreamHandlers: Hydra's console; not its file
    handler, nor a test's capture handler)."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not any(isinstance(f, _FileOnly) for f in handler.filters):
            handler.addFilter(_FileOnly())


def library_warnings_off_console() -> None:
    """For a process with no log file of its own that runs code of libraries between runs (a search's sweeper, in
    Hydra's driver process): a library's warnings (through the warnings module, and Optuna's logger, whose own stderr
    handler is taken off so that its lines come to the root logger) kept off the root logger's console handlers as
    `set_up` keeps them off a run's; a run in this process writes them to its log file. Hydra puts its console handler
    back after each launch: call again then."""
    logging.captureWarnings(True)
    through_root("optuna")
    terminal_skips_file_only()


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
