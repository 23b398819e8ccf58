"""Run a set of configs (the paper's Table 2: configs/paper/) one after another into one sweep folder.

Each config CONFIG.yaml trains into SWEEP_DIR/CONFIG/ and is then evaluated on the validation split. Running
the same sweep again skips the finished runs, resumes an interrupted one exactly from its last.pt, and starts
the rest, so a sweep that a scheduler kills can simply be started again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cycleseg import runs
from cycleseg.calibrate import resolve_snr_from
from cycleseg.config import RESUMABLE_KEYS, Config, config_from_dict, flat_items, load_config
from cycleseg.errors import ConfigError, RunError
from cycleseg.evaluate import evaluate_run
from cycleseg.runs import LAST, write_json

__all__ = ["SWEEP_FILE", "SweepEntry", "find_configs", "run_status", "run_sweep"]

SWEEP_FILE = "sweep.json"


@dataclass
class SweepEntry:
    name: str  # the config's file stem, also the run directory's name
    config: Path

    def run_dir(self, sweep_dir: Path) -> Path:
        return sweep_dir / self.name


def find_configs(sources: list[Path], only: list[str] | None = None) -> list[SweepEntry]:
    """The YAML configs in `sources` (folders or files), in sweep order.

    Runs whose Gaussian SNR is taken `from` another run go last, so that run is trained first.
    """
    paths: list[Path] = []
    for src in sources:
        if src.is_dir():
            found = sorted(src.glob("*.yaml"))
            if not found:
                raise ConfigError(f"{src}: no *.yaml configs in this folder")
            paths += found
        elif src.is_file():
            paths.append(src)
        else:
            raise ConfigError(f"{src}: config file or folder not found")
    entries = [SweepEntry(p.stem, p) for p in paths]
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"configs with the same name {', '.join(dup)}: each run needs its own folder name")
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ConfigError(f"--only {','.join(unknown)}: no such config; choose from {', '.join(names)}")
        entries = [e for e in entries if e.name in only]
    return sorted(entries, key=lambda e: _snr_from(e.config) is not None)


def run_status(run_dir: Path) -> str:
    """"done" (trained and evaluated), "trained" (not evaluated), "interrupted" (created, not finished) or "new"."""
    status = runs.read_status(run_dir)
    if runs.finished(run_dir) or (not status and (run_dir / runs.METRICS).is_file()):  # (a run from before run.json)
        evaluated = status.get("evaluations", {}).get("val", {}).get("step") if status else None
        fresh = runs.artifact(run_dir, "eval", "val").is_file() and (not status or evaluated == status.get("step"))
        return "done" if fresh else "trained"
    return "interrupted" if (run_dir / LAST).is_file() or status else "new"


def run_sweep(sources: list[Path], sweep_dir: str | Path, overrides: list[str] = (), data_root: str | None = None,
              only: list[str] | None = None, retrain: bool = False, log=print) -> list[dict[str, Any]]:
    """Train and evaluate every config of `sources` into `sweep_dir`; returns one summary per run.

    `overrides` (`key=value`) apply to every config, e.g. a smaller size and fewer epochs for a quick look.
    A run already in the sweep folder is skipped when finished and continued when interrupted, provided it was
    made with the same settings (outside config.RESUMABLE_KEYS); otherwise the sweep stops naming the key, or,
    with `retrain`, trains that run anew.
    Progress: one line per run from `log` ("[3/16] quant2: continuing from step 1200"), and train's progress bar.
    """
    from cycleseg.train import train  # the training stack is only imported when something is trained

    sweep_dir = Path(sweep_dir)
    entries = find_configs(sources, only)
    extra = list(overrides) + ([f"data.root={data_root}"] if data_root else [])
    configs = {e.name: load_config(e.config, extra) for e in entries}  # every config checked before any training
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise RunError(f"{sweep_dir}: exists and is not a folder; choose another --out")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    summary: list[dict[str, Any]] = []
    for i, entry in enumerate(entries, 1):
        run_dir, cfg = entry.run_dir(sweep_dir), configs[entry.name]
        prefix = f"[{i}/{len(entries)}] {entry.name}:"
        start = time.time()
        cfg = resolve_snr_from(cfg, base_dir=sweep_dir)
        status = run_status(run_dir)
        if status != "new" and _differs(run_dir, cfg, retrain):
            log(f"{prefix} made with other settings; training it anew (--retrain)")
            status = "retrain"
        if status == "done":
            log(f"{prefix} finished, skipped")
        else:
            if status in ("interrupted", "trained"):
                session, saved = runs.resume_config(run_dir, _resumable_overrides(cfg))
                log(f"{prefix} continuing from step {runs.checkpoint_step(run_dir / LAST) or 0}")
                train(session, run_dir, resume=True, run_config=saved)
            else:
                log(f"{prefix} training ({cfg.optim.epochs} epochs at {cfg.data.width}x{cfg.data.height})")
                train(cfg, run_dir, overwrite=status == "retrain")
            log(f"{prefix} evaluating on val")
            evaluate_run(run_dir, cfg.data.root, "val", device=cfg.train.device, progress=cfg.train.progress)
        summary.append({"name": entry.name, "config": str(entry.config), "run_dir": str(run_dir),
                        "status_before": status, "seconds": round(time.time() - start, 1)})
        _write_summary(sweep_dir, entries, summary)
    return summary


def _differs(run_dir: Path, cfg: Config, retrain: bool) -> bool:
    """Whether the run in `run_dir` was made with other settings than `cfg` asks for: RunError naming the key,
    or True with `retrain`."""
    path = run_dir / LAST
    if not path.is_file():
        path = run_dir / runs.CONFIG  # a run that never reached its first checkpoint
        saved = runs.read_yaml(path) if path.is_file() else None
    else:
        saved = runs.load_checkpoint(path, mmap=True)["config"]  # the config only: tensors stay on disk
    if saved is None:
        return False
    diff = runs.config_difference(config_from_dict(saved, source=str(path)), cfg)
    if diff is None:
        return False
    if retrain:
        return True
    key, then, now = diff
    raise RunError(f"{run_dir}: this run was made with {key}={then!r}, the sweep now asks for {now!r}; rerun "
                   f"with the same overrides, pass --retrain to train it anew, or choose another --out")


def _resumable_overrides(cfg: Config) -> list[str]:
    """This sweep's values of the keys a continued run may take from it (where the data is, the device, ...)."""
    values = dict(flat_items(cfg.to_dict()))
    return [f"{k}={json.dumps(values[k])}" for k in RESUMABLE_KEYS]


def _snr_from(path: Path) -> str | None:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None  # load_config reports the problem with its file name
    snr = raw.get("noise", {}).get("snr_db") if isinstance(raw, dict) and isinstance(raw.get("noise"), dict) else None
    return snr if isinstance(snr, str) and snr.startswith("from ") else None


def _write_summary(sweep_dir: Path, entries: list[SweepEntry], done: list[dict[str, Any]]) -> None:
    finished = {d["name"] for d in done}
    write_json(sweep_dir / SWEEP_FILE, {
        "runs": [e.name for e in entries],
        "completed": done,
        "pending": [e.name for e in entries if e.name not in finished],
    })
