"""Safe file access for every layer: a crash, a full disk, a planted link or a FIFO never leaves half a file,
never writes outside the folder, and never blocks.

A run folder, a sweep folder or a data cache may come from someone else, and may hold a symbolic link where
cycleseg writes a file (`RUN/.lock -> ~/.bashrc`), a FIFO (opening it would block), a device or a folder. Every
file cycleseg creates or rewrites in such a folder is opened here, by one rule (`open_for_writing`): the name is
checked with lstat before (a link, FIFO, device, socket or folder is refused with one line naming it: remove it),
opened with O_NOFOLLOW (a link swapped in meanwhile fails instead of being followed, and nothing is ever created
through a dangling link) and O_NONBLOCK (a FIFO swapped in meanwhile cannot block), and checked with fstat after
(a regular file, or it is closed untouched). Readers (`read_bytes`, `read_text`, `require_file`) never open a
FIFO or device either: its type is checked before opening, and again on the open descriptor.

- `atomic_file(path)` / `atomic_write(path, data)`: PATH.tmp is created anew (O_EXCL, after removing whatever
  non-folder stands under that name: it is cycleseg's own scratch name), written, flushed, fsynced and renamed
  onto PATH; the folder is fsynced so that the rename survives a power cut. On any error the temporary file is
  removed and the old PATH is left as it was. `atomic_write` turns an OSError into a one-line user error (RunError
  unless the caller names another) that says what to do about its cause (errno); a full disk names the free space.
- `open_for_writing(path, flags)`: the descriptor of a file written in place (a lock, an appended log).
- `make_folder(folder, within)`: a folder created (with its parents) or found, refused when it, or any folder
  between `within` and it, is a link or not a folder (a linked `RUN/predictions_val/` would send the output
  elsewhere).
The run layer (`runs.atomic_write`), the data cache (`data.cache`) and every command write through here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cycleseg.errors import CycleSegError, RunError

__all__ = ["atomic_file", "atomic_write", "free_space", "fsync_dir", "make_folder", "not_a_file", "open_for_writing",
           "read_bytes", "read_text", "require_file", "temporary_path", "write_fix"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# what an open with O_NOFOLLOW | O_NONBLOCK fails with when the name is not a regular file
_SWAPPED_IN = {errno.ELOOP: "a symbolic link", errno.EMLINK: "a symbolic link", errno.ENXIO: "a FIFO (named pipe)",
               errno.EISDIR: "a folder"}


def temporary_path(path: str | Path) -> Path:
    """The temporary name PATH is written under: PATH.tmp in the same folder (a rename never crosses disks)."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


# ------------------------------------------------------------------------------------------ what stands there

def _kind(mode: int) -> str | None:
    """What a file of this st_mode is, when it is not a regular file ("a FIFO", ...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def not_a_file(path: str | Path, kind: str, error: type[CycleSegError] = RunError, reading: bool = False
               ) -> CycleSegError:
    """The one line for a link, FIFO, device or folder where cycleseg reads or writes a file."""
    if reading:
        return error(f"{path}: is {kind}, not a regular file, and cycleseg reads only regular files here; remove it "
                     "(or restore the file from a copy) and run again")
    return error(f"{path}: is {kind} where cycleseg writes a file, and cycleseg writes nothing through it; remove "
                 "it and run again")


def require_file(path: str | Path, error: type[CycleSegError] = RunError, follow: bool = True) -> bool:
    """True when PATH is a regular file, False when nothing is there; `error` (one line) for a FIFO, device,
    folder or socket, and, with `follow=False` (a name about to be written), for a symbolic link too. Never opens
    anything, so it never blocks. A link to a regular file is fine to read (`follow`)."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False  # nothing there (a dangling link, to a reader)
    kind = _kind(st.st_mode)
    if kind is not None:
        raise not_a_file(path, kind, error, reading=follow)
    return True


