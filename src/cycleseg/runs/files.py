"""Reading and writing the files of a run: every write atomic (temporary file, fsync, rename), every read a
one-line RunError naming the file when it is missing or corrupt."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from cycleseg.errors import RunError
from cycleseg.runs.paths import LABELLED, STATUS


def atomic_write(path: str | Path, data: str | bytes | Callable[[BinaryIO], object]) -> None:
    """Write `data` to `path` through a temporary file, fsync and rename: a crash leaves the old file or the new.

    `data` may also be a function that writes into the open file (a checkpoint: no copy of it in memory).
    A failure (disk full, no permission, a file where a folder should be) is a RunError naming the path.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        if tmp.is_symlink():  # a shared run folder may bring one, pointing at a user's file: never write through it
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o666)
        with open(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise RunError(f"{path}: could not write ({e.strerror or e}); {_write_fix(e, path)}, the previous file is "
                       "intact") from None


def _write_fix(error: OSError, path: Path) -> str:
    """What to do about a failed write, by its cause (errno): a full disk and a missing folder need other fixes."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk (or quota) of {path.parent} is full: free space there"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission to write in {path.parent}: fix its permissions or choose another folder"
    if error.errno == errno.ENOENT:
        return (f"{path.parent} or the temporary file was removed while writing (by another process?): check that "
                "no other command works on this folder")
    return "check the folder and the disk"


def write_json(path: str | Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def write_yaml(path: str | Path, data: Any) -> None:
    atomic_write(path, yaml.safe_dump(data, sort_keys=False))


def read_json(path: str | Path) -> Any:
    """A JSON file of a run; RunError naming the file when it is missing or not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: not readable JSON ({_first_line(e)}); it may be truncated: rerun the command "
                       "that writes it") from None


def write_labelled(run_dir: str | Path, paths: list[str]) -> None:
    """RUN/labelled.txt: the labelled training images of the run (data.labelled), one path relative to the data
    root per line, in the order of the training split."""
    atomic_write(Path(run_dir) / LABELLED, "".join(f"{p}\n" for p in paths))


def read_labelled(run_dir: str | Path) -> list[str] | None:
    """The paths of RUN/labelled.txt (write_labelled); None when the run has none (yet)."""
    path = Path(run_dir) / LABELLED
    if not path.is_file():
        return None
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not readable ({_first_line(e)}); restore it from a copy of the run") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A run's YAML file (config.yaml) as a dict; RunError naming the file when it is missing or corrupt."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RunError(f"{path}: not readable YAML ({_first_line(e)})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    return data



def read_status(run_dir: str | Path) -> dict[str, Any]:
    """run.json of a run; {} when there is none (a folder from before run.json, or no run)."""
    path = Path(run_dir) / STATUS
    return read_json(path) if path.is_file() else {}



def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _fsync_dir(directory: Path) -> None:
    """Make a rename itself durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__

