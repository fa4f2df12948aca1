"""The `threads` knob (issue 16, item 1): one torch thread per process by default, OMP_NUM_THREADS respected,
threads=N obeyed, the choice logged and kept in metrics.json; a bad value refused before torch is imported."""

from __future__ import annotations

import json

import pytest


def threads_of(run):
    return json.loads((run / "metrics.json").read_text())["threads"]


@pytest.mark.parametrize("overrides, env, threads, why", [
    ((), {"OMP_NUM_THREADS": None, "MKL_NUM_THREADS": None}, 1, "threads=auto: one per process"),
    ((), {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": None}, 2, "threads=auto follows OMP_NUM_THREADS=2"),
    (("threads=2",), {"OMP_NUM_THREADS": None, "MKL_NUM_THREADS": None}, 2, "threads=2"),
    (("threads=1",), {"OMP_NUM_THREADS": "2"}, 1, "threads=1"),
])
def test_the_thread_count_is_chosen_logged_and_recorded(cli, tmp_path, overrides, env, threads, why):
    result = cli.run("train", *cli.TINY, "diagnostics=none", *overrides, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.describe()
    (run,) = cli.run_dirs(tmp_path)
    assert f"torch computes with {threads} thread{'s' if threads > 1 else ''} ({why}" in (run / "train.log").read_text(), \
        result.describe()
    assert threads_of(run) == threads


@pytest.mark.parametrize("command", ["train", "tune-lr", "eval", "explain"])
@pytest.mark.parametrize("value", ["0", "many", "1.5", "true"])
def test_a_bad_thread_count_is_one_line_before_torch(cli, tmp_path, command, value):
    result, imported = cli.imported(command, f"threads={value}", *(["run=nowhere"] if command in (
        "eval", "explain") else []), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.output, result.describe()
    lines = [line for line in result.stderr.splitlines() if f"threads={value.replace('true', 'True')} is not valid"
             in line]
    assert len(lines) == 1 and "auto" in lines[0], result.describe()
    assert "torch" not in imported
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("metrics.json"))
