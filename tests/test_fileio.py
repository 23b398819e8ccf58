"""fileio (issues 23, 35): the atomic write every layer uses; a planted *.tmp link is replaced, never written through;
a link, FIFO or folder where cycleseg writes a file is refused with one line, and readers never open a FIFO."""

import errno
import os
import re

import pytest

from blocking import answered_within
from cycleseg.errors import DataError, RunError
from cycleseg.fileio import (
    atomic_file,
    atomic_write,
    free_space,
    make_folder,
    open_for_writing,
    read_text,
    require_file,
)


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
    (errno.ENOSPC, "the disk (or quota) of {dir} is full ({free} free, too little for this file): free space there"),
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
    free = "(?P<free>[0-9.]+ (bytes|kB|MB|GB|TB))"  # measured when the write failed: other processes change it
    expected = re.escape(f"{path}: could not write ({os.strerror(code)}); {cause.format(dir=tmp_path, free='@')}")
    match = re.match(expected.replace("@", free), message)
    assert match, message
    if code == errno.ENOSPC:
        assert match["free"].split()[1] == free_space(tmp_path).split()[1]
    assert message.endswith("the previous file is intact") and path.read_bytes() == b"old"
    assert not (tmp_path / "f.tmp").exists()


def test_an_error_inside_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"old")
    with pytest.raises(ValueError), atomic_file(path) as f:
        f.write(b"half")
        raise ValueError("a reader failed mid-way")
    assert path.read_bytes() == b"old" and not (tmp_path / "f.tmp").exists()


# ------------------------------------------------------------------ issue 35: links, FIFOs and folders refused

def _plant(tmp_path, kind):
    """`tmp_path/run/f` as a link to a file of the test's own folder, a dangling link, a FIFO or a folder;
    returns (path, the link's target or None)."""
    run = tmp_path / "run"
    run.mkdir()
    path, target = run / "f", tmp_path / "outside" / "target"
    target.parent.mkdir()
    if kind == "link":
        target.write_bytes(b"the user's file\n")
        path.symlink_to(target)
    elif kind == "dangling link":
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    return path, target


PLANTS = ["link", "dangling link", "fifo", "folder"]
WHAT = {"link": "a symbolic link", "dangling link": "a symbolic link", "fifo": "a FIFO", "folder": "a folder"}


def _outside(target):
    """What the folder outside the run holds afterwards: name -> bytes."""
    return {p.name: p.read_bytes() for p in target.parent.iterdir()}


@pytest.mark.parametrize("kind", PLANTS)
def test_atomic_write_refuses_what_stands_at_the_path_and_writes_nothing(tmp_path, kind):
    path, target = _plant(tmp_path, kind)
    before = _outside(target)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: is {WHAT[kind]}.*remove it"):
        answered_within(lambda: atomic_write(path, b"new", error=DataError))
    assert _outside(target) == before  # the link's target byte-identical, nothing created through a dangling one
    assert not (path.parent / "f.tmp").exists() and os.path.lexists(path)


@pytest.mark.parametrize("kind", ["link", "dangling link", "fifo"])
def test_a_planted_tmp_is_replaced_never_written_through_or_opened(tmp_path, kind):
    path, target = _plant(tmp_path, kind)
    tmp = path.parent / "f.tmp"
    os.replace(path, tmp)  # the plant stands at the temporary name instead
    before = _outside(target)
    answered_within(lambda: atomic_write(path, b"new"))
    assert path.read_bytes() == b"new" and not os.path.lexists(tmp) and _outside(target) == before


@pytest.mark.parametrize("kind", PLANTS)
def test_open_for_writing_refuses_before_opening(tmp_path, kind):
    path, target = _plant(tmp_path, kind)
    before = _outside(target)
    with pytest.raises(RunError, match=rf"^{re.escape(str(path))}: is {WHAT[kind]}"):
        answered_within(lambda: open_for_writing(path, os.O_RDWR | os.O_CREAT))
    assert _outside(target) == before


def test_open_for_writing_refuses_a_link_swapped_in_after_the_check(tmp_path, monkeypatch):
    path, target = _plant(tmp_path, "link")
    monkeypatch.setattr("cycleseg.fileio.require_file", lambda *a, **k: False)  # the lstat saw nothing there
    with pytest.raises(RunError, match="is a symbolic link"):
        open_for_writing(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    assert target.read_bytes() == b"the user's file\n"


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_readers_never_open_a_fifo(tmp_path, kind):
    path, _ = _plant(tmp_path, kind)
    with pytest.raises(RunError, match=rf"^{re.escape(str(path))}: is {WHAT[kind]}.*, not a regular file"):
        answered_within(lambda: read_text(path))
    with pytest.raises(RunError, match="not a regular file"):
        answered_within(lambda: require_file(path))


def test_readers_follow_a_link_to_a_regular_file(tmp_path):
    path, _ = _plant(tmp_path, "link")
    assert read_text(path) == "the user's file\n" and require_file(path)
    assert not require_file(tmp_path / "missing")


def test_make_folder_refuses_a_link_below_the_base_and_accepts_the_base_itself(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / "predictions_val").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(RunError, match=r"predictions_val: is a symbolic link where cycleseg makes a folder"):
        make_folder(run / "predictions_val" / "labelIds" / "city", run)
    assert list(elsewhere.iterdir()) == []
    (run / "predictions_val").unlink()
    assert make_folder(run / "predictions_val" / "labelIds", run).is_dir()
    linked_out = tmp_path / "out"
    linked_out.symlink_to(elsewhere, target_is_directory=True)  # the folder the user named may be a link
    assert make_folder(linked_out / "color", linked_out).is_dir() and (elsewhere / "color").is_dir()
