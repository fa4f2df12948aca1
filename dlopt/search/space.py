"""The search space: Hydra sweep overrides (`choice`, `range`, `interval`, `tag(log, ...)`, `a,b,c`)
as Optuna distributions, with the grammar of Hydra's Optuna sweeper except that `range` excludes its
stop, as Hydra's `range` does everywhere else.

    optimizer=choice(sgd,adam)  or  optimizer=sgd,adam     CategoricalDistribution
    model.depth=range(2,8)                                  IntDistribution(2, 7)
    optimizer.lr=tag(log,interval(1e-4,1e-1))               FloatDistribution(1e-4, 0.1, log=True)
    model.width=tag(int,interval(16,128))                   IntDistribution(16, 128)
    seed=3                                                  fixed: the same in every trial
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from dlopt.errors import UserError


def _primitive(value: Any) -> Any:
    """Optuna's categorical choices are None, bool, int, float or str; anything else goes as Hydra text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else Transformer.encode(value)


def _range_values(key: str, sweep: RangeSweep) -> list[float]:
    if sweep.step == 0 or (sweep.stop - sweep.start) * sweep.step <= 0:
        raise UserError(f"{key}=range({sweep.start},{sweep.stop},{sweep.step}) is empty: range(start, stop, step) "
                        "counts from start up to, not including, stop")
    count = math.ceil((sweep.stop - sweep.start) / sweep.step - 1e-9)
    values = [sweep.start + i * sweep.step for i in range(count)]
    return values if all(isinstance(v, int) for v in values) else [round(v, 12) for v in values]


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override; a one-line UserError for an empty or inverted one."""
    key, sweep = override.get_key_element(), override.value()
    tags = getattr(sweep, "tags", set()) or set()
    if isinstance(sweep, ChoiceSweep):
        choices = list(dict.fromkeys(_primitive(v) for v in sweep.list))
        if not choices:
            raise UserError(f"{key}=choice() is empty: give at least one value")
        return CategoricalDistribution(choices)
    if isinstance(sweep, RangeSweep):
        values = _range_values(key, sweep)
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=sweep.step, log="log" in tags and sweep.step == 1)
        return FloatDistribution(values[0], values[-1], step=sweep.step if len(values) > 1 else None)
    if isinstance(sweep, IntervalSweep):
        low, high = sweep.start, sweep.end
        if low >= high:
            raise UserError(f"{key}=interval({low:g},{high:g}) needs low < high")
        if "log" in tags and low <= 0:
            raise UserError(f"{key}=tag(log,interval({low:g},{high:g})) needs low > 0: a log scale has no 0 or "
                            "negative values")
        if "int" in tags:
            return IntDistribution(math.ceil(low), math.floor(high), log="log" in tags)
        return FloatDistribution(low, high, log="log" in tags)
    raise UserError(f"{override.input_line}: this sweep is not supported; use choice(...), a,b,c, range(...) or "
                    "interval(...)")


def parse(overrides: Iterable[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """The space (key -> distribution) and the fixed overrides (key -> `key=value`) of the overrides;
    a later override of a key replaces an earlier one (the command line replaces the declared space)."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = f"{key}={override.get_value_element_as_str()}"
    return space, fixed


def grid(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """Every value of each parameter, for Optuna's GridSampler; an interval has no such list."""
    values = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            values[key] = list(dist.choices)
        elif dist.step is not None and not (isinstance(dist, IntDistribution) and dist.log):
            count = round((dist.high - dist.low) / dist.step) + 1
            values[key] = [dist.low + i * dist.step for i in range(count)]
            if isinstance(dist, FloatDistribution):
                values[key] = [round(v, 12) for v in values[key]]
        else:
            raise UserError(f"search=grid needs a list of values for {key}, not an interval: give choice(...), "
                            "a,b,c or range(...), or use search=random or search=bayes")
    return values


def override(key: str, value: Any) -> str:
    """`key=value` as Hydra parses it back to value."""
    return f"{key}={Transformer.encode(value) if isinstance(value, str) else value}"
