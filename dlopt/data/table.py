"""A user's own table: one CSV file with a header row, one row per sample, one column of class labels.

Numeric columns become the features, `data.categorical` columns are one-hot encoded, and the
`data.target` column's distinct values become the classes. pandas would parse the file but is not
a dependency; the stdlib `csv` module and numpy suffice, and reading the rows here lets every
error name the column, the row and the file line a user has to fix. Reading imports no torch
(`read`), so dlopt.checks tells a mistake in the file before torch is imported.
"""

from __future__ import annotations

import csv as csvlib
import functools
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from typing_extensions import Unpack

from dlopt.data.knobs import Loader, data_path
from dlopt.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from dlopt.data.datamodule import InMemoryDataModule

log = logging.getLogger(__name__)

MISSING = ("", "na", "nan", "null", "none")  # compared lower-case, after stripping spaces


def _listed(columns: list[str]) -> str:
    shown = [c if c else '""' for c in columns[:30]]
    return ", ".join(shown) + (f", ... ({len(columns)} in all)" if len(columns) > 30 else "")


def _number_key(values) -> object:
    """Sort key: numerically when every value is a number ("2" < "10"), else as text."""
    try:
        numbers = {v: float(v) for v in values}
    except ValueError:
        return None
    return lambda v: (numbers[v], v)


def _read(path: str, shown: str) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, file line where each row starts); every cell stripped of surrounding spaces."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: the byte-order mark Excel writes
            reader = csvlib.reader(f)
            header, rows, lines, end = None, [], [], 0
            for record in reader:
                start, end = end + 1, reader.line_num
                if not record or not any(cell.strip() for cell in record):
                    continue  # blank line
                cells = [cell.strip() for cell in record]
                if header is None:
                    header = cells
                    continue
                rows.append(cells)
                lines.append(start)
    except UnicodeDecodeError as e:
        raise UserError(f"data.path={shown}: {path} is not UTF-8 text ({e.reason} at byte {e.start}); "
                        "save it as a UTF-8 CSV file") from e
    except csvlib.Error as e:
        raise UserError(f"data.path={shown}: {path} is not a readable CSV file (line {reader.line_num}: {e})") from e
    except OSError as e:
        raise UserError(f"data.path={shown}: cannot read {path} ({e.strerror or e})") from e
    if header is None:
        raise UserError(f"data.path={shown}: {path} is empty; expected a header row of column names, "
                        "then one row per sample")
    if not rows:
        raise UserError(f"data.path={shown}: {path} has a header but no rows; expected one row per sample "
                        "after the header")
    return header, rows, lines


def _where(row: int, lines: list[int], shown: str) -> str:
    return f"row {row + 1} (line {lines[row]} of {os.path.basename(shown)})"


def _missing(values: np.ndarray) -> np.ndarray:
    return np.isin(np.char.lower(values), MISSING)


def _numbers(values: np.ndarray, column: str, lines, shown: str, categorical: list[str]) -> np.ndarray:
    """The column as float64; a cell that is text or not finite is a UserError naming it."""
    try:
        numbers = values.astype(np.float64)
    except ValueError:  # find the cell that is text, to name it
        parsed = []
        for row, value in enumerate(values.tolist()):
            try:
                parsed.append(float(value))
            except ValueError:
                suggestion = ",".join([*categorical, column])
                raise UserError(
                    f"data.path={shown}: column {column} has the text '{value}' in {_where(row, lines, shown)}, "
                    f"not a number; one-hot encode the column with data.categorical=[{suggestion}]"
                ) from None
        numbers = np.array(parsed, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(numbers))
    if len(bad):
        row = int(bad[0])
        raise UserError(f"data.path={shown}: column {column} has '{values[row]}' in {_where(row, lines, shown)}; "
                        "features must be finite numbers")
    return numbers


@dataclass(frozen=True)
class Table:
    """A CSV file read and checked: features x (N, F) float32, labels y (N,) int64 indexing class_names; names: each
    feature column's name (a categorical column's one-hot columns as COLUMN=VALUE), columns: the file's column each
    came from."""

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    names: list[str]
    columns: list[str]


