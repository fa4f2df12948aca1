"""One error style for every user error (issue 28): `dlopt COMMAND: message` on stderr, one line, whether found before
or after torch, with no log prefix and no INFO line before it; mistakes that the config and the file system show are
told before torch is imported; plain `dlopt` exits 2 with the command list; each command's --help names only the
flags that mean something for it; every command that writes ends with `results in FOLDER`."""

from __future__ import annotations

import os
import zipfile

import pytest

from dlopt.checks.training import GPU_DRIVER_FILES


def one_line(result, command: str, *parts: str) -> str:
    assert result.returncode == 2 and "Traceback" not in result.output, result.describe()
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"dlopt {command}: "), result.describe()
    for part in parts:
        assert part in lines[0], lines[0]
    assert "[" not in lines[0].partition(": ")[0] and "INFO" not in result.stdout, result.describe()
    return lines[0]


def nothing_written(cwd) -> None:
    outputs = cwd / "outputs"
    assert not outputs.exists() or not any(outputs.rglob("*.*")), sorted(map(str, outputs.rglob("*")))


def test_plain_dlopt_exits_2_with_the_commands(in_process, tmp_path):
    result = in_process.run(cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "", result.describe()
    assert result.stderr.startswith("dlopt: give a command; choose one of train, eval, doctor, explain, ensemble, runs, "
                                    "tune-lr")
    assert "commands:" in result.stderr and "examples:" in result.stderr
    assert in_process.run("--help", cwd=tmp_path).returncode == 0


def test_an_error_inside_a_run_has_the_style_of_a_composition_error(in_process, tmp_path):
    inside = one_line(in_process.run("train", "optimizer.lr=abc", cwd=tmp_path), "train")
    composing = one_line(in_process.run("train", "model=resnot", cwd=tmp_path), "train")
    assert inside == "dlopt train: optimizer.lr=abc is not valid: expected a number > 0"
    assert composing.startswith("dlopt train: model=resnot is not an option of model (did you mean resnet?)")
    nothing_written(tmp_path)


def test_an_error_found_after_torch_has_no_info_line_before_it(cli, tmp_path):
    result = cli.run("train", *cli.TINY, "data.classes=[0,12]", cwd=tmp_path)
    one_line(result, "train", "data.classes: 12 is not a class of data=digits")
    assert result.stdout == "", result.describe()  # no 'torch computes with', 'GPU available', 'TPU available'
    nothing_written(tmp_path)


@pytest.fixture
def text_file(tmp_path):
    file = tmp_path / "notes.md"
    file.write_text("# not a checkpoint\n")
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,x\n3,,y\n")  # a missing cell in row 2
    return file


@pytest.mark.parametrize("args, parts", [
    (("train", "data=csv"), ("data=csv needs data.path=FILE and data.target=COLUMN",)),
    (("train", "data=csv", "data.path=missing.csv", "data.target=y"), ("data.path=missing.csv", "does not exist")),
    (("train", "data=image_folder"), ("data=image_folder needs data.root=PATH",)),
    (("train", "data=image_folder", "data.root=pics"), ("pics does not exist or is not a folder",)),
    (("eval", "ckpt_path={text}"), ("ckpt_path={text} is not a file torch.load can read",)),
    (("train", "transfer.from={text}"), ("transfer.from={text} is not a file torch.load can read",)),
    (("train", "trainer.accelerator=gpu"), ("trainer.accelerator=gpu: this machine has no gpu device",)),
    (("train", "data=csv", "data.path=t.csv"), ("data=csv needs data.target=COLUMN", "its columns are a, b, y")),
    (("train", "data=csv", "data.path=t.csv", "data.target=y"), ("column b has an empty cell in row 2 (line 3",)),
    (("train", "data=csv", "data.path=t.csv", "data.target=z"), ("data.target=z is not a column of t.csv",)),
], ids=lambda v: " ".join(v)[:50] if isinstance(v, tuple) else "")
def test_a_mistake_in_the_config_or_the_files_is_told_before_torch(cli, tmp_path, text_file, args, parts):
    if "accelerator" in " ".join(args) and any(map(os.path.exists, GPU_DRIVER_FILES)):
        pytest.skip("this machine has a GPU driver")
    result, imported = cli.imported(*(a.format(text=text_file) for a in args), cwd=tmp_path)
    one_line(result, args[0], *(p.format(text=text_file) for p in parts))
    assert "torch" not in imported and "lightning" not in imported
    nothing_written(tmp_path)


def test_a_zip_or_pickle_that_is_no_checkpoint_is_still_told_by_torch(cli, tmp_path):
    archive = tmp_path / "some.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.txt", "not torch")
    result = cli.run("eval", f"ckpt_path={archive}", cwd=tmp_path)
    one_line(result, "eval", f"ckpt_path={archive} is not a file torch.load can read")


