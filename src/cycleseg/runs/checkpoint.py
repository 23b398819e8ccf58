"""Checkpoints: save, load (safely: tensors and plain data only) and upgrade, in the formats v1 and v2.

v2 (the current format) holds tensors and plain data only, the NumPy RNG state as a tensor, and is read with
torch.load(weights_only=True), so that a shared run never runs code. v1 (cycleseg 0.1.0) pickled NumPy's RNG
state; it is read only with trust=True, and rewritten in v2 by `upgrade_checkpoint`.
"""

from __future__ import annotations

import errno
import pickle
import shutil
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from cycleseg.errors import RunError, UnsafeCheckpoint
from cycleseg.fileio import require_file
from cycleseg.runs.files import _first_line, atomic_write
from cycleseg.runs.lock import RunLock
from cycleseg.runs.paths import _RUN_MARKERS, LOCK
from cycleseg.version import __version__

# v2: tensors and plain data only (the NumPy RNG state as a tensor), read with torch.load(weights_only=True).
# v1 (cycleseg 0.1.0): NumPy's RNG state as a pickled ndarray, which a safe load refuses.
_CHECKPOINT_FORMAT = "cycleseg-checkpoint-v2"
_OLD_FORMATS = ("cycleseg-checkpoint-v1",)
# The globals a v1 last.pt holds beyond tensors and plain data (np.random.get_state()'s uint32 array): allowed
# only with trust=True, and nothing else even then. `numpy.core` is where NumPy 1.x pickled the function.
_V1_GLOBALS = ("numpy.dtype", "numpy.ndarray", "numpy.core.multiarray._reconstruct",
               "numpy._core.multiarray._reconstruct")
_PLAIN = (str, int, float, bool, type(None), torch.dtype, torch.device)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a training state (atomically, as every run file). Every value must be a tensor or plain data
    (dict, list, tuple, str, int, float, bool, None): what `load_checkpoint`'s safe load accepts.
    RunError in one line naming the file and the free space when it does not fit (`write_checkpoint`)."""
    state = {"format": _CHECKPOINT_FORMAT, "version": __version__,
             **{k: v for k, v in state.items() if k != "format"}}
    _require_plain(state, "checkpoint")  # a bug guard: never write a file that the safe load would refuse
    write_checkpoint(path, lambda f: torch.save(state, f))


def copy_checkpoint(source: str | Path, path: str | Path) -> None:
    """Copy a checkpoint file (last.pt to epoch_NNNN.pt) the way every checkpoint is written (`write_checkpoint`):
    atomically, never through a link at `path`."""
    def copy(f: BinaryIO) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)

    write_checkpoint(path, copy)


def write_checkpoint(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """The one writer of checkpoint files (last.pt, best.pt, epoch_NNNN.pt, an upgraded file): `write` fills the
    temporary file, which is renamed onto `path` (fileio.atomic_write). Every failure is the one-line RunError
    naming the file, the cause and, for a full disk, the free space, with the previous file intact: the OSError
    itself, and the RuntimeError torch's zip writer raises after a write failed under it ("unexpected pos ...":
    the OSError its file callback met is what counts)."""
    def recorded(f: BinaryIO) -> None:
        sink = _Recording(f)
        try:
            write(sink)
        except RuntimeError as e:
            if sink.error is not None:
                raise sink.error from None  # the disk's own error, worded by atomic_write
            raise OSError(errno.EIO, f"{type(e).__name__}: {_first_line(e)}") from None
    atomic_write(path, recorded)


class _Recording:
    """A file for torch.save that remembers the first OSError of its writes (torch's zip writer swallows it and
    raises a RuntimeError of its own later)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.error = f, None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self.f.flush()
        except OSError as e:
            self.error = self.error or e
            raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False,
                    trust: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, without unpickling anything but tensors and plain data
    (torch.load(weights_only=True)); RunError naming the file if it is missing, not ours, or holds anything else.

    `mmap`: map the tensors instead of reading them, for a look at the config or the progress only.
    `trust`: also read a last.pt of cycleseg 0.1.0 (format v1: NumPy's RNG state pickled as an ndarray); still
    nothing but NumPy's array and dtype beyond the safe set, so a planted object is refused even then.
    A v1 file comes back in the v2 layout (its "format" says which it was).
    """
    path = Path(path)
    if not require_file(path):  # a FIFO or device: RunError naming it, never opened
        raise RunError(f"{path}: checkpoint not found; train a model first (cycleseg train ...)")
    try:
        with torch.serialization.safe_globals(_v1_globals() if trust else []):
            state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise _refusal(path, trust) from None
    except Exception as e:  # noqa: BLE001 -- truncated zip, random bytes: all mean "not usable"
        raise RunError(f"{path}: not a readable checkpoint ({type(e).__name__}); it may be truncated or corrupt") \
            from None
    if not isinstance(state, dict) or state.get("format") not in (_CHECKPOINT_FORMAT, *_OLD_FORMATS):
        raise RunError(f"{path}: not a cycleseg checkpoint")
    rng = state.get("rng")
    if isinstance(rng, dict) and isinstance(rng.get("numpy"), tuple):  # v1: np.random.get_state() itself
        rng["numpy"] = numpy_rng_to_plain(rng["numpy"])
    return state


def upgrade_checkpoint(path: str | Path, trust: bool = False) -> bool:
    """Rewrite the checkpoint at `path` in the current format (atomically); False when it already is.

    A v1 last.pt needs `trust` (see load_checkpoint); a v1 best.pt holds nothing a safe load refuses. The
    contents stay the same (a resume from the new file is bit-identical), "version" still names the writer.
    A checkpoint in a run folder is rewritten holding the run's lock, as every writer into a run does (RunInUse
    while a trainer or another command works on the run).
    """
    path = Path(path)
    folder = path.parent
    in_run = any((folder / name).exists() or (folder / name).is_symlink() for name in (*_RUN_MARKERS, LOCK))
    with RunLock(folder, command=f"cycleseg upgrade {path}", enabled=in_run):
        state = load_checkpoint(path, trust=trust)
        if state["format"] == _CHECKPOINT_FORMAT:
            return False
        save_checkpoint(path, state)
        return True


def numpy_rng_to_plain(state: tuple) -> dict[str, Any]:
    """np.random.get_state() -> plain data and a tensor (what a safe load reads): the MT19937 key as int64."""
    name, key, pos, has_gauss, cached_gaussian = state
    return {"bit_generator": str(name), "key": torch.from_numpy(key.astype("int64")), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def numpy_rng_from_plain(plain: dict[str, Any]) -> tuple:
    """The inverse of numpy_rng_to_plain: a tuple for np.random.set_state."""
    import numpy as np

    return (plain["bit_generator"], plain["key"].cpu().numpy().astype(np.uint32), plain["pos"], plain["has_gauss"],
            plain["cached_gaussian"])


def _v1_globals() -> list[Any]:
    """NumPy's array reconstruction, under the names a v1 file may use for it."""
    import numpy as np

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    # BUILD on the dtype needs its class (NumPy >= 1.25); the RNG key is uint32, nothing else is allowed
    return [np.dtype, np.ndarray, type(np.dtype(np.uint32)),
            *((multiarray._reconstruct, name) for name in _V1_GLOBALS[2:])]


