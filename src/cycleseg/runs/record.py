"""The record of a run: creating it (`require_new_run`, `create_run`), resuming it (`resume_config`), its
status in run.json (`set_status`, `finished`, `record_evaluation`), its config hash, its class table and its data
folder (`absolute_data`, `run_data_root`).

A new run is created only after its config and data passed their checks; `--overwrite` then removes every
artifact of the old run, so that no number of an old configuration can be read as one of the new. Resuming
compares the requested settings with the checkpoint's own config: only `config.RESUMABLE_KEYS` may differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from cycleseg.config import RESUMABLE_KEYS, Config, apply_overrides, config_from_dict, flat_items
from cycleseg.core.steps import lr_factor
from cycleseg.data.cityscapes import CITYSCAPES
from cycleseg.data.classes import ClassTable
from cycleseg.errors import ConfigError, DataError, RunError
from cycleseg.runs.checkpoint import load_checkpoint
from cycleseg.runs.files import _first_line, _now, read_status, read_yaml, write_json, write_yaml
from cycleseg.runs.lock import _IN_USE, _holder_of
from cycleseg.runs.paths import _ARTIFACTS, _RUN_MARKERS, CLASSES, CONFIG, LAST, LOCK, STATUS, VERSIONS
from cycleseg.runs.summary import summary
from cycleseg.version import __version__

_STATES = ("running", "finished", "failed", "interrupted")
DATA_AS_GIVEN = "data_root_as_given"  # run.json: the data folder as the user spelled it (config.yaml: absolute)
# The LR schedule's keys: a resume may change them when the epochs already trained keep their learning rate
# (`same_schedule`); the run then becomes the run of the new schedule (config.yaml rewritten: `rewrite_schedule`).
SCHEDULE_KEYS = ("optim.epochs", "optim.decay_start_epoch")


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
    progress = {}
    if path.is_file():
        checkpoint = load_checkpoint(path, mmap=True)
        saved, progress = checkpoint["config"], checkpoint.get("progress") or {}
    elif (run_dir / STATUS).is_file() and (run_dir / CONFIG).is_file():  # stopped before its first checkpoint
        path = run_dir / CONFIG
        saved = read_yaml(path)
    else:
        raise RunError(f"{path}: nothing to resume; train with --out {run_dir} first")
    saved_cfg = config_from_dict(saved, source=str(path))
    trained = _epochs_fixed(progress)
    if path.name == LAST and (run_dir / CONFIG).is_file():
        recorded = config_from_dict(read_yaml(run_dir / CONFIG), source=str(run_dir / CONFIG))
        # a schedule extended on resume: the checkpoint was written first, config.yaml follows at the next start
        edited = config_difference(recorded, saved_cfg,
                                   SCHEDULE_KEYS if same_schedule(recorded, saved_cfg, trained) else ())
        if edited:
            key, now, then = edited
            raise RunError(f"{run_dir / CONFIG}: {key} was changed to {now!r} after the run started with {then!r} "
                           f"(its checkpoint); restore it, or start a new run with --out")
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key not in RESUMABLE_KEYS + SCHEDULE_KEYS:
            raise ConfigError(f"{key} cannot change when a run is resumed (it changes what the run computes); "
                              f"start a new run with --out. On resume only these may change: "
                              f"{', '.join(RESUMABLE_KEYS)} (and {', '.join(SCHEDULE_KEYS)} while the epochs "
                              "trained keep their learning rate)")
    session = config_from_dict(apply_overrides(json.loads(json.dumps(saved)), list(overrides)),
                               source="command line")
    schedule = [o for o in overrides if o.partition("=")[0].strip() in SCHEDULE_KEYS]
    if schedule:
        _require_same_schedule(saved_cfg, session, trained, run_dir)
        saved = apply_overrides(json.loads(json.dumps(saved)), schedule)  # the run's own, from now on
    return session, saved


def _epochs_fixed(progress: dict[str, Any]) -> int:
    """How many epochs have their learning rate in the weights: those trained at least in part (an empty progress:
    a run that never reached its first checkpoint). The current epoch, if none of its batches has run, takes the
    rate of the session's schedule (TrainState.load)."""
    return progress.get("epoch", 0) + (1 if progress.get("batch_in_epoch", 0) else 0)


def _factor(epoch: int, epochs: int, decay_start_epoch: int) -> float:
    """lr_factor, and 0 from the last epoch on (where the schedule has ended)."""
    return lr_factor(epoch, epochs, decay_start_epoch) if epoch < epochs else 0.0


def same_schedule(a: Config, b: Config, epochs: int) -> bool:
    """Whether the LR schedules of `a` and `b` give the first `epochs` epochs the same learning rate."""
    return all(_factor(e, a.optim.epochs, a.optim.decay_start_epoch)
               == _factor(e, b.optim.epochs, b.optim.decay_start_epoch) for e in range(epochs))