def _fstat_regular(fd: int, path: str | Path, error: type[CycleSegError], reading: bool) -> None:
    """Close `fd` and raise the one line when the open file is not a regular file (something swapped in)."""
    kind = _kind(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise not_a_file(path, kind, error, reading)


# ------------------------------------------------------------------------------------------------- reading

def read_bytes(path: str | Path, error: type[CycleSegError] = RunError) -> bytes:
    """The content of a regular file (a link to one is followed). FileNotFoundError (an OSError) when there is
    none; `error` for a FIFO, device or folder, never opened or read (it could block, or never end)."""
    if not require_file(path, error):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    fd = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    _fstat_regular(fd, path, error, reading=True)
    with open(fd, "rb") as f:
        return f.read()


def read_text(path: str | Path, error: type[CycleSegError] = RunError) -> str:
    """`read_bytes` decoded as UTF-8 (UnicodeDecodeError when it is not)."""
    return read_bytes(path, error).decode("utf-8")


# ------------------------------------------------------------------------------------------------- writing

def open_for_writing(path: str | Path, flags: int, mode: int = 0o644, error: type[CycleSegError] = RunError) -> int:
    """The one safe open of a file cycleseg writes in place (os.O_WRONLY or os.O_RDWR, plus O_CREAT, O_APPEND,
    ...): `error` naming PATH, with nothing opened or created, when a link, FIFO, device or folder stands there;
    the descriptor (blocking, close-on-exec) of a regular file otherwise. OSError for the rest (no permission)."""
    path = Path(path)
    require_file(path, error, follow=False)
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | _CLOEXEC, mode)
    except OSError as e:
        kind = _SWAPPED_IN.get(e.errno)  # something put there since the lstat
        if kind is not None:
            raise not_a_file(path, kind, error) from None
        raise
    _fstat_regular(fd, path, error, reading=False)
    os.set_blocking(fd, True)
    return fd


def make_folder(folder: str | Path, within: str | Path | None = None, error: type[CycleSegError] = RunError) -> Path:
    """Create `folder` (and its parents) unless it exists; `error` naming the first of `folder` and the folders
    between `within` (not included: the run, sweep, cache or output folder itself, which the user named) and it
    that is a symbolic link or not a folder, so that nothing is written elsewhere through a planted link.
    `within` None: `folder` alone is checked."""
    folder = Path(folder)
    chain = [folder]
    if within is not None and folder.absolute().is_relative_to(Path(within).absolute()):
        parts = folder.absolute().relative_to(Path(within).absolute()).parts
        chain = [Path(within).joinpath(*parts[:i + 1]) for i in range(len(parts))]
        _mkdir(Path(within), error)
    for path in chain:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            _mkdir(path, error)
            st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise error(f"{path}: is {_kind(st.st_mode) or 'a file'} where cycleseg makes a folder, and cycleseg "
                        "writes nothing through it; remove it and run again")
    return folder


def _mkdir(path: Path, error: type[CycleSegError]) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"{path}: cannot create the folder ({e.strerror or e}); {write_fix(e, path)}") from None


@contextlib.contextmanager
def atomic_file(path: str | Path, error: type[CycleSegError] = RunError) -> Iterator[BinaryIO]:
    """A binary file to write PATH's new content into; PATH is replaced only when the block ends without error.

    `error` (one line, nothing written) when PATH or PATH.tmp is something other than a regular file that
    cycleseg may not remove; raises any OSError itself (the caller words it: `atomic_write`); any error removes
    the temporary file."""
    path = Path(path)
    tmp = temporary_path(path)
    require_file(path, error, follow=False)  # a link, FIFO or folder at PATH: refused before anything is written
    created = False
    try:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(tmp).st_mode):
                raise not_a_file(tmp, "a folder", error)
            tmp.unlink()  # cycleseg's own scratch name: a leftover, or a link planted there (never written through)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o666)
        created = True
        with open(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: str | bytes | Callable[[BinaryIO], object],
                 error: type[CycleSegError] = RunError) -> None:
    """Write `data` to `path` through a temporary file, fsync and rename: a crash leaves the old file or the new.

    `data` may also be a function that writes into the open file (a checkpoint: no copy of it in memory).
    A failure (disk full, no permission, a file where a folder should be) is an `error` (RunError) naming the path;
    so is a link, FIFO, device or folder standing at `path` (nothing is written then).
    """
    path = Path(path)
    try:
        with atomic_file(path, error) as f:
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
        return (f"the disk (or quota) of {path.parent} is full ({free_space(path.parent)} free, too little for this "
                "file): free space there")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission to write in {path.parent}: fix its permissions or choose another folder"
    if error.errno == errno.ENOENT:
        return (f"{path.parent} or the temporary file was removed while writing (by another process?): check that "
                "no other command works on this folder")
    return "check the folder and the disk"


def free_space(folder: str | Path) -> str:
    """The free space of the disk holding `folder`, for a message: "2.9 MB"; "unknown" when it cannot be read."""
    try:
        free = float(shutil.disk_usage(folder).free)
    except OSError:
        return "unknown"
    if free < 1000:
        return f"{free:.0f} bytes"
    unit = 0
    while free >= 1000 and unit < 4:
        free, unit = free / 1000, unit + 1
    return f"{free:.1f} {('kB', 'MB', 'GB', 'TB')[unit - 1]}"


def fsync_dir(directory: Path) -> None:
    """Make a rename itself durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
