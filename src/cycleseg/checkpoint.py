"""Checkpoint files: written atomically, read back with a clear error for anything that is not ours."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cycleseg import __version__
from cycleseg.errors import RunError

__all__ = ["BEST", "LAST", "check_compatible", "load_checkpoint", "save_checkpoint"]

LAST = "last.pt"  # the latest state of a run: what `evaluate` and `--resume` read
BEST = "best.pt"  # the state with the best validation mIoU so far
_FORMAT = "cycleseg-checkpoint-v1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` via a temporary file, fsync and rename, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    payload = {"format": _FORMAT, "version": __version__, **state}
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RunError(f"{path}: could not write checkpoint ({e.strerror}); free disk space or fix permissions, "
                       "the previous checkpoint is intact") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; RunError naming the file if it is missing or not ours."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: checkpoint not found; train a model first (cycleseg train ...)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 -- truncated zip, random bytes, pickle errors: all mean "not a usable checkpoint"
        raise RunError(f"{path}: not a readable checkpoint ({type(e).__name__}); it may be truncated or corrupt") \
            from None
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise RunError(f"{path}: not a cycleseg checkpoint")
    return state


def check_compatible(state: dict[str, Any], kind: str, num_classes: int, path: Path) -> None:
    """RunError naming the file if the checkpoint holds another model kind or number of classes."""
    model = state.get("model") or state.get("config", {}).get("model", {})
    if model.get("kind") != kind or model.get("num_classes") != num_classes:
        raise RunError(f"{path}: checkpoint is of a {model.get('kind')} model with {model.get('num_classes')} "
                       f"classes, expected {kind} with {num_classes}; point at the right run")


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
