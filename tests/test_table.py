"""Tests of data=csv (dlopt.data.table) on real CSV files written to tmp_path: no mocks.

Unit tests call `csv(...)` directly; a few end-to-end tests run the installed `dlopt train`.
"""

from __future__ import annotations

import csv as csvlib
import math
import re

import pytest
import torch

from dlopt.data.table import csv
from dlopt.errors import UserError


def write(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csvlib.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def learnable(path, n_per_class=12, classes=("cat", "dog", "owl"), color=False):
    """Two numeric features that encode the class (a = 10 * class index + a small offset), optionally a
    text column, and the class name in `label`."""
    rows = []
    for i in range(n_per_class):
        for k, name in enumerate(classes):
            row = [10 * k + i / 100, i]
            if color:
                row.append(("red", "green", "blue")[i % 3])
            rows.append([*row, name])
    return write(path, ["a", "b", *(["color"] if color else []), "label"], rows)


def sizes(dm):
    return {split: len(y) for split, (_, y) in dm.splits.items()}


def fails(match, **kwargs) -> str:
    """csv(**kwargs) raises a one-line UserError matching `match`; returns the message."""
    with pytest.raises(UserError, match=match) as err:
        csv(**kwargs)
    assert "\n" not in str(err.value), str(err.value)
    return str(err.value)


# --- what a good file becomes -----------------------------------------------------------------------


def test_numeric_table_shapes_classes_and_stratified_splits(tmp_path):
    path = learnable(tmp_path / "t.csv", n_per_class=20)
    dm = csv(path=str(path), target="label", batch_size=8)
    assert dm.in_shape == (2,)
    assert dm.classes == ["cat", "dog", "owl"]
    assert sum(sizes(dm).values()) == 60
    assert sizes(dm) == {"train": 42, "val": 9, "test": 9}
    for split, (x, y) in dm.splits.items():
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert set(y.tolist()) == {0, 1, 2}, split
        assert torch.equal((x[:, 0] // 10).long(), y), f"{split}: features and labels are out of step"
    assert dm.batch_size == 8


def test_split_seed_decides_the_split(tmp_path):
    path = learnable(tmp_path / "t.csv")
    a, b, c = (csv(path=path, target="label", split_seed=s) for s in (1, 1, 2))
    assert torch.equal(a.splits["val"][0], b.splits["val"][0])
    assert not torch.equal(a.splits["val"][0], c.splits["val"][0])


def test_string_target_classes_are_sorted_names(tmp_path):
    path = learnable(tmp_path / "t.csv", classes=("zebra", "ant", "Moth"))
    dm = csv(path=path, target="label")
    assert dm.classes == ["Moth", "ant", "zebra"]
    x, y = dm.splits["train"]
    names = [("zebra", "ant", "Moth")[int(a // 10)] for a in x[:, 0].tolist()]
    assert [dm.classes[i] for i in y.tolist()] == names


def test_numeric_target_is_sorted_numerically_and_keeps_its_spelling(tmp_path):
    path = learnable(tmp_path / "t.csv", classes=("10", "2", "1"))
    dm = csv(path=path, target="label")
    assert dm.classes == ["1", "2", "10"]
    x, y = dm.splits["test"]
    assert [dm.classes[i] for i in y.tolist()] == [("10", "2", "1")[int(a // 10)] for a in x[:, 0].tolist()]


def test_the_target_may_be_any_column_and_cells_are_stripped(tmp_path):
    path = tmp_path / "t.csv"
    rows = "\n".join(f" {k} , {i}.5 ,{i % 2}" for k in (0, 1) for i in range(10))
    path.write_text(f"kind, x ,y\n{rows}\n\n")  # spaces around cells, a trailing blank line
    dm = csv(path=path, target="kind", val_fraction=0.2, test_fraction=0.2)
    assert dm.classes == ["0", "1"] and dm.in_shape == (2,)
    assert sum(sizes(dm).values()) == 20


def test_categorical_columns_are_one_hot_in_place(tmp_path):
    path = tmp_path / "t.csv"
    rows = [[i, ("red", "blue", "Green")[i % 3], "New York, NY" if i % 2 else "Paris", i * 2, ("no", "yes")[i % 2]]
            for i in range(20)]
    write(path, ["n", "color", "city", "m", "label"], rows)
    dm = csv(path=path, target="label", categorical=["color", "city"], val_fraction=0.2, test_fraction=0.2)
    # n, color=Green, color=blue, color=red, city=New York, NY, city=Paris, m
    assert dm.in_shape == (7,)
    x = torch.cat([dm.splits[s][0] for s in ("train", "val", "test")])
    for row in x.tolist():
        i = int(row[0])
        color = [0.0, 0.0, 0.0]
        color[["Green", "blue", "red"].index(("red", "blue", "Green")[i % 3])] = 1.0
        city = [1.0, 0.0] if i % 2 else [0.0, 1.0]
        assert row == [i, *color, *city, 2 * i]
    assert sorted(int(r[0]) for r in x.tolist()) == list(range(20))


def test_a_single_categorical_name_and_numeric_codes(tmp_path):
    path = write(tmp_path / "t.csv", ["zip", "label"], [[(10, 2, 7)[i % 3], i % 2] for i in range(24)])
    dm = csv(path=path, target="label", categorical="zip")
    assert dm.in_shape == (3,)  # zip=2, zip=7, zip=10
    x, _ = dm.splits["train"]
    assert set(map(tuple, x.tolist())) == {(1, 0, 0), (0, 1, 0), (0, 0, 1)}


def test_path_expands_home_and_is_relative_to_the_current_folder(tmp_path, monkeypatch):
    learnable(tmp_path / "t.csv")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert csv(path="~/t.csv", target="label").num_classes == 3
    monkeypatch.chdir(tmp_path)
    assert csv(path="t.csv", target="label").num_classes == 3


def test_loader_keys_reach_the_datamodule(tmp_path):
    path = learnable(tmp_path / "t.csv", n_per_class=20)
    dm = csv(path=path, target="label", classes=["dog", "owl"], fraction=0.5, class_weights="balanced",
             normalize="minmax")
    assert dm.classes == ["dog", "owl"]
    assert sizes(dm)["train"] == 14 and set(dm.splits["test"][1].tolist()) == {0, 1}
    assert dm.class_weights is not None
    assert torch.allclose(dm.scale, dm.splits["train"][0].amax(0) - dm.splits["train"][0].amin(0))


# --- what a user can get wrong ------------------------------------------------------------------------


def test_path_missing(tmp_path):
    fails(r"^data=csv needs data.path=FILE and data.target=COLUMN")
    fails(r"^data=csv needs data.path=FILE and data.target=COLUMN", target="label")


def test_path_is_not_a_file(tmp_path):
    missing = tmp_path / "nowhere.csv"
    fails(rf"data.path={missing}: {missing} does not exist", path=str(missing), target="label")
    fails(rf"data.path={tmp_path}: {tmp_path} is a folder; expected a CSV file", path=str(tmp_path), target="label")


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    fails(r"empty.csv is empty; expected a header row", path=empty, target="label")
    header = tmp_path / "header.csv"
    header.write_text("a,b,label\n")
    fails(r"header.csv has a header but no rows", path=header, target="label")


def test_a_row_with_the_wrong_number_of_cells_is_named_by_row_and_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,x\n\n3,4,y\n5,y\n6,7,x\n")  # the blank line is skipped but counted
    fails(r"row 3 \(line 5 of t.csv\) has 2 cells but the header has 3 columns", path=path, target="label")


def test_target_missing_or_not_a_column_lists_the_columns(tmp_path):
    path = learnable(tmp_path / "t.csv")
    fails(r"^data=csv needs data.target=COLUMN, the column of t.csv .*; its columns are a, b, label$", path=path)
    msg = fails(r"^data.target=nope is not a column of t.csv; its columns are a, b, label$", path=path, target="nope")
    assert "did you mean" not in msg
    fails(r"^data.target=lable is not a column of t.csv \(did you mean label\?\); its columns are a, b, label$",
          path=path, target="lable")


def test_text_in_a_feature_column_suggests_categorical(tmp_path):
    path = learnable(tmp_path / "t.csv", color=True)
    fails(r"column color has the text 'red' in row 1 \(line 2 of t.csv\), not a number; "
          r"one-hot encode the column with data.categorical=\[color\]", path=path, target="label")


def test_text_suggestion_keeps_the_categorical_columns_already_given(tmp_path):
    rows = [[("x", "y")[i % 2], i, "big" if i == 5 else i, i % 2] for i in range(12)]
    path = write(tmp_path / "t.csv", ["kind", "n", "size", "label"], rows)
    fails(r"column size has the text 'big' in row 6 \(line 7 of t.csv\).*data.categorical=\[kind,size\]",
          path=path, target="label", categorical=["kind"])


@pytest.mark.parametrize("value, what", [("", "an empty cell"), ("NA", "the missing value 'NA'"),
                                         ("nan", "the missing value 'nan'"), ("NULL", "the missing value 'NULL'"),
                                         ("None", "the missing value 'None'")])
@pytest.mark.parametrize("column", ["b", "label"])
def test_missing_values_name_the_column_and_row(tmp_path, value, what, column):
    rows = [[i, i, ("p", "q")[i % 2]] for i in range(12)]
    rows[6][["a", "b", "label"].index(column)] = value
    path = write(tmp_path / "t.csv", ["a", "b", "label"], rows)
    fails(rf"column {column} has {what} in row 7 \(line 8 of t.csv\); fill it in or delete that row",
          path=path, target="label")


def test_missing_value_in_a_categorical_column(tmp_path):
    path = learnable(tmp_path / "t.csv", color=True)
    text = path.read_text().splitlines()
    text[4] = text[4].replace("red", "n/a").replace("green", "NaN").replace("blue", "NaN")
    path.write_text("\n".join(text) + "\n")
    fails(r"column color has the missing value 'NaN' in row 4 \(line 5 of t.csv\)",
          path=path, target="label", categorical=["color"])


def test_infinite_feature(tmp_path):
    rows = [[i if i != 3 else "inf", i % 2] for i in range(12)]
    path = write(tmp_path / "t.csv", ["a", "label"], rows)
    fails(r"column a has 'inf' in row 4 \(line 5 of t.csv\); features must be finite numbers",
          path=path, target="label")


def test_bad_categorical_names(tmp_path):
    path = learnable(tmp_path / "t.csv", color=True)
    fails(r"^data.categorical: colour is not a column of t.csv \(did you mean color\?\); "
          r"its columns are a, b, color, label$", path=path, target="label", categorical=["colour"])
    fails(r"^data.categorical: label is data.target, the column of class labels; list only feature columns$",
          path=path, target="label", categorical=["color", "label"])


def test_one_class_only(tmp_path):
    path = write(tmp_path / "t.csv", ["a", "label"], [[i, "yes"] for i in range(10)])
    fails(r"data.target=label: every row of t.csv has the class 'yes'; a classifier needs at least 2 classes",
          path=path, target="label")


def test_too_few_rows_per_class_for_the_split(tmp_path):
    path = learnable(tmp_path / "t.csv", n_per_class=2)
    msg = fails(r"data=csv: a stratified split of 6 samples with data.test_fraction=0.15 is impossible",
                path=path, target="label")
    assert "add samples to every class" in msg


def test_duplicate_and_missing_feature_columns(tmp_path):
    path = write(tmp_path / "dup.csv", ["a", "a", "label"], [[1, 2, "x"]])
    fails(r"the column name 'a' appears twice in the header of dup.csv", path=path, target="label")
    path = write(tmp_path / "only.csv", ["label"], [["x"], ["y"]])
    fails(r"only.csv has no column besides data.target=label", path=path, target="label")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("a,label\n1,caf\xe9\n".encode("latin-1"))
    fails(r"latin1.csv is not UTF-8 text .*save it as a UTF-8 CSV file", path=path, target="label")


# --- end to end: the real `dlopt train` ---------------------------------------------------------------


def iris_csv(path, color=False):
    """scikit-learn's iris (150 rows, 4 features) with the species name in `label`, optionally a `color` text column."""
    from sklearn.datasets import load_iris

    data = load_iris()
    rows = [[*x, *([("red", "green", "blue")[i % 3]] if color else []), data.target_names[t]]
            for i, (x, t) in enumerate(zip(data.data.tolist(), data.target))]
    return write(path, [*data.feature_names, *(["color"] if color else []), "label"], rows)


def test_train_on_a_csv_file(cli, tmp_path):
    path = iris_csv(tmp_path / "iris.csv")
    run = cli.train("data=csv", f"data.path={path}", "data.target=label", "model=mlp", cwd=tmp_path)
    metrics = cli.metrics(run)
    cli.assert_finite(metrics)
    assert math.isfinite(metrics["test/acc"])
    assert cli.config(run)["data"]["target"] == "label"


def test_train_with_a_categorical_column_relative_path(cli, tmp_path):
    iris_csv(tmp_path / "iris.csv", color=True)
    run = cli.train("data=csv", "data.path=iris.csv", "data.target=label", "data.categorical=[color]", "model=mlp",
                    cwd=tmp_path)
    metrics = cli.metrics(run)
    cli.assert_finite(metrics)
    assert math.isfinite(metrics["test/acc"])


def test_a_target_that_is_not_a_column_fails_in_one_line(in_process, tmp_path):
    path = iris_csv(tmp_path / "iris.csv")
    result = in_process.run("train", *in_process.TINY, "data=csv", f"data.path={path}", "data.target=nope", "model=mlp",
                     cwd=tmp_path)
    assert result.returncode == 2, result.describe()
    assert "Traceback" not in result.output, result.describe()
    lines = [line for line in result.output.splitlines() if "data.target=nope" in line]
    assert len(lines) == 1, result.describe()
    assert re.search(r"is not a column of iris.csv.*its columns are .*petal width \(cm\), label", lines[0]), lines[0]
    assert in_process.run_dirs(tmp_path) == []
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "iris.csv"] == [], "files left behind"
