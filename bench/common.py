"""Shared by the bench scripts: compose dlopt's config without the CLI, and time things."""

from __future__ import annotations

import logging
import statistics
import time

import lightning.pytorch as L
from hydra import compose, initialize_config_dir

from dlopt.apps import config_dir
from dlopt.hydra_glue import register_resolvers

for name in ("lightning", "lightning.pytorch"):  # the figures, not Lightning's chatter
    logging.getLogger(name).setLevel(logging.WARNING)


def config(*overrides: str):
    """The composed `dlopt train` config with these overrides, as the CLI would build it."""
    register_resolvers()  # conf/ calls dlopt's resolvers by name
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose("train", overrides=list(overrides))


def median(values) -> float:
    return statistics.median(values)


class EpochTimer(L.Callback):
    """Seconds of every training epoch."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.times.append(time.perf_counter() - self.start)