def _refusal(path: Path, trust: bool) -> RunError:
    """Why a safe load refused `path`: a v1 checkpoint (the way out named), or objects no cycleseg writes."""
    try:  # lists the pickle's globals without running it
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 -- no readable pickle to list: corrupt
        found = []
    if not found:
        return RunError(f"{path}: not a readable checkpoint (UnpicklingError); it may be truncated or corrupt")
    if set(found) <= set(_V1_GLOBALS) and not trust:
        return UnsafeCheckpoint(f"{path}: a checkpoint of cycleseg 0.1.0 (its RNG state is pickled NumPy data), "
                                f"not read unless you trust its source; if you do, rewrite it in the safe format "
                                f"with `cycleseg upgrade {path} --trust-checkpoint` (Python: trust=True)")
    names = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return UnsafeCheckpoint(f"{path}: refused: it holds pickled objects that no cycleseg checkpoint holds ({names}), "
                            "which could run code when loaded; delete it, or ask its sender for the run's checkpoints "
                            "again")


def _require_plain(value: Any, where: str) -> None:
    """TypeError naming the entry of a checkpoint that is neither a tensor nor plain data (a NumPy scalar, an
    object): torch.load(weights_only=True) would refuse the whole file."""
    kind = type(value)
    if isinstance(value, torch.Tensor) or kind in _PLAIN:
        return
    if kind in (dict, OrderedDict):
        for k, v in value.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}, not a str or int")
            _require_plain(v, f"{where}.{k}")
    elif kind in (list, tuple, torch.Size):
        for i, v in enumerate(value):
            _require_plain(v, f"{where}[{i}]")
    else:
        raise TypeError(f"{where} is a {kind.__module__}.{kind.__qualname__}, not a tensor or plain data; a "
                        "checkpoint holds nothing else (runs.save_checkpoint)")


def checkpoint_step(path: str | Path) -> int | None:
    """The training step a checkpoint was saved at (memory-mapped: its tensors are not read); None when it is
    missing or unreadable. UnsafeCheckpoint when the safe load refuses it: that is never read as "no checkpoint"."""
    try:
        return load_checkpoint(path, mmap=True)["progress"]["step"]
    except UnsafeCheckpoint:
        raise
    except (RunError, KeyError):  # an unreadable file has no step; load_checkpoint reports why where it matters
        return None


def check_compatible(state: dict[str, Any], kind: str, num_classes: int, path: Path) -> None:
    """RunError naming the file if the checkpoint holds another model kind or number of classes."""
    model = state.get("model") or state.get("config", {}).get("model", {})
    if model.get("kind") != kind or model.get("num_classes") != num_classes:
        raise RunError(f"{path}: checkpoint is of a {model.get('kind')} model with {model.get('num_classes')} "
                       f"classes, expected {kind} with {num_classes}; point at the right run")

