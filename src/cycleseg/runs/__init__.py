"""The run directory: the one module that creates, overwrites, resumes, finishes and reads it.

A run directory holds one configuration and everything computed under it:

    config.yaml       the resolved config the run was created with (never rewritten)
    classes.yaml      the class table of its data (names, label values, colours; data/classes.py)
    run.json          status: state (running / finished / failed / interrupted), config hash, step,
                      and which checkpoint each evaluation used
    last.pt, best.pt  checkpoints (last.pt: the full training state; best.pt: the weights, config, step and
                      metrics at the best validation mIoU): torch's zip format holding only tensors and plain
                      data, read with torch.load(weights_only=True), so that a shared run never runs code
    epoch_NNNN.pt     per-epoch copies (train.keep_checkpoints)
    log.jsonl, events.out.tfevents.*   losses, LR, validation metrics
    metrics.json      final validation of `train`
    eval_<split>.json, calibrate_<split>.json, diagnose_<split>.{json,md}, diagnose_<split>/, official_<split>.json,
    predictions_<split>/, class_weights.json, versions.json
    labelled.txt      the labelled training images of a run on a labelled part of the data (data.labelled), one
                      path relative to the data root per line; what a resume trains on

Every write goes through `atomic_write`, so a crash never leaves half a file. A new run is created only after
its config and data passed their checks; `--overwrite` then removes every artifact of the old run, so that no
number of an old configuration can be read as one of the new. Resuming compares the requested settings with
the checkpoint's own config: only `config.RESUMABLE_KEYS` may differ.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import inspect
import json
import os
import pickle
import shutil
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import torch
import yaml

from cycleseg.config import (
    MODEL_KINDS,
    RESUMABLE_KEYS,
    Config,
    apply_overrides,
    config_from_dict,
    flat_items,
    uses_d_y,
)
from cycleseg.data.cityscapes import CITYSCAPES
from cycleseg.data.classes import ClassTable
from cycleseg.errors import ConfigError, RunError, UnsafeCheckpoint
from cycleseg.core.models import Models, build_models
from cycleseg.core.precision import FP32, Precision
from cycleseg.version import __version__

__all__ = [
    "BEST",
    "CLASSES",
    "CONFIG",
    "LABELLED",
    "LAST",
    "LOCK",
    "LOG",
    "METRICS",
    "STATUS",
    "VERSIONS",
    "RunInUse",
    "RunLock",
    "artifact",
    "atomic_write",
    "check_compatible",
    "checkpoint_step",
    "config_difference",
    "config_hash",
    "create_run",
    "finished",
    "init_weights",
    "inside_run",
    "load_checkpoint",
    "load_run",
    "numpy_rng_from_plain",
    "numpy_rng_to_plain",
    "read_json",
    "read_labelled",
    "read_status",
    "read_yaml",
    "record_evaluation",
    "require_new_run",
    "require_same_classes",
    "resume_config",
    "run_classes",
    "run_in_use",
    "run_lock",
    "save_checkpoint",
    "seeded_inference",
    "set_status",
    "upgrade_checkpoint",
    "write_json",
    "write_labelled",
    "write_yaml",
    "writes_into_run",
]

CONFIG = "config.yaml"
STATUS = "run.json"
LAST = "last.pt"  # the latest training state: what `evaluate` and `--resume` read
BEST = "best.pt"  # the weights (no optimizer state) with the best validation mIoU so far
METRICS = "metrics.json"
LOG = "log.jsonl"
VERSIONS = "versions.json"
CLASSES = "classes.yaml"
LABELLED = "labelled.txt"  # data.labelled: the run's labelled training images
# v2: tensors and plain data only (the NumPy RNG state as a tensor), read with torch.load(weights_only=True).
# v1 (cycleseg 0.1.0): NumPy's RNG state as a pickled ndarray, which a safe load refuses.
_CHECKPOINT_FORMAT = "cycleseg-checkpoint-v2"
_OLD_FORMATS = ("cycleseg-checkpoint-v1",)
# The globals a v1 last.pt holds beyond tensors and plain data (np.random.get_state()'s uint32 array): allowed
# only with trust=True, and nothing else even then. `numpy.core` is where NumPy 1.x pickled the function.
_V1_GLOBALS = ("numpy.dtype", "numpy.ndarray", "numpy.core.multiarray._reconstruct",
               "numpy._core.multiarray._reconstruct")
_PLAIN = (str, int, float, bool, type(None), torch.dtype, torch.device)
_STATES = ("running", "finished", "failed", "interrupted")
# What makes a folder a run directory (and so something --overwrite may clear): files only cycleseg writes.
_RUN_MARKERS = (STATUS, LAST)
# Everything a run and the commands on it write, which --overwrite removes: checkpoints and run.json first,
# config.yaml last, so that a kill in the middle never leaves old weights under a new config.
_ARTIFACTS = (LAST, STATUS, BEST, "epoch_*.pt", "*.tmp", METRICS, LOG, VERSIONS, "class_weights.json",
              "events.out.tfevents.*", "eval_*.json", "calibrate_*.json", "official_*.json", "diagnose_*.json",
              "diagnose_*.md", "diagnose_*", "predictions_*", LABELLED, CLASSES, CONFIG)


def artifact(run_dir: str | Path, kind: str, split: str | None = None) -> Path:
    """Path of a per-split artifact: artifact(run, "eval", "val") -> RUN/eval_val.json.

    kinds: eval, calibrate, official, diagnose (.json), diagnose_md (.md), diagnose_figures, diagnose_training
    (.json) and diagnose_training_png (the watermark along training), predictions (folders).
    """
    names = {"eval": "eval_{}.json", "calibrate": "calibrate_{}.json", "official": "official_{}.json",
             "diagnose": "diagnose_{}.json", "diagnose_md": "diagnose_{}.md", "diagnose_figures": "diagnose_{}",
             "diagnose_training": "diagnose_{}_training.json", "diagnose_training_png": "diagnose_{}_training.png",
             "predictions": "predictions_{}"}
    if kind not in names:
        raise ValueError(f"unknown artifact kind {kind!r}")
    return Path(run_dir) / names[kind].format(split)


# ---------------------------------------------------------------------------------------------- atomic writes

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


# ------------------------------------------------------------------------------------------------ checkpoints

def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a training state (atomically, as every run file). Every value must be a tensor or plain data
    (dict, list, tuple, str, int, float, bool, None): what `load_checkpoint`'s safe load accepts."""
    state = {"format": _CHECKPOINT_FORMAT, "version": __version__,
             **{k: v for k, v in state.items() if k != "format"}}
    _require_plain(state, "checkpoint")  # a bug guard: never write a file that the safe load would refuse
    atomic_write(path, lambda f: torch.save(state, f))


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
    if not path.is_file():
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
    """
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


def init_weights(source: str | Path, cfg: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """The weights a new run starts from (`train --init-from`): those of the networks that `source` (a checkpoint
    file, or a run directory: its best.pt, else its last.pt) and the model of `cfg` have in common, G always.

    A plain run's G may start a cycle model's G (and a cycle run's G a plain one). Returns (record, weights):
    record = {"path", "step", "networks"} for run.json, weights = {"G": state_dict, ...}. RunError naming the
    file when it is no checkpoint, holds another number of classes or weights that do not fit.
    """
    source = Path(source)
    path = (source / BEST if (source / BEST).is_file() else source / LAST) if source.is_dir() else source
    state = load_checkpoint(path)
    saved, model = state.get("model") or state.get("config", {}).get("model", {}), cfg.model
    if saved.get("num_classes") != model.num_classes or saved.get("kind") not in MODEL_KINDS:
        raise RunError(f"{path}: checkpoint is of a {saved.get('kind')} model with {saved.get('num_classes')} "
                       f"classes, this run is a {model.kind} model with {model.num_classes}; --init-from needs the "
                       f"same model.num_classes")
    target = build_models(model, cfg.noise, d_y=uses_d_y(cfg))  # only to check that the weights fit
    weights = {}
    for net in ("G", "F", "D", "D_Y"):
        part = {k[len(net) + 1:]: v for k, v in state.get("models", {}).items() if k.startswith(f"{net}.")}
        if part and getattr(target, net) is not None:
            expected = getattr(target, net).state_dict()
            problems = ([f"{k} is missing" for k in expected if k not in part]
                        + [f"{k} is not in this model" for k in part if k not in expected]
                        + [f"{k} has shape {tuple(part[k].shape)}, this model {tuple(v.shape)}"
                           for k, v in expected.items() if k in part and part[k].shape != v.shape])
            if problems:
                raise RunError(f"{path}: the weights of {net} do not fit this run's model ({problems[0]}"
                               f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''})")
            weights[net] = part
    if "G" not in weights:
        raise RunError(f"{path}: checkpoint holds no weights of G to initialise from")
    step = (state.get("progress") or {}).get("step", state.get("step"))
    names = [{"D": "D_X"}.get(net, net) for net in weights]
    return {"path": str(path.resolve()), "step": step, "networks": names}, weights


def load_run(run_dir: str | Path, device: torch.device | str = "cpu", checkpoint: str = LAST, trust: bool = False
             ) -> tuple[Models, Config]:
    """The trained models (in eval mode, on `device`) and config of a run: its last.pt, or another file in it.
    `trust`: also read a checkpoint of cycleseg 0.1.0 (load_checkpoint)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: run directory not found; pass the --out folder of `cycleseg train`")
    path = run_dir / checkpoint
    state = load_checkpoint(path, map_location=device, trust=trust)
    try:
        cfg = config_from_dict(state["config"], source=str(path))
        check_compatible(state, cfg.model.kind, cfg.model.num_classes, path)
        models = build_models(cfg.model, cfg.noise, d_y=uses_d_y(cfg))
        models.load_state_dict(state["models"])
    except (KeyError, RuntimeError, ConfigError) as e:
        raise RunError(f"{path}: checkpoint does not match its config ({_first_line(e)})") from None
    classes = run_classes(run_dir)
    if classes.num_classes != models.num_classes:  # a checkpoint copied in from another run
        raise RunError(f"{path}: holds a model of {models.num_classes} classes, but the run's {CLASSES} has "
                       f"{classes.num_classes}; this checkpoint comes from another run: copy that run's "
                       f"{checkpoint} here or point at that run")
    return models.to(device).eval(), cfg


@contextlib.contextmanager
def seeded_inference(module: torch.nn.Module, seed: int, device: torch.device | str = "cpu",
                     amp: Precision | None = None) -> Iterator[None]:
    """Eval mode, no autograd, the global RNG seeded with `seed` (the noise injection's Gaussian draws repeat)
    and, with `amp`, its autocast inside; the module's mode and the caller's RNG streams are restored after."""
    device = torch.device(device)
    was_training = module.training
    module.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode(), \
                (amp or FP32).autocast():
            torch.manual_seed(seed)
            yield
    finally:
        module.train(was_training)


# ------------------------------------------------------------------------------------- creating and resuming

def require_new_run(run_dir: str | Path, overwrite: bool) -> None:
    """Check, without writing anything, that `run_dir` may become a new run.

    A missing or empty folder is fine; a run directory needs `overwrite`; anything else is refused.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir}: exists and is not a folder; choose another --out")
    if not run_dir.is_dir() or not any(p.name != LOCK for p in run_dir.iterdir()):  # .lock: a run being created
        return
    if not any((run_dir / m).is_file() for m in _RUN_MARKERS):
        raise RunError(f"{run_dir}: folder is not empty and holds no run (no {STATUS} or {LAST}); choose another "
                       "--out (cycleseg does not delete files it did not write)")
    if not overwrite:
        raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, choose another --out, "
                       "or pass --overwrite to replace it")


def create_run(run_dir: str | Path, cfg: Config, overwrite: bool = False, fields: dict[str, Any] | None = None,
               classes: ClassTable | None = None) -> Path:
    """Make `run_dir` the home of a new run of `cfg`: remove an old run's every artifact (with `overwrite`),
    then write config.yaml, classes.yaml (the data's class table), run.json (state running, plus `fields`) and
    versions.json. Call after the data checks passed."""
    run_dir = Path(run_dir)
    require_new_run(run_dir, overwrite)
    if run_dir.is_dir():
        for pattern in _ARTIFACTS:  # every artifact of the old run; files of the user's own stay
            for entry in sorted(run_dir.glob(pattern)):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"{run_dir}: cannot create the run folder ({e.strerror}); choose another --out") from None
    write_yaml(run_dir / CONFIG, cfg.to_dict())
    if classes is not None:
        write_yaml(run_dir / CLASSES, classes.to_dict())
    write_json(run_dir / VERSIONS, software_versions())
    write_json(run_dir / STATUS, {"state": "running", "config_sha256": config_hash(cfg), "step": 0,
                                  "created": _now(), "updated": _now(), "message": None, "evaluations": {},
                                  _IN_USE: _holder_of(run_dir), **(fields or {})})
    return run_dir


def resume_config(run_dir: str | Path, overrides: list[str] = ()) -> tuple[Config, dict[str, Any]]:
    """The config to continue `run_dir` with: the checkpoint's own config, plus `overrides` of RESUMABLE_KEYS.

    Returns (config for this session, the run's saved config as a dict, which later checkpoints keep: session
    overrides such as train.max_iters do not become part of the run). Refuses, naming the key, an override of
    any other key and a config.yaml edited since the run was created. A run stopped before its first
    checkpoint starts again from step 0 with the config.yaml it was created with.
    """
    run_dir = Path(run_dir)
    path = run_dir / LAST
    if path.is_file():
        saved = load_checkpoint(path, mmap=True)["config"]
    elif (run_dir / STATUS).is_file() and (run_dir / CONFIG).is_file():  # stopped before its first checkpoint
        path = run_dir / CONFIG
        saved = read_yaml(path)
    else:
        raise RunError(f"{path}: nothing to resume; train with --out {run_dir} first")
    saved_cfg = config_from_dict(saved, source=str(path))
    if path.name == LAST and (run_dir / CONFIG).is_file():
        edited = config_difference(config_from_dict(read_yaml(run_dir / CONFIG), source=str(run_dir / CONFIG)),
                                   saved_cfg)
        if edited:
            key, now, then = edited
            raise RunError(f"{run_dir / CONFIG}: {key} was changed to {now!r} after the run started with {then!r} "
                           f"(its checkpoint); restore it, or start a new run with --out")
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key not in RESUMABLE_KEYS:
            raise ConfigError(f"{key} cannot change when a run is resumed (it changes what the run computes); "
                              f"start a new run with --out. On resume only these may change: "
                              f"{', '.join(RESUMABLE_KEYS)}")
    session = config_from_dict(apply_overrides(json.loads(json.dumps(saved)), list(overrides)),
                               source="command line")
    return session, saved


def config_difference(a: Config, b: Config) -> tuple[str, Any, Any] | None:
    """The first key outside RESUMABLE_KEYS where two configs differ, as (key, a's value, b's value); else None.

    `model.num_classes: null` means "from the data" and matches the number a run resolved it to.
    """
    values_b = dict(flat_items(b.to_dict()))
    for key, value in flat_items(a.to_dict()):
        if key == "model.num_classes" and None in (value, values_b.get(key)):
            continue
        if key not in RESUMABLE_KEYS and value != values_b.get(key):
            return key, value, values_b.get(key)
    return None


def config_hash(cfg: Config) -> str:
    """SHA-256 of the settings that define what a run computes (RESUMABLE_KEYS left out)."""
    relevant = {k: v for k, v in flat_items(cfg.to_dict()) if k not in RESUMABLE_KEYS}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def run_classes(run_dir: str | Path) -> ClassTable:
    """The class table of a run's data (classes.yaml; Cityscapes for runs from before it was written), the
    `CITYSCAPES` object itself when it holds the Cityscapes classes."""
    path = Path(run_dir) / CLASSES
    if not path.is_file():
        return CITYSCAPES
    try:
        table = ClassTable.from_dict(read_yaml(path), source=str(path))
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{path}: corrupt class table ({_first_line(e)}); train the run again or restore the "
                       "file from a copy") from None
    return CITYSCAPES if table.same_classes(CITYSCAPES) else table  # one object: `is CITYSCAPES` tests work


def require_same_classes(run_dir: str | Path, data_classes: ClassTable, data_root: str | Path) -> ClassTable:
    """The run's class table, after checking that the data at `data_root` (whose table is `data_classes`) has the
    same classes; RunError naming both otherwise (scoring labels of other classes would be meaningless)."""
    classes = run_classes(run_dir)
    if not data_classes.same_classes(classes):
        raise RunError(f"{data_root}: its {data_classes.num_classes} classes ({data_classes.source}) are not the "
                       f"{classes.num_classes} the run {run_dir} was trained on ({classes.source}); use data with "
                       "the run's classes")
    return classes


# ---------------------------------------------------------------------------------------------------- status

def read_status(run_dir: str | Path) -> dict[str, Any]:
    """run.json of a run; {} when there is none (a folder from before run.json, or no run)."""
    path = Path(run_dir) / STATUS
    return read_json(path) if path.is_file() else {}


def set_status(run_dir: str | Path, state: str, step: int | None = None, message: str | None = None,
               **fields: Any) -> None:
    """Record the run's state (running / finished / failed / interrupted) in run.json, and any `fields`."""
    if state not in _STATES:
        raise ValueError(f"unknown run state {state!r}")
    status = read_status(run_dir)
    status.update(state=state, updated=_now(), message=message, **fields)
    if _holder_of(Path(run_dir)) is not None:  # the writer at work, for readers (removed when it lets go)
        status[_IN_USE] = _holder_of(Path(run_dir))
    if step is not None:
        status["step"] = step
    write_json(Path(run_dir) / STATUS, status)


def finished(run_dir: str | Path) -> bool:
    """True when `train` completed the run (final validation and metrics.json written)."""
    return read_status(run_dir).get("state") == "finished" and (Path(run_dir) / METRICS).is_file()


def record_evaluation(run_dir: str | Path, split: str, checkpoint: str, step: int | None) -> None:
    """Note in run.json which checkpoint (and its training step) an eval_<split>.json was computed from."""
    status = read_status(run_dir)
    if not status:
        return
    status.setdefault("evaluations", {})[split] = {"checkpoint": checkpoint, "step": step, "time": _now()}
    write_json(Path(run_dir) / STATUS, status)


def software_versions() -> dict[str, str]:
    """What the run was made with, for the report: package, Python, torch, NumPy, platform, accelerator."""
    import platform

    import numpy as np

    return {"cycleseg": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(),
            "cuda": torch.version.cuda or "none",
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"}


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


# ------------------------------------------------------------------------------ one process per run: the lock
#
# Two processes writing into one run directory file one run's results under the other's config (a resume beside
# a running trainer, --overwrite under it, a requeued job beside a resume by hand). Every command that writes
# into a run holds RUN/.lock with an exclusive flock for as long as it works on the run; a second writer is
# refused before it writes or removes anything. The kernel drops a flock when its process dies (SIGKILL, OOM,
# a lost node's lease on NFS), so no lock outlives its holder. The file itself is never removed (--overwrite
# keeps it): a lock on a removed and re-created file would not exclude anyone.

LOCK = ".lock"  # RUN/.lock: flock'ed by the process that writes into the run; JSON of its holder inside
LOCK_ENV = "CYCLESEG_RUN_LOCK"  # "off": no locking, for file systems without flock (the guarantee is then gone)
_IN_USE = "in_use"  # run.json: the holder while a writer works on the run (None once it let go)
_RETRIES = 5  # a reader's probe holds the lock for microseconds: a writer tries a few times before refusing
_F = TypeVar("_F", bound=Callable[..., Any])
_held: dict[str, list[Any]] = {}  # resolved run directory -> [descriptor, holders in this process, holder record]


class RunInUse(RunError):
    """Another process holds the run's lock: `holder` is what it wrote into RUN/.lock (pid, host, command, since;
    {} when that could not be read)."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder

    @staticmethod
    def describe(run_dir: str | Path, holder: dict[str, Any]) -> str:
        """The one line a refused writer sees: who holds the run since when, and what to do."""
        return _in_use_message(Path(run_dir), holder)


class RunLock:
    """The lock of one run directory for this process: `acquire()` (idempotent) takes it or raises RunInUse naming
    the holder, `release()` lets go; `with RunLock(run)` does both. Nested holders in one process share it (a
    sweep's run_one holds it across train and evaluate), the lock goes when the last one lets go.

    `command` describes this process to a refused writer (default: the command line); `sweep` is the sweep folder
    when a sweep launcher works on the run (`cycleseg sweep status` then shows the run as its own, not as in use
    elsewhere). `enabled=False` makes every call a no-op (the ranks > 0 of torchrun: rank 0 holds it for all).
    """

    def __init__(self, run_dir: str | Path, command: str | None = None, sweep: str | Path | None = None,
                 enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.command, self.sweep = command, sweep
        self.enabled = enabled and os.environ.get(LOCK_ENV, "").lower() not in ("off", "0", "no", "false")
        self.locked = False

    def acquire(self, create: bool = False) -> RunLock:
        """Take the lock (RunInUse if another process holds it). A folder that does not exist holds no run and is
        not locked, unless `create`: then it is made (a new run's folder) and locked."""
        if self.locked or not self.enabled:
            return self
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunError(f"{self.run_dir}: exists and is not a folder; choose another --out")
        if not self.run_dir.is_dir():
            if not create:
                return self
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise RunError(f"{self.run_dir}: cannot create the run folder ({e.strerror}); choose another --out") \
                    from None
        key = _lock_key(self.run_dir)
        if key not in _held:
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command or _command_line(),
                      "since": _now(), **({"sweep": str(Path(self.sweep).resolve())} if self.sweep else {})}
            _held[key] = [_take(self.run_dir, holder), 0, holder]
        _held[key][1] += 1
        self.locked = True
        return self

    def release(self) -> None:
        if not self.locked:
            return
        self.locked = False
        key = _lock_key(self.run_dir)
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        try:
            with contextlib.suppress(RunError, OSError):  # never hide the error that ends the holder
                _note_in_use(self.run_dir, None)
        finally:
            del _held[key]
            with contextlib.suppress(OSError):
                fcntl.flock(entry[0], fcntl.LOCK_UN)  # for forked children too, which share the open file
            os.close(entry[0])

    def __enter__(self) -> RunLock:  # noqa: PYI034
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_lock(run_dir: str | Path, command: str | None = None, create: bool = False,
             sweep: str | Path | None = None) -> contextlib.AbstractContextManager[RunLock]:
    """`with run_lock(RUN, "cycleseg evaluate"):` the block runs holding RUN's lock (RunInUse, before anything
    is written, while another process holds it); `create`: make the folder of a new run first."""
    lock = RunLock(run_dir, command, sweep)

    @contextlib.contextmanager
    def held() -> Iterator[RunLock]:
        lock.acquire(create=create)
        try:
            yield lock
        finally:
            lock.release()

    return held()


def writes_into_run(when: Callable[[dict[str, Any]], bool] | None = None) -> Callable[[_F], _F]:
    """Decorator of a command that writes into the run directory given as its `run_dir` argument: it runs holding
    that run's lock (RunInUse before it reads or writes anything while another process holds it). `when`, given
    the call's arguments by name, says whether this call writes into the run at all (predict into another folder
    does not)."""
    def decorate(func: _F) -> _F:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def locked(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with RunLock(bound.arguments["run_dir"], enabled=when is None or when(bound.arguments)):
                return func(*args, **kwargs)
        return locked  # type: ignore[return-value]
    return decorate


def inside_run(path: str | Path, run_dir: str | Path) -> bool:
    """Whether `path` is in (or is) the run directory `run_dir`."""
    return Path(path).resolve().is_relative_to(Path(run_dir).resolve())


def run_in_use(run_dir: str | Path) -> dict[str, Any] | None:
    """The holder of RUN's lock (pid, host, command, since; {} when its record cannot be read), or None when no
    process holds it. A non-blocking probe for readers (`sweep status`): it never waits and takes nothing that a
    writer would notice but for a moment it retries over."""
    run_dir = Path(run_dir)
    entry = _held.get(_lock_key(run_dir)) if run_dir.is_dir() else None
    if entry is not None:
        return dict(entry[2])
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:
        return None  # no lock file: never locked (a run from before the lock, or no run)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(run_dir)
        except OSError:
            return None  # a file system without locks: cannot tell
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _take(run_dir: Path, holder: dict[str, Any]) -> int:
    """Open RUN/.lock, flock it exclusively, write `holder` into it; the descriptor. RunInUse when it is held."""
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunError(f"{path}: cannot open the run's lock file ({e.strerror}); fix the folder's permissions") \
            from None
    try:
        for attempt in range(_RETRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == _RETRIES - 1:
                    other = _read_holder(run_dir)
                    raise RunInUse(_in_use_message(run_dir, other), other) from None
                time.sleep(0.05)
            except OSError as e:
                raise RunError(f"{path}: this file system refuses locks ({e.strerror}); mount it with locking "
                               f"(Lustre: -o flock; NFS: without -o nolock), keep runs on a local disk, or set "
                               f"{LOCK_ENV}=off and make sure yourself that one process works on a run") from None
        os.ftruncate(fd, 0)  # written in place: replacing the file would make a second, unlocked one
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_holder(run_dir: Path) -> dict[str, Any]:
    """The holder record in RUN/.lock; {} while it is being written or when it is not ours."""
    for _ in range(_RETRIES):
        with contextlib.suppress(OSError, UnicodeDecodeError, json.JSONDecodeError):
            holder = json.loads((run_dir / LOCK).read_text())
            if isinstance(holder, dict):
                return holder
        time.sleep(0.02)  # the holder truncates, then writes: an empty file for a moment
    return {}


def _in_use_message(run_dir: Path, holder: dict[str, Any]) -> str:
    """The one line a refused writer sees: who holds the run since when, and what to do."""
    if not holder.get("pid"):
        return (f"{run_dir}: in use by another process (its lock file {LOCK} names none); wait until it ends, "
                "then try again")
    pid, host = holder["pid"], holder.get("host", "?")
    command = " ".join(str(holder.get("command", "?")).split())
    where = "" if host == socket.gethostname() else f" on {host}"
    return (f"{run_dir}: in use by `{command}` (pid {pid} on {host}, since {holder.get('since', '?')}); wait until "
            f"it ends, or stop it (kill {pid}{where}) and try again")


def _note_in_use(run_dir: Path, holder: dict[str, Any] | None) -> None:
    """run.json's note of the writer at work: create_run and set_status write it while this process holds the
    lock (readers see the run is in use); removed here when it lets go (a killed holder leaves it: the lock
    itself, `run_in_use`, is what counts)."""
    status = read_status(run_dir)
    if not status or status.get(_IN_USE) == holder:
        return
    if holder is None and (status.get(_IN_USE) or {}).get("pid") != os.getpid():
        return
    status[_IN_USE] = holder
    write_json(run_dir / STATUS, status)


def _holder_of(run_dir: Path) -> dict[str, Any] | None:
    """The holder record of this process's lock on `run_dir`, or None."""
    entry = _held.get(_lock_key(run_dir)) if run_dir.is_dir() else None
    return entry[2] if entry else None


def _lock_key(run_dir: Path) -> str:
    return str(Path(run_dir).resolve())


def _command_line() -> str:
    """This process's command line, shortened, for a refused writer's message."""
    argv = list(sys.argv) or ["python"]
    path = Path(argv[0])
    if path.name == "cycleseg" or (path.parent.name == "cycleseg" and path.stem in ("cli", "__main__")):
        name = "cycleseg"
    elif path.parent.name == "cycleseg":
        name = f"python -m cycleseg.{path.stem}"
    else:
        name = path.name
    return " ".join([name, *argv[1:]])[:200]


def _forget_locks_after_fork() -> None:
    """A forked child (a DataLoader worker) holds no lock of its own: only its parent lets go of them."""
    for fd, _, _ in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_locks_after_fork)
