"""Run a set of configs (the paper's Table 2: configs/paper/) into one sweep folder, once or once per seed.

Each config CONFIG.yaml trains into SWEEP_DIR/CONFIG/ (with `seeds`: into SWEEP_DIR/CONFIG/seed<k>/ for
k = 0..seeds-1, trained with train.seed=k) and is then evaluated on the validation split. Running the same
sweep again skips the finished runs, resumes an interrupted one exactly from its last.pt, and starts the
rest, so a sweep that a scheduler kills can simply be started again.

`run_sweep` checks the request, takes the runs from `plan.plan` (which runs, where, in which order; what to do
with each is `plan.decide`), and hands them to a launcher (`launchers/`): one after another in this process (the
default), or, with the local launcher, up to `jobs` at once, each in its own process, its console output in
SWEEP_DIR/logs/<run>.log. This module keeps SWEEP_DIR/sweep.json (every run's state, process and times) and its
lock, and the status display: `sweep_status` reads sweep.json with each run's run.json and log.jsonl
(`cycleseg sweep status SWEEP_DIR`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cycleseg import runs
from cycleseg.errors import ConfigError, RunError, user_message
from cycleseg.experiments import plan
from cycleseg.experiments.launchers import EXIT_IN_USE, IN_USE, LAUNCHERS, Sweep
from cycleseg.experiments.launchers.execute import num as _num
from cycleseg.experiments.launchers.execute import results as _results
from cycleseg.experiments.launchers.execute import run_one
from cycleseg.experiments.launchers.local import LOGS, worker_main
from cycleseg.experiments.plan import MAX_SEEDS, RunSpec, SweepEntry, check_request, find_configs, run_status, seed_dir
from cycleseg.fileio import require_file
from cycleseg.runs import LAST, write_json

__all__ = ["EXIT_IN_USE", "IN_USE", "LAUNCHERS", "LOGS", "MAX_SEEDS", "SWEEP_FILE", "RunState", "SweepEntry",
           "check_request", "expand_runs", "find_configs", "find_runs", "format_plan", "format_status",
           "plan_sweep", "run_one", "run_status", "run_sweep", "seed_dir", "sweep_status", "worker_main"]

SWEEP_FILE = "sweep.json"
LOCK_FILE = "sweep.lock"


# ------------------------------------------------------------------------------------------------ the sweep

def run_sweep(sources: list[Path], sweep_dir: str | Path, overrides: list[str] = (), data_root: str | None = None,
              only: list[str] | None = None, retrain: bool = False, log=print, seeds: int | None = None,
              launcher: str = "inprocess", jobs: int = 1, gpus: list[str] | None = None,
              threads: int | None = None) -> list[dict[str, Any]]:
    """Train and evaluate every config of `sources` into `sweep_dir`; returns one summary per run.

    `overrides` (`key=value`) apply to every config, e.g. a smaller size and fewer epochs for a quick look.
    `seeds` N: every config N times, with train.seed=0..N-1, into SWEEP_DIR/CONFIG/seed<k>/; a Gaussian run
    whose SNR is taken `from` another config of the sweep takes it from the same seed's run of that config.
    A run already in the sweep folder is skipped when finished and continued when interrupted, provided it was
    made with the same settings (outside config.RESUMABLE_KEYS); otherwise the sweep stops naming the key, or,
    with `retrain`, trains that run anew.
    `launcher` "inprocess": one run after another in this process; "local": each run in a subprocess, `jobs`
    at once (with `threads` torch threads each, default CPU cores // jobs; with `gpus`, each its own
    CUDA_VISIBLE_DEVICES), the rest queued.
    Progress: one line per run from `log` ("[3/16] quant2: continuing from step 1200"), and, in-process,
    train's progress bar.
    """
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher {launcher!r}: choose from {', '.join(LAUNCHERS)}")
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be at least 1")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: must be at least 1")
    if launcher == "inprocess" and (jobs > 1 or gpus or threads):
        raise ConfigError("--jobs, --gpus and --threads need --launcher local (runs in subprocesses)")
    sweep_dir = Path(sweep_dir)
    entries = find_configs(sources, only)
    extra = list(overrides) + ([f"data.root={data_root}"] if data_root else [])
    check_request(entries, extra, seeds)  # before planning, which loads every config once per seed
    specs = plan.plan(entries, sweep_dir, extra, seeds)  # every config checked before any training
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise RunError(f"{sweep_dir}: exists and is not a folder; choose another --out")
    _check_layout(sweep_dir, entries, seeds)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with _SweepLock(sweep_dir):
        _check_not_busy(sweep_dir, specs)
        book = _Book(sweep_dir, specs, entries, seeds)
        module = importlib.import_module(f"cycleseg.experiments.launchers.{launcher}")
        return module.launch(specs, Sweep(sweep_dir, retrain, book, log, jobs, gpus or [], threads))


def plan_sweep(sources: list[Path], sweep_dir: str | Path, overrides: list[str] = (), data_root: str | None = None,
               only: list[str] | None = None, retrain: bool = False, seeds: int | None = None
               ) -> list[tuple[RunSpec, str]]:
    """`sweep --dry-run`: the runs `run_sweep` would execute with these arguments, each with what it would do
    (`plan.decide` without measuring: new, continue, done, retrain, unknown, or "refused: WHY" for a run made with
    other settings); the same checks first. Writes nothing, creates no folder."""
    sweep_dir = Path(sweep_dir)
    entries = find_configs(sources, only)
    extra = list(overrides) + ([f"data.root={data_root}"] if data_root else [])
    check_request(entries, extra, seeds)
    specs = plan.plan(entries, sweep_dir, extra, seeds)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise RunError(f"{sweep_dir}: exists and is not a folder; choose another --out")
    _check_layout(sweep_dir, entries, seeds)
    planned = []
    for spec in specs:
        try:
            action = plan.decide(spec, retrain, measure=False)
        except RunError as e:
            action = f"refused: {user_message(e)}"
        planned.append((spec, action))
    return planned


def format_plan(planned: list[tuple[RunSpec, str]]) -> str:
    """The plan of `plan_sweep`, one line per run in the order they would run, then the counts."""
    what = {"new": "train", "continue": "continue (or evaluate) it", "done": "skip: finished and evaluated",
            "retrain": "train anew (--retrain)", "unknown": "decide once the SNR it takes is measured"}
    lines = []
    for spec, action in planned:
        cfg = spec.config
        after = f", after {spec.depends_on}" if spec.depends_on else ""
        lines.append(f"[{spec.index}/{len(planned)}] {spec.name}: {what.get(action, action)} -> {spec.run_dir} "
                     f"({cfg.optim.epochs} epochs at {cfg.data.width}x{cfg.data.height}, seed {cfg.train.seed}"
                     f"{after})")
    counts = {}
    for _, action in planned:
        key = action.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    lines.append(f"dry run: {len(planned)} runs ({', '.join(f'{n} {k}' for k, n in counts.items())}); nothing "
                 "written")
    return "\n".join(lines)


def _check_layout(sweep_dir: Path, entries: list[SweepEntry], seeds: int | None) -> None:
    """A sweep folder holds runs with seeds (NAME/seed<k>/) or without (NAME/), never both for one config."""
    for e in entries:
        folder = sweep_dir / e.name
        if not folder.is_dir():
            continue
        holds_run = any((folder / m).is_file() for m in (runs.STATUS, LAST, runs.CONFIG))
        seeded = any(plan.seed_of(d.name) is not None and d.is_dir() for d in folder.iterdir())
        if seeds is not None and holds_run:
            raise RunError(f"{folder}: holds a run made without --seeds; run this sweep without --seeds, or "
                           "choose another --out for the seeded one")
        if seeds is None and seeded and not holds_run:
            raise RunError(f"{folder}: holds runs per seed (seed0/, ...) of a sweep made with --seeds; pass "
                           "--seeds again (the same N or more), or choose another --out")


def _check_not_busy(sweep_dir: Path, specs: list[RunSpec]) -> None:
    """Refuse to start while a run of this sweep is still trained by a process of an earlier sweep (a launcher
    child whose sweep process was killed): two processes must never train one run directory."""
    states = _read_sweep_file(sweep_dir).get("state") or {}
    for spec in specs:
        entry = states.get(spec.name) if isinstance(states, dict) else None
        if (isinstance(entry, dict) and entry.get("state") == "running" and entry.get("host") == socket.gethostname()
                and entry.get("pid") != os.getpid() and _alive(entry.get("pid"))):
            raise RunError(f"{spec.run_dir}: still being trained by process {entry['pid']} of an "
                           f"earlier sweep; wait for it or stop it (kill {entry['pid']}), then start the sweep again")


# --------------------------------------------------------------------------------------- sweep.json and lock

class _Book:
    """SWEEP_DIR/sweep.json: the runs of this sweep, the ones completed and pending, and each run's state
    (running with its pid, finished, failed with its error and log, the start and end times). Only the sweep
    process writes it; states of runs of earlier invocations are kept."""

    def __init__(self, sweep_dir: Path, specs: list[RunSpec], entries: list[SweepEntry], seeds: int | None) -> None:
        self.path = sweep_dir / SWEEP_FILE
        previous = _read_sweep_file(sweep_dir)
        self.data: dict[str, Any] = {
            "runs": [s.name for s in specs], "configs": [e.name for e in entries], "seeds": seeds,
            "completed": [], "pending": [s.name for s in specs], "failed": [],
            "state": previous.get("state", {}) if isinstance(previous.get("state"), dict) else {},
        }
        self._write()

    def started(self, spec: RunSpec, pid: int, log: Path | None, start: float, gpu: str | None = None) -> None:
        self.data["state"][spec.name] = {
            "state": "running", "pid": pid, "host": socket.gethostname(), "started": start, "ended": None,
            "log": str(log) if log else None, "gpu": gpu, "error": None, "exit": None}
        self._write()

    def ended(self, spec: RunSpec, state: str, start: float, summary: dict[str, Any] | None = None,
              error: str | None = None, exit_code: int | None = None) -> None:
        name = spec.name
        entry = self.data["state"].setdefault(name, {"started": start, "pid": None, "log": None})
        entry.update(state=state, ended=time.time(), error=error, exit=exit_code)
        if summary is not None:
            self.data["completed"].append(summary)
        done = {c["name"] for c in self.data["completed"]}
        if state == "failed":
            self.data["failed"].append(name)
        self.data["pending"] = [n for n in self.data["runs"] if n not in done]
        self._write()

    def _write(self) -> None:
        write_json(self.path, self.data)


def _read_sweep_file(sweep_dir: Path) -> dict[str, Any]:
    path = Path(sweep_dir) / SWEEP_FILE
    try:
        data = runs.read_json(path) if path.is_file() else {}
    except RunError:
        return {}
    return data if isinstance(data, dict) else {}


class _SweepLock:
    """SWEEP_DIR/sweep.lock with the sweep's pid and host while it runs: a second sweep into the same folder
    is refused while the first one's process lives; a lock left by a killed sweep is taken over."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = sweep_dir / LOCK_FILE
        self.mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}

    def __enter__(self) -> _SweepLock:  # noqa: PYI034
        holder = _lock_holder(self.path.parent)
        if holder is not None and holder != os.getpid():
            raise RunError(f"{self.path.parent}: another sweep (pid {holder}) is running into this folder; wait for "
                           f"it (cycleseg sweep status {self.path.parent}) or stop it first")
        write_json(self.path, self.mine)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError, RunError):
            if runs.read_json(self.path).get("pid") == os.getpid():
                self.path.unlink()