def csv(
    *, path=None, target=None, categorical=None, val_fraction=0.15, test_fraction=0.15, split_seed=0, cv=None,
    **loader: Unpack[Loader]
) -> InMemoryDataModule:
    """A CSV file's rows as (F,) float32 feature vectors, classified by the `target` column."""
    import torch

    from dlopt.data.sources import _module, stratified_split

    table, shown = read(path, target, categorical), str(path)
    x, y = torch.from_numpy(table.x), torch.from_numpy(table.y)
    log.info("data=csv: %s: %d rows, %d features (%s), %d classes (%s)", shown, len(y), len(table.names),
             _listed(table.names), len(table.class_names), _listed(table.class_names))
    splits = stratified_split(x, y, val_fraction, test_fraction, split_seed, name="csv", cv=cv)
    module = _module(splits, table.class_names, "csv", loader, split_seed)
    module.columns, module.feature_names = table.columns, table.names
    return module


def read(path: Any, target: Any, categorical: Any) -> Table:
    """data.path's table, checked against data.target and data.categorical: UserError (one line naming the column,
    the row and the file line) for the first mistake. Torch-free, so dlopt.checks reads it before torch is imported;
    the DataModule's build then finds it here again (the last file read is kept while the file is unchanged)."""
    file = data_path("dlopt.data.table.csv", path)
    listed = [categorical] if isinstance(categorical, (str, int, float)) else categorical  # a list, or one column
    stat = os.stat(file)
    return _table(file, str(path), stat.st_mtime_ns, stat.st_size, None if target is None else str(target),
                  None if listed is None else tuple(str(c) for c in listed))


@functools.lru_cache(maxsize=1)
def _table(file: str, shown: str, mtime_ns: int, size: int, target: str | None, categorical: tuple[str, ...] | None
           ) -> Table:
    header, rows, lines = _read(file, shown)
    name = os.path.basename(shown)

    seen = set()
    for column in header:
        if column in seen:
            raise UserError(f"data.path={shown}: the column name '{column}' appears twice in the header of {name}; "
                            "give every column its own name")
        seen.add(column)
    for row, cells in enumerate(rows):
        if len(cells) != len(header):
            raise UserError(f"data.path={shown}: {_where(row, lines, shown)} has {len(cells)} cells but the header "
                            f"has {len(header)} columns; every row needs one cell per column")

    if target is None:
        raise UserError(f"data=csv needs data.target=COLUMN, the column of {name} that holds the class labels; "
                        f"its columns are {_listed(header)}")
    target = str(target)
    if target not in header:
        raise UserError(f"data.target={target} is not a column of {name}{did_you_mean(target, header)}; "
                        f"its columns are {_listed(header)}")
    categorical = list(categorical or ())
    for column in categorical:
        if column not in header:
            raise UserError(f"data.categorical: {column} is not a column of {name}{did_you_mean(column, header)}; "
                            f"its columns are {_listed(header)}")
        if column == target:
            raise UserError(f"data.categorical: {column} is data.target, the column of class labels; "
                            "list only feature columns")
    features = [c for c in header if c != target]
    if not features:
        raise UserError(f"data.path={shown}: {name} has no column besides data.target={target}; "
                        "expected at least one feature column")

    table = np.array(rows, dtype=str)
    for i, column in enumerate(header):
        empty = np.flatnonzero(_missing(table[:, i]))
        if len(empty):
            row = int(empty[0])
            value = table[row, i]
            what = "an empty cell" if value == "" else f"the missing value '{value}'"
            raise UserError(f"data.path={shown}: column {column} has {what} in {_where(row, lines, shown)}; "
                            "fill it in or delete that row")

    labels = table[:, header.index(target)]
    class_names = sorted(set(labels.tolist()), key=_number_key(set(labels.tolist())))
    if len(class_names) < 2:
        raise UserError(f"data.target={target}: every row of {name} has the class '{class_names[0]}'; "
                        "a classifier needs at least 2 classes in that column")

    blocks, names, columns = [], [], []
    for column in features:
        values = table[:, header.index(column)]
        if column in categorical:
            categories = sorted(set(values.tolist()), key=_number_key(set(values.tolist())))
            blocks.append(values[:, None] == np.array(categories, dtype=str)[None, :])
            names += [f"{column}={c}" for c in categories]
            columns += [column] * len(categories)
        else:
            blocks.append(_numbers(values, column, lines, shown, categorical)[:, None])
            names.append(column)
            columns.append(column)
    index = {c: i for i, c in enumerate(class_names)}
    return Table(np.concatenate(blocks, axis=1).astype(np.float32),
                 np.array([index[v] for v in labels.tolist()], dtype=np.int64), class_names, names, columns)