def _require_same_schedule(saved: Config, session: Config, epochs: int, run_dir: Path) -> None:
    """ConfigError, naming the first epoch that would change, when a new optim.epochs / decay_start_epoch gives an
    epoch already trained another learning rate: the run could not become the run of that schedule."""
    if same_schedule(saved, session, epochs):
        return
    old, new = saved.optim, session.optim
    epoch = next(e for e in range(epochs) if _factor(e, old.epochs, old.decay_start_epoch)
                 != _factor(e, new.epochs, new.decay_start_epoch))
    raise ConfigError(f"optim.epochs={new.epochs}, optim.decay_start_epoch={new.decay_start_epoch} would change the "
                      f"learning rate of epoch {epoch}, which the run trained with optim.epochs={old.epochs}, "
                      f"optim.decay_start_epoch={old.decay_start_epoch}: a schedule changes on resume only where "
                      f"the epochs trained keep their rate (before its decay starts); start a new run with "
                      f"--init-from {run_dir / LAST} instead",
                      key="optim.epochs")


def schedule_changed(run_dir: str | Path, run_config: dict[str, Any]) -> bool:
    """Whether a resume gave the run (whose own config is now `run_config`) another LR schedule than config.yaml's."""
    path = Path(run_dir) / CONFIG
    recorded = read_yaml(path) if path.is_file() else None
    return recorded is not None and any(_value(recorded, k) != _value(run_config, k) for k in SCHEDULE_KEYS)


def rewrite_schedule(run_dir: str | Path, run_config: dict[str, Any]) -> None:
    """After a resume changed the LR schedule, once the checkpoint holds `run_config` (so that a kill in between
    leaves a config.yaml that resume_config accepts): config.yaml and run.json's config hash rewritten to it."""
    run_dir = Path(run_dir)
    recorded = read_yaml(run_dir / CONFIG)
    for key in SCHEDULE_KEYS:
        recorded["optim"][key.split(".")[1]] = _value(run_config, key)
    write_yaml(run_dir / CONFIG, recorded)
    status = read_status(run_dir)
    status["config_sha256"] = config_hash(config_from_dict(recorded, source=str(run_dir / CONFIG)))
    write_json(run_dir / STATUS, status)


def _value(raw: dict[str, Any], key: str) -> Any:
    section, name = key.split(".")
    return (raw.get(section) or {}).get(name)


def absolute_data(cfg: Config) -> Config:
    """`cfg` with data.root (and data.cache_dir) made absolute, as a new run records them: a resume, `evaluate` or
    `report` started from another working directory then finds the data (data.labelled and data.unpaired_labels
    are relative to data.root, and follow it)."""
    data = cfg.data
    cache_dir = os.path.abspath(data.cache_dir) if data.cache_dir is not None else None
    return dataclasses.replace(cfg, data=dataclasses.replace(data, root=os.path.abspath(data.root),
                                                             cache_dir=cache_dir))


def run_data_root(run_dir: str | Path, override: str | Path | None = None) -> Path:
    """The data folder a command reads for the run in `run_dir`: `override` (`--data`) when given, else the folder
    the run recorded (config.yaml's data.root; absolute for runs since cycleseg 0.2.0). DataError naming the run,
    the recorded folder and `--data` when that folder is not there."""
    if override is not None:
        return Path(override)
    run_dir = Path(run_dir)
    if (run_dir / CONFIG).is_file():
        recorded = (read_yaml(run_dir / CONFIG).get("data") or {}).get("root")
    elif (run_dir / LAST).is_file():  # a run from before config.yaml
        recorded = load_checkpoint(run_dir / LAST, mmap=True)["config"]["data"]["root"]
    else:
        raise RunError(f"{run_dir}: no {CONFIG} or {LAST}, so no recorded data folder; pass the data with --data DIR")
    root = Path(recorded if recorded is not None else "data/synthetic")
    if not root.is_dir():
        raise missing_data(run_dir, root)
    return root


def missing_data(run_dir: str | Path, root: str | Path) -> DataError:
    """The error of a run whose recorded data folder is not there: names the run, the folder (and how the user
    spelled it) and the fix."""
    given = read_status(run_dir).get(DATA_AS_GIVEN)
    spelled = f" (given as {given})" if given and given != str(root) else ""
    return DataError(f"{run_dir}: the data folder it was trained on, {root}{spelled}, is not there; pass the data "
                     "with --data DIR")


def config_difference(a: Config, b: Config, ignore: tuple[str, ...] = ()) -> tuple[str, Any, Any] | None:
    """The first key outside RESUMABLE_KEYS (and `ignore`) where two configs differ, as (key, a's value, b's
    value); else None.

    `model.num_classes: null` means "from the data" and matches the number a run resolved it to.
    """
    values_b = dict(flat_items(b.to_dict()))
    for key, value in flat_items(a.to_dict()):
        if key == "model.num_classes" and None in (value, values_b.get(key)):
            continue
        if key not in RESUMABLE_KEYS + ignore and value != values_b.get(key):
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

