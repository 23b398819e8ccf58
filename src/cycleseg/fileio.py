"""Atomic file writes, for every layer: a crash, a full disk or a planted link never leaves half a file.

`atomic_file(path)` opens PATH.tmp for writing and, when the block ends without error, flushes, fsyncs, renames it
onto PATH and fsyncs the folder (so the rename itself survives a power cut); on any error the temporary file is
removed and the old PATH is left as it was. The temporary file is opened with O_NOFOLLOW after removing any link
already standing under its name: a shared folder (a run, a data cache) may bring `x.tmp -> ~/.bashrc`, and the
write must replace the link, never write through it.

`atomic_write(path, data)` writes bytes, text or a writer function's output that way and turns an OSError into a
one-line user error (RunError unless the caller names another) that says what to do about its cause (errno).
The run layer (`runs.atomic_write`) and the data cache (`data.cache`) both write through here.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cycleseg.errors import CycleSegError, RunError

__all__ = ["atomic_file", "atomic_write", "fsync_dir", "temporary_path", "write_fix"]


def temporary_path(path: str | Path) -> Path:
    """The temporary name PATH is written under: PATH.tmp in the same folder (a rename never crosses disks)."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write PATH's new content into; PATH is replaced only when the block ends without error.

    Raises the OSError itself (the caller words it: `atomic_write`); any error removes the temporary file."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        if tmp.is_symlink():  # a shared folder may bring one, pointing at a user's file: never write through it
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o666)
        with open(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: str | bytes | Callable[[BinaryIO], object],
                 error: type[CycleSegError] = RunError) -> None:
    """Write `data` to `path` through a temporary file, fsync and rename: a crash leaves the old file or the new.

    `data` may also be a function that writes into the open file (a checkpoint: no copy of it in memory).
    A failure (disk full, no permission, a file where a folder should be) is an `error` (RunError) naming the path.
    """
    path = Path(path)
    try:
        with atomic_file(path) as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
    except OSError as e:
        raise error(f"{path}: could not write ({e.strerror or e}); {write_fix(e, path)}, the previous file is "
                    "intact") from None


def write_fix(error: OSError, path: Path) -> str:
    """What to do about a failed write, by its cause (errno): a full disk and a missing folder need other fixes."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk (or quota) of {path.parent} is full: free space there"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission to write in {path.parent}: fix its permissions or choose another folder"
    if error.errno == errno.ENOENT:
        return (f"{path.parent} or the temporary file was removed while writing (by another process?): check that "
                "no other command works on this folder")
    return "check the folder and the disk"


def fsync_dir(directory: Path) -> None:
    """Make a rename itself durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
