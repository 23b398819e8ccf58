"""fileio (issue 23): the atomic write every layer uses; a planted *.tmp link is replaced, never written through."""

import errno
import os

import pytest

from cycleseg.errors import DataError, RunError
from cycleseg.fileio import atomic_file, atomic_write


def test_atomic_write_bytes_text_and_writer(tmp_path):
    path = tmp_path / "f"
    atomic_write(path, "text")
    assert path.read_text() == "text"
    atomic_write(path, b"bytes")
    assert path.read_bytes() == b"bytes"
    atomic_write(path, lambda f: f.write(b"streamed"))
    assert path.read_bytes() == b"streamed" and not (tmp_path / "f.tmp").exists()


def test_a_planted_tmp_link_is_not_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("the user's file")
    (tmp_path / "f.tmp").symlink_to(victim)
    atomic_write(tmp_path / "f", "new")
    assert victim.read_text() == "the user's file" and (tmp_path / "f").read_text() == "new"
    assert not (tmp_path / "f.tmp").exists()


@pytest.mark.parametrize(("code", "cause"), [
    (errno.ENOSPC, "the disk (or quota) of {dir} is full: free space there"),
    (errno.EACCES, "no permission to write in {dir}"),
    (errno.ENOENT, "{dir} or the temporary file was removed while writing (by another process?)"),
    (errno.EIO, "check the folder and the disk"),
])
@pytest.mark.parametrize("error", [RunError, DataError])
def test_a_failed_write_names_its_cause_in_the_callers_error(tmp_path, monkeypatch, code, cause, error):
    path = tmp_path / "f"
    path.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(error) as e:
        atomic_write(path, b"new", **({} if error is RunError else {"error": error}))
    message = str(e.value)
    assert message.startswith(f"{path}: could not write ({os.strerror(code)}); {cause.format(dir=tmp_path)}"), message
    assert message.endswith("the previous file is intact") and path.read_bytes() == b"old"
    assert not (tmp_path / "f.tmp").exists()


def test_an_error_inside_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"old")
    with pytest.raises(ValueError), atomic_file(path) as f:
        f.write(b"half")
        raise ValueError("a reader failed mid-way")
    assert path.read_bytes() == b"old" and not (tmp_path / "f.tmp").exists()
