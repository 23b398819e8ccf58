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

from cycleseg.calibrate import resolve_snr_from
from cycleseg.checkpoint import LAST
from cycleseg.config import Config, load_config
from cycleseg.errors import ConfigError, RunError
from cycleseg.evaluate import evaluate_run, write_json

__all__ = ["SWEEP_FILE", "SweepEntry", "find_configs", "run_status", "run_sweep"]

SWEEP_FILE = "sweep.json"
# Settings that do not change what a run computes; they may differ when an interrupted run is continued.
FREE_KEYS = ("data.root", "data.num_workers", "train.progress", "train.device", "train.max_iters")


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
    """"done" (trained and evaluated), "trained" (not evaluated), "interrupted" (has last.pt) or "new"."""
    if (run_dir / "metrics.json").is_file():
        return "done" if (run_dir / "eval_val.json").is_file() else "trained"
    return "interrupted" if (run_dir / LAST).is_file() else "new"


def run_sweep(sources: list[Path], sweep_dir: str | Path, overrides: list[str] = (), data_root: str | None = None,
              only: list[str] | None = None, log=print) -> list[dict[str, Any]]:
    """Train and evaluate every config of `sources` into `sweep_dir`; returns one summary per run.

    `overrides` (`key=value`) apply to every config, e.g. a smaller size and fewer epochs for a quick look.
    Progress: one line per run from `log` ("[3/16] quant2: resuming at step 1200"), and train's progress bar.
    """
    from cycleseg.train import train  # the training stack is only imported when something is trained

    sweep_dir = Path(sweep_dir)
    entries = find_configs(sources, only)
    extra = list(overrides) + ([f"data.root={data_root}"] if data_root else [])
    configs = {e.name: load_config(e.config, extra) for e in entries}  # every config checked before any training
    sweep_dir.mkdir(parents=True, exist_ok=True)
    summary: list[dict[str, Any]] = []
    for i, entry in enumerate(entries, 1):
        run_dir, cfg = entry.run_dir(sweep_dir), configs[entry.name]
        status = run_status(run_dir)
        prefix = f"[{i}/{len(entries)}] {entry.name}:"
        start = time.time()
        if status == "done":
            log(f"{prefix} finished, skipped")
        else:
            cfg = resolve_snr_from(cfg, base_dir=sweep_dir)
            if status == "interrupted":
                cfg = _continue_config(run_dir, cfg)
                log(f"{prefix} continuing from step {_checkpoint_step(run_dir)}")
                train(cfg, run_dir, resume=True)
            elif status == "new":
                log(f"{prefix} training ({cfg.optim.epochs} epochs at {cfg.data.width}x{cfg.data.height})")
                train(cfg, run_dir)
            log(f"{prefix} evaluating on val")
            evaluate_run(run_dir, cfg.data.root, "val", device=cfg.train.device)
        summary.append({"name": entry.name, "config": str(entry.config), "run_dir": str(run_dir),
                        "status_before": status, "seconds": round(time.time() - start, 1)})
        _write_summary(sweep_dir, entries, summary)
    return summary


def _continue_config(run_dir: Path, cfg: Config) -> Config:
    """The saved config of an interrupted run, checked against what the sweep asks for now."""
    now = cfg.to_dict()
    saved = load_config(run_dir / "config.yaml", [f"{k}={json.dumps(_get(now, k))}" for k in FREE_KEYS])
    diffs = [k for k in _flat(now) if k not in FREE_KEYS and _get(now, k) != _get(saved.to_dict(), k)]
    if diffs:
        k = diffs[0]
        raise RunError(f"{run_dir}: this run was started with {k}={_get(saved.to_dict(), k)}, the sweep now asks for "
                       f"{_get(now, k)}; rerun with the same overrides, or delete {run_dir} to start it again")
    return saved


def _checkpoint_step(run_dir: Path) -> int:
    from cycleseg.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / LAST)["progress"]["step"]


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


def _flat(d: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        keys += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return keys


def _get(d: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        d = d[part]
    return d
