"""Reading and writing the files of a run: every write atomic (temporary file, fsync, rename; never through a
link), every read a one-line RunError naming the file when it is missing, corrupt, or a FIFO, device or folder
(never opened: fileio.read_text)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from cycleseg.errors import RunError
from cycleseg.fileio import atomic_write, read_text, require_file
from cycleseg.runs.paths import LABELLED, STATUS


def write_json(path: str | Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def write_yaml(path: str | Path, data: Any) -> None:
    atomic_write(path, yaml.safe_dump(data, sort_keys=False))


def read_json(path: str | Path) -> Any:
    """A JSON file of a run; RunError naming the file when it is missing or not valid JSON."""
    path = Path(path)
    try:
        return json.loads(read_text(path))
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
    if not require_file(path):
        return None
    try:
        return [line.strip() for line in read_text(path).splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not readable ({_first_line(e)}); restore it from a copy of the run") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A run's YAML file (config.yaml) as a dict; RunError naming the file when it is missing or corrupt."""
    path = Path(path)
    try:
        data = yaml.safe_load(read_text(path))
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
    return read_json(path) if require_file(path) else {}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__