@pytest.mark.parametrize("override, meant", [
    ("optimizer=sgd,adam", "add -m to run one per value (a sweep), or give one value"),
    ("optimizer.lr=0.1,0.2", "add -m to run one per value (a sweep), or give one value, or write a list as "
                             "optimizer.lr=[0.1,0.2]"),
])
def test_a_comma_list_without_m_is_one_line_naming_the_fixes(in_process, tmp_path, override, meant):
    line = one_line(in_process.run("train", override, cwd=tmp_path), "train")
    assert line == f"dlopt train: {override} gives several values: {meant}"
    assert "\\'" not in line


@pytest.mark.parametrize("args, meant", [
    (("eval", "outputs/train/2026-12-05/10-00-00"), "did you mean run=outputs/train/2026-12-05/10-00-00?"),
    (("train", "--optimizer=sgd"), "an override is written without dashes: optimizer=sgd"),
    (("train", "--epochs", "3"), "an override is written without dashes: epochs=3"),
    (("train", "resnet"), "did you mean model=resnet?"),
])
def test_a_slip_is_answered_with_the_fix(in_process, tmp_path, args, meant):
    one_line(in_process.run(*args, cwd=tmp_path), args[0], meant)


@pytest.mark.parametrize("command, flags, absent", [
    ("train", ("--cfg job", "-m", "--config-dir"), ()),
    ("tune-lr", ("--cfg job", "-m", "--config-dir"), ()),
    ("eval", ("--cfg job", "-m run=A,B"), ("--config-dir", "--hydra-help")),
    ("explain", ("--cfg job",), ("-m", "--config-dir")),
    ("doctor", ("--cfg job",), ("-m", "--config-dir")),
    ("runs", ("--cfg job",), ("-m", "--config-dir")),
    ("ensemble", ("--cfg job", "--config-dir"), ("-m", "--hydra-help")),
])
def test_each_commands_help_names_the_flags_that_apply_to_it(in_process, tmp_path, command, flags, absent):
    result = in_process.run(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    footer = result.stdout.strip().splitlines()[-2:]
    text = " ".join(footer)
    for flag in flags:
        assert flag in text, footer
    for flag in absent:
        assert f"{flag} " not in text and f"{flag}," not in text and f"{flag})" not in text, footer


def test_explain_ends_with_its_folder_in_the_same_words(cli, tmp_path):
    run = cli.train("diagnostics=none", cwd=tmp_path)
    result = cli.ok("explain", f"run={run}", "method=saliency", cwd=tmp_path)
    (folder,) = cli.run_dirs(tmp_path, "explain")
    assert result.stdout.splitlines()[-1].endswith(f"][dlopt][INFO] - results in {folder.resolve()}"), \
        result.describe()


@pytest.mark.parametrize("command", ["train", "tune-lr"])
def test_a_sweep_ends_with_its_folder_in_the_same_words(cli, tmp_path, command):
    result = cli.ok(command, "-m", "seed=1,2", *cli.TINY, cwd=tmp_path)
    (sweep,) = cli.sweep_dirs(tmp_path, command.replace("-", "_"))
    assert result.stdout.splitlines()[-1].endswith(f"][HYDRA] results in {sweep.resolve()}"), result.describe()
