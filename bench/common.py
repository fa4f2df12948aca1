"""Shared by the bench scripts: compose dlopt's config without the CLI, and time things."""

from __future__ import annotations

import logging
import statistics
import time

from hydra import compose, initialize_config_dir

from dlopt.apps import config_dir

for name in ("lightning", "lightning.pytorch"):  # the figures, not Lightning's chatter
    logging.getLogger(name).setLevel(logging.WARNING)


def config(*overrides: str):
    """The composed `dlopt train` config with these overrides, as the CLI would build it."""
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose("train", overrides=list(overrides))


def median(values) -> float:
    return statistics.median(values)


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
