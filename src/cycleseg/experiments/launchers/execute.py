"""The work on one run, the same under every launcher: `run_one` executes what `plan.decide` says for a RunSpec
(skip it, continue it, train it anew or train it), then evaluates it on val; `train_run` is its training part
(also what every torchrun rank of a multi-GPU Slurm task runs). Plus the summary and log prefix of a run, which
every launcher reports the same way."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from cycleseg import runs
from cycleseg.errors import RunError
from cycleseg.experiments import plan
from cycleseg.experiments.plan import RunSpec

__all__ = ["num", "prefix", "refuse_in_use", "results", "run_one", "summary", "train_run"]


def run_one(spec: RunSpec, retrain: bool, prefix: str, log=print, command: str | None = None) -> str:
    """One run of a sweep, as `plan.decide` says: skip it when done, continue it when interrupted or not
    evaluated, else train it (anew with `retrain` when it was made with other settings); then evaluate it on val.
    Returns the status it had before ("done", "trained", "interrupted", "new" or "retrain").

    The whole of it holds the run's lock (`command` describes this process to others): a run that another
    process works on is left alone, runs.RunInUse ("in use elsewhere") before anything is read or written."""
    # create: a new run's folder is made now, so that this process (and its sweep) is named as the holder
    with runs.run_lock(spec.run_dir, command or f"cycleseg sweep {spec.sweep_dir} (run {spec.run_dir.name})",
                       create=True, sweep=spec.sweep_dir):
        return _run_one(spec, retrain, prefix, log)


def _run_one(spec: RunSpec, retrain: bool, prefix: str, log) -> str:
    from cycleseg.commands.evaluate import evaluate_run  # the training stack is only imported when something runs

    spec = plan.resolve(spec)
    action = plan.decide(spec, retrain)
    status = plan.status_before(spec, action)
    if action == "retrain":
        log(f"{prefix} made with other settings; training it anew (--retrain)")
    if action == "done":
        log(f"{prefix} finished, skipped")
        return status
    cfg = spec.config
    if action == "continue":
        log(f"{prefix} continuing from step {runs.checkpoint_step(spec.run_dir / runs.LAST) or 0}")
    else:
        log(f"{prefix} training ({cfg.optim.epochs} epochs at {cfg.data.width}x{cfg.data.height})")
    train_run(spec, action)
    log(f"{prefix} evaluating on val")
    evaluate_run(spec.run_dir, cfg.data.root, "val", device=cfg.train.device, progress=cfg.train.progress)
    return status


def train_run(spec: RunSpec, action: str) -> None:
    """Train `spec`'s run (its `from` SNR resolved) as `action` says: "continue" exactly from last.pt (with this
    sweep's values of config.RESUMABLE_KEYS), "new" or "retrain" (overwriting the run) from the start."""
    from cycleseg.commands.train import train

    if action == "continue":
        session, saved = runs.resume_config(spec.run_dir, plan.resumable_overrides(spec.config))
        train(session, spec.run_dir, resume=True, run_config=saved)
    elif action in ("new", "retrain"):
        train(spec.config, spec.run_dir, overwrite=action == "retrain")
    else:
        raise ValueError(f"train_run: nothing to train for {action!r}")


def prefix(spec: RunSpec, total: int) -> str:
    """The start of each log line about a run: "[3/16] quant2/seed1:"."""
    return f"[{spec.index}/{total}] {spec.name}:"


def summary(spec: RunSpec, status: str, start: float) -> dict[str, Any]:
    """What run_sweep returns (and sweep.json's `completed` holds) for a run that ran or was skipped."""
    return {"name": spec.name, "config": str(spec.config_path), "run_dir": str(spec.run_dir), "seed": spec.seed,
            "status_before": status, "seconds": round(time.time() - start, 1)}


def refuse_in_use(in_use: list[str], total: int, sweep_dir: Path) -> None:
    """The sweep ends with an error while runs of it were left to other processes (not finished by it)."""
    if in_use:
        raise RunError(f"{len(in_use)} of {total} runs in use elsewhere ({', '.join(in_use)}): left alone, the others "
                       f"are done; see `cycleseg sweep status {sweep_dir}`, rerun the sweep when they are free")


def results(run_dir: Path) -> dict[str, Any]:
    """The run's results that count on val (runs.summary: a fresh eval_val.json, else metrics.json); {} when it
    has none or they are unreadable (the status table shows what it can)."""
    with contextlib.suppress(RunError):
        return runs.summary(run_dir).results or {}
    return {}


def num(value: Any, digits: int) -> str:
    """`value` with `digits` decimals, "-" when it is not a number."""
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"
