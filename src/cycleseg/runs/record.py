"""The record of a run: creating it (`require_new_run`, `create_run`), resuming it (`resume_config`), its
status in run.json (`set_status`, `finished`, `record_evaluation`), its config hash and its class table.

A new run is created only after its config and data passed their checks; `--overwrite` then removes every
artifact of the old run, so that no number of an old configuration can be read as one of the new. Resuming
compares the requested settings with the checkpoint's own config: only `config.RESUMABLE_KEYS` may differ.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from cycleseg.config import RESUMABLE_KEYS, Config, apply_overrides, config_from_dict, flat_items
from cycleseg.data.cityscapes import CITYSCAPES
from cycleseg.data.classes import ClassTable
from cycleseg.errors import ConfigError, RunError
from cycleseg.runs.checkpoint import load_checkpoint
from cycleseg.runs.files import _first_line, _now, read_status, read_yaml, write_json, write_yaml
from cycleseg.runs.lock import _IN_USE, _holder_of
from cycleseg.runs.paths import _ARTIFACTS, _RUN_MARKERS, CLASSES, CONFIG, LAST, LOCK, STATUS, VERSIONS
from cycleseg.runs.summary import summary
from cycleseg.version import __version__

_STATES = ("running", "finished", "failed", "interrupted")


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
    """True when `train` completed the run recorded in run.json (final validation and metrics.json written):
    the rule of runs.summary, for a run with run.json."""
    run = summary(run_dir)
    return bool(run.record) and run.trained


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