def _lock_holder(sweep_dir: Path) -> int | None:
    """The pid of the live sweep process that holds SWEEP_DIR's lock, or None."""
    path = Path(sweep_dir) / LOCK_FILE
    try:
        lock = runs.read_json(path) if path.is_file() else None
    except RunError:
        return None
    if not isinstance(lock, dict) or lock.get("host") != socket.gethostname():
        return None
    return lock.get("pid") if _alive(lock.get("pid")) else None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -------------------------------------------------------------------------------------------------- layout

def find_runs(sweep_dir: str | Path) -> list[tuple[str, int | None, Path]]:
    """Every run directory of a sweep folder as (config name, seed or None, run directory), in the sweep's order
    (sweep.json), seeds ascending: SWEEP_DIR/NAME/ (a sweep without seeds) and SWEEP_DIR/NAME/seed<k>/.
    A run stopped before its config.yaml was written is one too (NAME/ holding run.json or last.pt, every
    NAME/seed<k>/ folder), so that the readers name it instead of passing over it."""
    sweep_dir = Path(sweep_dir)
    data = _read_sweep_file(sweep_dir)
    order = [n.split("/")[0] for n in data.get("configs") or data.get("runs") or []]
    found: list[tuple[str, int | None, Path]] = []
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir()) if sweep_dir.is_dir() else []:
        if any((d / m).exists() for m in (runs.CONFIG, runs.STATUS, LAST)):
            found.append((d.name, None, d))
            continue
        for s in d.iterdir():
            seed = plan.seed_of(s.name)
            if seed is not None and s.is_dir():
                found.append((d.name, seed, s))
    return sorted(found, key=lambda r: (order.index(r[0]) if r[0] in order else len(order), r[0], r[1] or 0))


