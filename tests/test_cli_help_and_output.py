"""What a new user meets first (issue 16, items 5 and 8): `dlopt --version`; `--help` that names each group's
default, and that of eval lists no train groups; `dlopt eval` saying where it wrote; a run's errors on stderr."""

from __future__ import annotations

from importlib.metadata import version


def test_version(cli, tmp_path):
    result = cli.ok("--version", cwd=tmp_path)
    assert result.stdout.strip() == f"dlopt {version('dlopt')}"


def test_train_help_names_each_groups_default(cli, tmp_path):
    result = cli.ok("train", "--help", cwd=tmp_path)
    line = next(line for line in result.stdout.splitlines() if line.startswith("Defaults (what runs without"))
    for default in ("data=digits", "model=cnn", "optimizer=adam", "scheduler=cosine", "search=(none)"):
        assert default in line, line
    changed = cli.ok("train", "--help", "model=mlp", cwd=tmp_path)
    assert "model=mlp" in next(line for line in changed.stdout.splitlines() if line.startswith("Defaults"))


def test_eval_help_is_evals_own(cli, tmp_path):
    result = cli.ok("eval", "--help", cwd=tmp_path)
    assert "== Configuration groups ==" not in result.stdout and "model: cnn" not in result.stdout
    assert "dlopt eval run=" in result.stdout and "dlopt train model=" not in result.stdout


def test_a_runs_error_goes_to_stderr_not_stdout(in_process, tmp_path):
    result = in_process.run("train", *in_process.TINY, "optimizer.lr=-1", cwd=tmp_path)
    assert result.returncode == 2
    assert "optimizer.lr=-1 is not valid" in result.stderr and "optimizer.lr" not in result.stdout, result.describe()


def test_eval_says_where_it_wrote(cli, tmp_path):
    run = cli.train("diagnostics=none", cwd=tmp_path)
    result = cli.ok("eval", f"run={run}", cwd=tmp_path)
    (out,) = cli.run_dirs(tmp_path, "eval")
    assert result.stdout.splitlines()[-1].endswith(f"results in {out.resolve()}"), result.describe()
    assert (out / "metrics.json").is_file()
