"""dlopt.atomic: a file replaced in one step keeps its previous content when the writer fails, leaves no temporary
file behind, and an OSError names the file being written, not its temporary."""

from __future__ import annotations

import errno

import pytest

from dlopt.atomic import replacing


def test_the_new_content_replaces_the_file_and_no_temporary_is_left(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old\n")
    (tmp_path / ".metrics.json.tmp").write_bytes(b"half of it")  # left by a killed process
    with replacing(path) as file:
        file.write(b"new\n")
    assert path.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_writer_that_fails_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="mid-write"):
        with replacing(path) as file:
            file.write(b"part")
            raise RuntimeError("mid-write")
    assert path.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_an_os_error_names_the_target(tmp_path):
    path = tmp_path / "missing" / "metrics.json"
    with pytest.raises(FileNotFoundError) as err:
        with replacing(path) as file:
            file.write(b"{}")
    assert err.value.filename == str(path) and err.value.errno == errno.ENOENT
    with pytest.raises(OSError) as err:  # a full disk: the write's error carries no file name
        with replacing(tmp_path / "predictions.npz"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.filename == str(tmp_path / "predictions.npz") and err.value.errno == errno.ENOSPC
    assert not list(tmp_path.iterdir())