def expand_runs(paths: list[Path]) -> list[tuple[str, int | None, Path]]:
    """What `cycleseg table` and `report` take, as (config name, seed or None, run directory): each path a run
    directory (NAME/ or NAME/seed<k>/), a config's folder of seeds (NAME/ holding seed<k>/), or a sweep folder."""
    out: list[tuple[str, int | None, Path]] = []
    for path in map(Path, paths):
        if any((path / m).is_file() for m in (runs.CONFIG, runs.STATUS, LAST, runs.METRICS)):  # a run directory
            seed = plan.seed_of(path.name)
            out.append((path.parent.name, seed, path) if seed is not None else (path.name, None, path))
            continue
        seeds = sorted((seed, d) for d in (path.iterdir() if path.is_dir() else [])
                       if (seed := plan.seed_of(d.name)) is not None and d.is_dir())
        if seeds:  # a config's folder of seeds
            out += [(path.name, seed, d) for seed, d in seeds]
        elif path.is_dir() and (found := find_runs(path)):  # a sweep folder
            out += found
        else:
            out.append((path.name, None, path))  # no run here: the caller says what is missing
    return out


# -------------------------------------------------------------------------------------------------- status

@dataclass
class RunState:
    """Where one run of a sweep stands: pending, running, interrupted, finished or failed."""

    name: str  # "quant2" or "quant2/seed1"
    run_dir: Path
    state: str
    step: int | None = None
    loss: float | None = None
    pid: int | None = None
    log: str | None = None
    error: str | None = None
    miou: float | None = None
    evaluated: bool = False
    updated: float | None = None  # last write to log.jsonl (seconds since the epoch)
    job: str | None = None  # "123_4 RUNNING": the Slurm job of a run submitted with --launcher slurm, and its state
    holder: dict[str, Any] | None = None  # in use: the process outside this sweep that holds the run's lock

    @property
    def detail(self) -> str:
        slurm = f"Slurm job {self.job}" if self.job else None
        if self.state == IN_USE:
            h = self.holder or {}
            who = f"`{h['command']}` (pid {h.get('pid')} on {h.get('host')}, since {h.get('since')})" \
                if h.get("command") else "another process"
            return f"in use elsewhere: {who}; the sweep leaves it alone" + (f"; {slurm}" if slurm else "")
        if self.state == "finished":
            return f"mIoU {_num(self.miou, 1)} %" + ("" if self.evaluated else " (train's validation; not evaluated yet)")
        if self.state == "failed":
            return (f"step {self.step}: " if self.step else "") + f"{self.error or 'failed'}" + \
                (f"; log {self.log}" if self.log else "") + (f"; {slurm}" if slurm else "")
        parts = [slurm] if slurm else []
        if self.step is not None:
            parts.append(f"step {self.step}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.state == "running" and not self.job:
            parts.append(f"pid {self.pid}" if self.pid else "pid unknown (no sweep process records it)")
        if self.updated is not None and self.state in ("running", "interrupted"):
            parts.append(f"log.jsonl updated {_ago(self.updated)} ago")
        if self.state == "interrupted":
            parts.append("a rerun of the sweep continues it")
        if self.log and self.state != "pending":
            parts.append(f"log {self.log}")
        return ", ".join(parts)


def sweep_status(sweep_dir: str | Path) -> list[RunState]:
    """The state of every run of a sweep folder (those sweep.json names and those on disk), in sweep order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise RunError(f"{sweep_dir}: sweep folder not found; start one with `cycleseg sweep CONFIGS --out {sweep_dir}`")
    data = _read_sweep_file(sweep_dir)
    book = data.get("state", {}) if isinstance(data.get("state"), dict) else {}
    names = list(data.get("runs") or [])
    for name, seed, _ in find_runs(sweep_dir):
        run_name = name if seed is None else f"{name}/{plan.seed_dir(seed)}"
        if run_name not in names:
            names.append(run_name)
    if not names:
        raise RunError(f"{sweep_dir}: no sweep.json and no run directories in it; is it a sweep folder?")
    return [_state_of(sweep_dir, name, book.get(name) or {}) for name in names]


def _state_of(sweep_dir: Path, name: str, book: dict[str, Any]) -> RunState:
    run_dir = sweep_dir / name
    state = RunState(name, run_dir, "pending", log=book.get("log"))
    try:  # a corrupt run.json, a FIFO or link where a run file should be: the run's line names it
        status = runs.read_status(run_dir)
        before = run_status(run_dir)
        state.step, state.loss, state.updated = _progress(run_dir)
        holder = runs.run_in_use(run_dir)  # a probe: never waits, takes nothing
    except RunError as e:
        state.state, state.error = "failed", user_message(e)
        return state
    if state.step is None and status.get("step"):
        state.step = status.get("step")
    live = book.get("state") == "running" and book.get("host") == socket.gethostname() and _alive(book.get("pid"))
    if holder is not None:
        own = holder.get("sweep") == str(sweep_dir.resolve()) or (
            holder.get("pid") == book.get("pid") and holder.get("host") == book.get("host"))
        if not own:
            state.state, state.holder = IN_USE, holder
            return state
        live, book = True, {**book, "pid": book.get("pid") or holder.get("pid")}
    if before in ("done", "trained"):
        results = _results(run_dir)
        state.miou, state.evaluated = results.get("miou"), before == "done"
        state.state = "running" if live else "finished"  # a finished run being evaluated (or retrained)
        state.pid = book.get("pid") if live else None
        return state
    if live:
        state.state, state.pid = "running", book.get("pid")
    elif status.get("state") == "failed" or book.get("state") == "failed":
        state.state = "failed"
        state.error = status.get("message") if status.get("state") == "failed" else book.get("error")
        state.log = book.get("log") or str(run_dir / runs.LOG)
    elif status.get("state") == "running" and not book:
        state.state = "running"  # a run no sweep process records: started by hand, or killed without a trace
    elif before == "interrupted":
        state.state = "interrupted"
    return state


def format_status(sweep_dir: str | Path, states: list[RunState]) -> str:
    """The table `cycleseg sweep status` prints, with a count per state and whether the sweep process lives."""
    counts = {s: sum(r.state == s for r in states) for s in ("finished", "running", IN_USE, "interrupted", "failed",
                                                               "pending")}
    holder = _lock_holder(Path(sweep_dir))
    width = max(8, *(len(r.name) for r in states))
    lines = [f"{sweep_dir}: {len(states)} runs, " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
             + (f"; sweep process {holder} running" if holder else "; no sweep process running"),
             f"{'run':<{width}}  {'state':<11}  detail"]
    lines += [f"{r.name:<{width}}  {r.state:<11}  {r.detail}".rstrip() for r in states]
    return "\n".join(lines)


def _progress(run_dir: Path) -> tuple[int | None, float | None, float | None]:
    """The last logged step and generator loss of a run's log.jsonl, and when it was written."""
    path = run_dir / runs.LOG
    try:
        if not require_file(path):  # a FIFO or device: RunError naming it, never opened (it would block)
            return None, None, None
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            tail = f.read().decode(errors="replace").splitlines()
        updated = path.stat().st_mtime
    except OSError:
        return None, None, None
    step, loss = None, None
    for line in reversed(tail):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the seek or by a crash
        if not isinstance(entry, dict):
            continue
        step = entry.get("step") if step is None else step
        value = next((entry[k] for k in ("loss/G/total", "loss/G/seg") if entry.get(k) is not None), None)
        if value is not None:
            loss = value
            break
    return step, loss, updated


def _ago(when: float) -> str:
    seconds = max(0, time.time() - when)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"
