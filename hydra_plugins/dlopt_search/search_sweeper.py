"""Hydra finds sweepers only under hydra_plugins/: this shim hands the work to dlopt.search.sweeper."""

from typing import Any, List

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class SearchSweeper(Sweeper):
    """`search=grid|random|bayes|genetic`: an Optuna study (see dlopt/search/sweeper.py)."""

    def __init__(self) -> None:
        from dlopt.search.sweeper import Search  # optuna is imported only when a search runs

        self.search = Search()

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self.search.sweep(arguments)
