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
import hashlib
import json
import os
import pickle
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

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
from cycleseg.models import Models, build_models
from cycleseg.precision import FP32, Precision
from cycleseg.version import __version__

__all__ = [
    "BEST",
    "CLASSES",
    "CONFIG",
    "LABELLED",
    "LAST",
    "LOG",
    "METRICS",
    "STATUS",
    "VERSIONS",
    "artifact",
    "atomic_write",
    "check_compatible",
    "checkpoint_step",
    "config_difference",
    "config_hash",
    "create_run",
    "finished",
    "init_weights",
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
    "save_checkpoint",
    "seeded_inference",
    "set_status",
    "upgrade_checkpoint",
    "write_json",
    "write_labelled",
    "write_yaml",
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
        raise RunError(f"{path}: could not write ({e.strerror or e}); free disk space or fix permissions, "
                       "the previous file is intact") from None


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
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
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
                                  **(fields or {})})
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
