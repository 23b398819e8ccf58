"""Run a set of configs (the paper's Table 2: configs/paper/) into one sweep folder, once or once per seed.

Each config CONFIG.yaml trains into SWEEP_DIR/CONFIG/ (with `seeds`: into SWEEP_DIR/CONFIG/seed<k>/ for
k = 0..seeds-1, trained with train.seed=k) and is then evaluated on the validation split. Running the same
sweep again skips the finished runs, resumes an interrupted one exactly from its last.pt, and starts the
rest, so a sweep that a scheduler kills can simply be started again.

Runs go one after another in this process (the default), or, with the local launcher, up to `jobs` at once,
each in its own process (`worker_main`, the same per-run logic as in-process: `run_one`), its console output
in SWEEP_DIR/logs/<run>.log. SWEEP_DIR/sweep.json records every run's state, process and times; `sweep_status`
reads it with each run's run.json and log.jsonl (`cycleseg sweep status SWEEP_DIR`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cycleseg import runs
from cycleseg.config import RESUMABLE_KEYS, Config, config_from_dict, flat_items, load_config
from cycleseg.errors import ConfigError, CycleSegError, DataError, Interrupted, RunError, user_message
from cycleseg.commands.monitor import StopSignals
from cycleseg.runs import LAST, write_json

__all__ = ["LAUNCHERS", "LOGS", "SWEEP_FILE", "RunState", "SweepEntry", "expand_runs", "find_configs", "find_runs",
           "format_status", "run_one", "run_status", "run_sweep", "seed_dir", "sweep_status", "worker_main"]

SWEEP_FILE = "sweep.json"
LOCK_FILE = "sweep.lock"
LOGS = "logs"  # SWEEP_DIR/logs/<config>[.seed<k>].log: the console output of each run started by the local launcher
LAUNCHERS = ("inprocess", "local")
MAX_SEEDS = 1000  # a larger --seeds is a typo, not a study: refused before any planning
IN_USE = "in use"  # a run whose lock another process holds: a sweep leaves it alone and says so
EXIT_IN_USE = 75  # worker_main's exit code for a run in use elsewhere (EX_TEMPFAIL: try again later)
_SEED_DIR = re.compile(r"seed(\d+)")
_WORKER = "import sys; from cycleseg.experiments.sweep import worker_main; sys.exit(worker_main(sys.argv[1:]))"


def seed_dir(seed: int) -> str:
    """The folder name of seed `seed`'s run inside a config's folder: seed0, seed1, ..."""
    return f"seed{seed}"


@dataclass
class SweepEntry:
    name: str  # the config's file stem, also the run directory's name
    config: Path
    seed: int | None = None  # None: a sweep without seeds (SWEEP_DIR/NAME/ is the run)

    @property
    def run_name(self) -> str:
        """"quant2", or "quant2/seed1" in a seeded sweep: the run directory relative to the sweep folder."""
        return self.name if self.seed is None else f"{self.name}/{seed_dir(self.seed)}"

    def run_dir(self, sweep_dir: Path) -> Path:
        return Path(sweep_dir) / self.run_name


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
    """"done" (trained and evaluated on val at its last step), "trained" (not evaluated), "interrupted" (created,
    not finished) or "new": the state of runs.summary, which decides it for every reader."""
    return runs.summary(run_dir).state


# ------------------------------------------------------------------------------------------------ the sweep

@dataclass
class _Job:
    index: int  # 1-based position in the sweep
    entry: SweepEntry
    overrides: list[str]  # everything on top of the YAML file: the sweep's overrides, the seed, the SNR source
    cfg: Config
    depends: str | None  # run name of the job this one takes its Gaussian SNR from (trained first)


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
    overrides = list(overrides)
    sweep_dir = Path(sweep_dir)
    entries = _ordered(find_configs(sources, only), overrides)
    extra = overrides + ([f"data.root={data_root}"] if data_root else [])
    check_request(entries, extra, seeds)
    planned = _plan(entries, extra, sweep_dir, seeds)  # every config checked before any training
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise RunError(f"{sweep_dir}: exists and is not a folder; choose another --out")
    _check_layout(sweep_dir, entries, seeds)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with _SweepLock(sweep_dir):
        _check_not_busy(sweep_dir, planned)
        book = _Book(sweep_dir, planned, entries, seeds)
        if launcher == "inprocess":
            return _run_inprocess(planned, sweep_dir, retrain, log, book)
        return _run_local(planned, sweep_dir, retrain, log, book, jobs, gpus or [], threads)


def run_one(cfg: Config, run_dir: Path, sweep_dir: Path, retrain: bool, prefix: str, log=print,
            command: str | None = None) -> str:
    """One run of a sweep: skip it when done, continue it when interrupted or not evaluated, else train it
    (anew with `retrain` when it was made with other settings); then evaluate it on val. Returns the status it
    had before ("done", "trained", "interrupted", "new" or "retrain").

    The whole of it holds the run's lock (`command` describes this process to others): a run that another
    process works on is left alone, runs.RunInUse ("in use elsewhere") before anything is read or written."""
    # create: a new run's folder is made now, so that this process (and its sweep) is named as the holder
    with runs.run_lock(run_dir, command or f"cycleseg sweep {sweep_dir} (run {run_dir.name})", create=True,
                       sweep=sweep_dir):
        return _run_one(cfg, run_dir, sweep_dir, retrain, prefix, log)


def _run_one(cfg: Config, run_dir: Path, sweep_dir: Path, retrain: bool, prefix: str, log) -> str:
    from cycleseg.commands.calibrate import resolve_snr_from  # the training stack is only imported when something runs
    from cycleseg.commands.evaluate import evaluate_run
    from cycleseg.commands.train import train

    cfg = resolve_snr_from(cfg, base_dir=sweep_dir)
    status = run_status(run_dir)
    if status != "new" and _differs(run_dir, cfg, retrain):
        log(f"{prefix} made with other settings; training it anew (--retrain)")
        status = "retrain"
    if status == "done":
        log(f"{prefix} finished, skipped")
        return status
    if status in ("interrupted", "trained"):
        session, saved = runs.resume_config(run_dir, _resumable_overrides(cfg))
        log(f"{prefix} continuing from step {runs.checkpoint_step(run_dir / LAST) or 0}")
        train(session, run_dir, resume=True, run_config=saved)
    else:
        log(f"{prefix} training ({cfg.optim.epochs} epochs at {cfg.data.width}x{cfg.data.height})")
        train(cfg, run_dir, overwrite=status == "retrain")
    log(f"{prefix} evaluating on val")
    evaluate_run(run_dir, cfg.data.root, "val", device=cfg.train.device, progress=cfg.train.progress)
    return status


def check_request(entries: list[SweepEntry], overrides: list[str], seeds: int | None) -> None:
    """What every launcher checks before planning (which loads every config once per seed): the number of seeds,
    no train.seed override beside --seeds, and the first config's data folder (its data.root, or --data)."""
    if seeds is not None and not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds {seeds}: must be 1 to {MAX_SEEDS} (each seed trains every config once more)")
    if seeds is not None and any(o.partition("=")[0].strip() == "train.seed" for o in overrides):
        raise ConfigError("--seeds sets train.seed of each run (0..N-1); drop the train.seed override")
    if entries:
        root = Path(load_config(entries[0].config, overrides).data.root)
        if not root.is_dir():
            raise DataError(f"{root}: data folder not found; pass the dataset with --data (e.g. `cycleseg "
                            "make-synthetic data/synthetic` first) or set data.root in the configs")


def _plan(entries: list[SweepEntry], extra: list[str], sweep_dir: Path, seeds: int | None) -> list[_Job]:
    """One job per config (and seed): seed-major, so that a whole Table 2 of seed 0 is there first."""
    names = {e.name for e in entries}
    planned: list[_Job] = []
    for seed in range(seeds) if seeds is not None else [None]:
        for entry in entries:
            entry = dataclasses.replace(entry, seed=seed)
            job_overrides = extra + ([f"train.seed={seed}"] if seed is not None else [])
            cfg = load_config(entry.config, job_overrides)
            depends = None
            source = _snr_source(cfg)
            if source is not None and not Path(source).is_absolute():
                if seed is not None and (source in names or (sweep_dir / source).is_dir()):
                    # the same seed's run of that config: seed k's Gaussian run takes the SNR of seed k's quantizer
                    target = sweep_dir / source / seed_dir(seed)
                    job_overrides = job_overrides + [f"noise.snr_db={json.dumps(f'from {target}')}"]
                    cfg = load_config(entry.config, job_overrides)
                if source in names and source != entry.name:
                    depends = source if seed is None else f"{source}/{seed_dir(seed)}"
            planned.append(_Job(len(planned) + 1, entry, job_overrides, cfg, depends))
    return planned


def _ordered(entries: list[SweepEntry], overrides: list[str]) -> list[SweepEntry]:
    """`entries` with each config whose SNR comes `from` another config of the sweep after that config (also
    when the `from` is given as an override); otherwise in find_configs' order."""
    names = {e.name for e in entries}
    needs: dict[str, str | None] = {}
    for e in entries:
        source = _snr_source(load_config(e.config, overrides))
        needs[e.name] = source if source in names and source != e.name else None
    done: list[SweepEntry] = []
    left = list(entries)
    while left:
        ready = [e for e in left if needs[e.name] is None or needs[e.name] in {d.name for d in done}]
        if not ready:
            cycle = ", ".join(f"{e.name} from {needs[e.name]}" for e in left)
            raise ConfigError(f"noise.snr_db: the configs take their SNR from each other ({cycle}); one of them "
                              "needs a number")
        done += ready
        left = [e for e in left if e not in ready]
    return done


def _snr_source(cfg: Config) -> str | None:
    snr = cfg.noise.snr_db
    return snr.removeprefix("from ").strip() if isinstance(snr, str) else None


def _check_layout(sweep_dir: Path, entries: list[SweepEntry], seeds: int | None) -> None:
    """A sweep folder holds runs with seeds (NAME/seed<k>/) or without (NAME/), never both for one config."""
    for e in entries:
        folder = sweep_dir / e.name
        if not folder.is_dir():
            continue
        holds_run = any((folder / m).is_file() for m in (runs.STATUS, LAST, runs.CONFIG))
        seeded = any(_SEED_DIR.fullmatch(d.name) and d.is_dir() for d in folder.iterdir())
        if seeds is not None and holds_run:
            raise RunError(f"{folder}: holds a run made without --seeds; run this sweep without --seeds, or "
                           "choose another --out for the seeded one")
        if seeds is None and seeded and not holds_run:
            raise RunError(f"{folder}: holds runs per seed (seed0/, ...) of a sweep made with --seeds; pass "
                           "--seeds again (the same N or more), or choose another --out")


def _check_not_busy(sweep_dir: Path, planned: list[_Job]) -> None:
    """Refuse to start while a run of this sweep is still trained by a process of an earlier sweep (a launcher
    child whose sweep process was killed): two processes must never train one run directory."""
    states = _read_sweep_file(sweep_dir).get("state") or {}
    for job in planned:
        entry = states.get(job.entry.run_name) if isinstance(states, dict) else None
        if (isinstance(entry, dict) and entry.get("state") == "running" and entry.get("host") == socket.gethostname()
                and entry.get("pid") != os.getpid() and _alive(entry.get("pid"))):
            raise RunError(f"{job.entry.run_dir(sweep_dir)}: still being trained by process {entry['pid']} of an "
                           f"earlier sweep; wait for it or stop it (kill {entry['pid']}), then start the sweep again")


def _run_inprocess(planned: list[_Job], sweep_dir: Path, retrain: bool, log, book: _Book) -> list[dict[str, Any]]:
    summary: list[dict[str, Any]] = []
    in_use: list[str] = []
    for job in planned:
        run_dir = job.entry.run_dir(sweep_dir)
        start = time.time()
        book.started(job, os.getpid(), None, start)
        try:
            status = run_one(job.cfg, run_dir, sweep_dir, retrain, _prefix(job, len(planned)), log)
        except runs.RunInUse as e:  # another process works on it: left alone, the other runs go on
            log(f"{_prefix(job, len(planned))} in use elsewhere, left alone: {user_message(e)}")
            book.ended(job, IN_USE, start, error=user_message(e))
            in_use.append(job.entry.run_name)
            continue
        except Interrupted as e:
            book.ended(job, "interrupted", start, error=user_message(e))
            raise
        except BaseException as e:
            book.ended(job, "failed", start, error=user_message(e) or type(e).__name__)
            raise
        summary.append(_summary(job, run_dir, status, start))
        book.ended(job, "skipped" if status == "done" else "finished", start, summary=summary[-1])
    _refuse_in_use(in_use, len(planned), sweep_dir)
    return summary


def _refuse_in_use(in_use: list[str], total: int, sweep_dir: Path) -> None:
    """The sweep ends with an error while runs of it were left to other processes (not finished by it)."""
    if in_use:
        raise RunError(f"{len(in_use)} of {total} runs in use elsewhere ({', '.join(in_use)}): left alone, the others "
                       f"are done; see `cycleseg sweep status {sweep_dir}`, rerun the sweep when they are free")


# ----------------------------------------------------------------------------------------- the local launcher

@dataclass
class _Active:
    job: _Job
    proc: subprocess.Popen
    slot: int
    start: float
    log_path: Path
    status_before: str


def _run_local(planned: list[_Job], sweep_dir: Path, retrain: bool, log, book: _Book, jobs: int, gpus: list[str],
               threads: int | None) -> list[dict[str, Any]]:
    """Up to `jobs` runs at once, each `worker_main` in its own process; dependencies (`from` SNRs) wait."""
    total = len(planned)
    threads = threads or max(1, _cpu_count() // jobs)
    outcome: dict[str, str] = {}  # run name -> done | failed
    summary: list[dict[str, Any]] = []
    queue: list[tuple[_Job, str]] = []
    for job in planned:  # what is finished is skipped here; a differing run stops the sweep before anything starts
        status = _precheck(job, sweep_dir, retrain)
        if status == "done":
            log(f"{_prefix(job, total)} finished, skipped")
            now = time.time()
            summary.append(_summary(job, job.entry.run_dir(sweep_dir), "done", now))
            book.ended(job, "skipped", now, summary=summary[-1])
            outcome[job.entry.run_name] = "done"
        else:
            queue.append((job, status))
    launched = {job.entry.run_name for job, _ in queue}
    (sweep_dir / LOGS).mkdir(exist_ok=True)
    active: dict[int, _Active] = {}
    failures: list[str] = []
    in_use: list[str] = []
    with _StopSignals() as stop:
        while queue or active:
            if stop.signum is None:
                for job, status in list(queue):
                    free = [s for s in range(jobs) if s not in active]
                    if not free:
                        break
                    dep = job.depends
                    if dep in launched and outcome.get(dep) in ("failed", IN_USE):
                        queue.remove((job, status))
                        why = "failed" if outcome[dep] == "failed" else "is in use elsewhere"
                        message = f"not started: it takes its SNR from {dep}, which {why}"
                        log(f"{_prefix(job, total)} {message}")
                        book.ended(job, "failed", time.time(), error=message)
                        outcome[job.entry.run_name] = "failed"
                        failures.append(job.entry.run_name)
                        continue
                    if dep in launched and dep not in outcome:
                        continue  # its SNR source is still training
                    queue.remove((job, status))
                    holder = runs.run_in_use(job.entry.run_dir(sweep_dir))
                    if holder is not None:  # never a second trainer on a run (the worker would be refused too)
                        message = runs.RunInUse.describe(job.entry.run_dir(sweep_dir), holder)
                        log(f"{_prefix(job, total)} in use elsewhere, left alone: {message}")
                        book.ended(job, IN_USE, time.time(), error=message)
                        outcome[job.entry.run_name] = IN_USE
                        in_use.append(job.entry.run_name)
                        continue
                    slot = free[0]
                    gpu = gpus[slot % len(gpus)] if gpus else None
                    active[slot] = _launch(job, status, slot, gpu, threads, sweep_dir, retrain, total, log, book)
            elif not stop.forwarded:
                for a in active.values():  # Ctrl-C reaches them from the terminal too; SIGTERM only us
                    with contextlib.suppress(ProcessLookupError):
                        a.proc.send_signal(signal.SIGTERM)
                stop.forwarded = True
                log(f"stopping: {len(active)} running runs save their last.pt and stop; {len(queue)} not started")
            if stop.count >= 2:
                for a in active.values():
                    with contextlib.suppress(ProcessLookupError):
                        a.proc.kill()
            if stop.signum is not None and not active:
                break
            for slot, a in list(active.items()):
                code = a.proc.poll()
                if code is None:
                    continue
                del active[slot]
                name = a.job.entry.run_name
                state = _finished_child(a, code, stop.signum is not None, sweep_dir, total, log, book, summary)
                outcome[name] = {"finished": "done", IN_USE: IN_USE}.get(state, "failed")
                if state == "failed":
                    failures.append(name)
                elif state == IN_USE:
                    in_use.append(name)
            time.sleep(0.1 if active or queue else 0)
    if stop.signum is not None:
        left = [job.entry.run_name for job, _ in queue]
        raise Interrupted(f"stopped by {signal.Signals(stop.signum).name}; the interrupted runs saved last.pt"
                          + (f", {len(left)} not started" if left else ""), stop.signum)
    if failures:
        raise RunError(f"{len(failures)} of {total} runs failed ({', '.join(failures)}); see `cycleseg sweep status "
                       f"{sweep_dir}` and {sweep_dir / LOGS}/; the others are done, rerun the sweep to retry")
    _refuse_in_use(in_use, total, sweep_dir)
    return summary


def _precheck(job: _Job, sweep_dir: Path, retrain: bool) -> str:
    """run_status of the job's run, refusing (RunError) a run made with other settings unless `retrain`;
    "done" only when that is certain without computing anything (a `from` SNR not yet measured: not known)."""
    run_dir = job.entry.run_dir(sweep_dir)
    status = run_status(run_dir)
    if status == "new":
        return status
    cfg = _resolved_if_measured(job.cfg, sweep_dir)
    if cfg is None:
        return "unknown"  # the worker resolves the SNR, compares and decides
    if _differs(run_dir, cfg, retrain):
        return "retrain"
    return status


def _resolved_if_measured(cfg: Config, sweep_dir: Path) -> Config | None:
    """`cfg` with its `from` SNR resolved when that run's calibrate_val.json exists; None when it does not."""
    source = _snr_source(cfg)
    if source is None:
        return cfg
    from cycleseg.commands.calibrate import calibration_path, resolve_snr_from

    found = next((p for p in (Path(source), sweep_dir / source) if (p / LAST).is_file()), None)
    if found is None or not calibration_path(found).is_file():
        return None
    return resolve_snr_from(cfg, base_dir=sweep_dir)


def _launch(job: _Job, status: str, slot: int, gpu: str | None, threads: int, sweep_dir: Path, retrain: bool,
            total: int, log, book: _Book) -> _Active:
    log_path = _log_path(sweep_dir, job.entry)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    spec = {"config": str(job.entry.config), "overrides": job.overrides, "run_dir": str(job.entry.run_dir(sweep_dir)),
            "sweep_dir": str(sweep_dir), "retrain": retrain, "threads": threads, "prefix": _prefix(job, total)}
    with open(log_path, "a") as out:  # the child holds its own descriptor
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.entry.run_name}: started, torch threads {threads}"
                  + (f", CUDA_VISIBLE_DEVICES={gpu}" if gpu is not None else "") + "\n")
        out.flush()
        proc = subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(spec)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    start = time.time()
    book.started(job, proc.pid, log_path, start, gpu=gpu)
    where = f", GPU {gpu}" if gpu is not None else ""
    what = {"new": "training", "interrupted": "continuing", "trained": "evaluating", "retrain": "training anew"}
    log(f"{_prefix(job, total)} {what.get(status, 'started')} (pid {proc.pid}, {threads} "
        f"thread{'s' if threads > 1 else ''}{where}); log {log_path}")
    return _Active(job, proc, slot, start, log_path, status)


def _finished_child(a: _Active, code: int, stopping: bool, sweep_dir: Path, total: int, log, book: _Book,
                    summary: list[dict[str, Any]]) -> str:
    job, run_dir = a.job, a.job.entry.run_dir(sweep_dir)
    seconds = time.time() - a.start
    prefix = _prefix(job, total)
    if code == 0:
        summary.append(_summary(job, run_dir, a.status_before, a.start))
        book.ended(job, "finished", a.start, summary=summary[-1], exit_code=0)
        results = _results(run_dir)
        psnr = f", PSNR {_num(results['psnr_db'], 2)} dB" if results.get("psnr_db") is not None else ""
        log(f"{prefix} finished in {seconds:.0f} s" + (f": mIoU {_num(results.get('miou'), 1)} %{psnr}" if results
                                                       else ""))
        return "finished"
    error = _last_line(a.log_path)
    if code == EXIT_IN_USE:
        book.ended(job, IN_USE, a.start, error=error, exit_code=code)
        log(f"{prefix} in use elsewhere, left alone: {error.removeprefix('RunInUse: ')}")
        return IN_USE
    if stopping and (code < 0 or code >= 128):
        book.ended(job, "interrupted", a.start, error=error, exit_code=code)
        log(f"{prefix} stopped after {seconds:.0f} s; a rerun continues it")
        return "interrupted"
    book.ended(job, "failed", a.start, error=error, exit_code=code)
    log(f"{prefix} failed (exit {code}) after {seconds:.0f} s: {error}; log {a.log_path}")
    return "failed"


def worker_main(argv: list[str]) -> int:
    """One run of the local launcher, in its own process: argv[0] is the job as JSON (`_launch`). Exit code
    0 (done), 2 (an error the user can fix; its one line last in the log), 128 + signal (stopped, last.pt saved)."""
    spec = json.loads(argv[0])
    threads = int(spec.get("threads") or 0)
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        cfg = load_config(spec["config"], spec["overrides"] + ["train.progress=false"])  # a log file, not a terminal
        run_one(cfg, Path(spec["run_dir"]), Path(spec["sweep_dir"]), spec["retrain"], spec["prefix"],
                log=lambda line: print(line, flush=True))
    except Interrupted as e:
        print(f"error: {user_message(e)}", file=sys.stderr, flush=True)
        return 128 + e.signum
    except runs.RunInUse as e:
        print(f"error: {user_message(e)}", file=sys.stderr, flush=True)
        return EXIT_IN_USE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as e:  # noqa: BLE001 -- the run's own error, its last line in the log for `sweep status`
        if not isinstance(e, CycleSegError):
            import traceback

            traceback.print_exc()
        print(f"error: {type(e).__name__}: {user_message(e)}", file=sys.stderr, flush=True)
        return 2 if isinstance(e, CycleSegError) else 1
    return 0


class _StopSignals(StopSignals):
    """monitor.StopSignals that keeps the first signal and counts them (the second one kills the children) in the
    launcher's loop; `forwarded` marks that the children were told to stop."""

    def __enter__(self) -> _StopSignals:  # noqa: PYI034
        self.count, self.forwarded = 0, False
        super().__enter__()
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signum
        self.count += 1


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _log_path(sweep_dir: Path, entry: SweepEntry) -> Path:
    return sweep_dir / LOGS / (entry.run_name.replace("/", ".") + ".log")


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (the worker writes its error there last)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return (lines[-1].removeprefix("error: ") if lines else "no output")[:500]


# --------------------------------------------------------------------------------------- sweep.json and lock

class _Book:
    """SWEEP_DIR/sweep.json: the runs of this sweep, the ones completed and pending, and each run's state
    (running with its pid, finished, failed with its error and log, the start and end times). Only the sweep
    process writes it; states of runs of earlier invocations are kept."""

    def __init__(self, sweep_dir: Path, planned: list[_Job], entries: list[SweepEntry], seeds: int | None) -> None:
        self.path = sweep_dir / SWEEP_FILE
        previous = _read_sweep_file(sweep_dir)
        self.data: dict[str, Any] = {
            "runs": [j.entry.run_name for j in planned], "configs": [e.name for e in entries], "seeds": seeds,
            "completed": [], "pending": [j.entry.run_name for j in planned], "failed": [],
            "state": previous.get("state", {}) if isinstance(previous.get("state"), dict) else {},
        }
        self._write()

    def started(self, job: _Job, pid: int, log: Path | None, start: float, gpu: str | None = None) -> None:
        self.data["state"][job.entry.run_name] = {
            "state": "running", "pid": pid, "host": socket.gethostname(), "started": start, "ended": None,
            "log": str(log) if log else None, "gpu": gpu, "error": None, "exit": None}
        self._write()

    def ended(self, job: _Job, state: str, start: float, summary: dict[str, Any] | None = None,
              error: str | None = None, exit_code: int | None = None) -> None:
        name = job.entry.run_name
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
    (sweep.json), seeds ascending: SWEEP_DIR/NAME/ (a sweep without seeds) and SWEEP_DIR/NAME/seed<k>/."""
    sweep_dir = Path(sweep_dir)
    data = _read_sweep_file(sweep_dir)
    order = [n.split("/")[0] for n in data.get("configs") or data.get("runs") or []]
    found: list[tuple[str, int | None, Path]] = []
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir()) if sweep_dir.is_dir() else []:
        if (d / runs.CONFIG).is_file():
            found.append((d.name, None, d))
            continue
        for s in d.iterdir():
            match = _SEED_DIR.fullmatch(s.name)
            if match and (s / runs.CONFIG).is_file():
                found.append((d.name, int(match.group(1)), s))
    return sorted(found, key=lambda r: (order.index(r[0]) if r[0] in order else len(order), r[0], r[1] or 0))


def expand_runs(paths: list[Path]) -> list[tuple[str, int | None, Path]]:
    """What `cycleseg table` and `report` take, as (config name, seed or None, run directory): each path a run
    directory (NAME/ or NAME/seed<k>/), a config's folder of seeds (NAME/ holding seed<k>/), or a sweep folder."""
    out: list[tuple[str, int | None, Path]] = []
    for path in map(Path, paths):
        if any((path / m).is_file() for m in (runs.CONFIG, runs.STATUS, LAST, runs.METRICS)):  # a run directory
            match = _SEED_DIR.fullmatch(path.name)
            out.append((path.parent.name, int(match.group(1)), path) if match else (path.name, None, path))
            continue
        seeds = sorted((int(m.group(1)), d) for d in (path.iterdir() if path.is_dir() else [])
                       if (m := _SEED_DIR.fullmatch(d.name)) and (d / runs.CONFIG).is_file())
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
        run_name = name if seed is None else f"{name}/{seed_dir(seed)}"
        if run_name not in names:
            names.append(run_name)
    if not names:
        raise RunError(f"{sweep_dir}: no sweep.json and no run directories in it; is it a sweep folder?")
    return [_state_of(sweep_dir, name, book.get(name) or {}) for name in names]


def _state_of(sweep_dir: Path, name: str, book: dict[str, Any]) -> RunState:
    run_dir = sweep_dir / name
    state = RunState(name, run_dir, "pending", log=book.get("log"))
    try:
        status = runs.read_status(run_dir)
        before = run_status(run_dir)
    except RunError as e:
        state.state, state.error = "failed", user_message(e)
        return state
    state.step, state.loss, state.updated = _progress(run_dir)
    if state.step is None and status.get("step"):
        state.step = status.get("step")
    live = book.get("state") == "running" and book.get("host") == socket.gethostname() and _alive(book.get("pid"))
    holder = runs.run_in_use(run_dir)  # a probe: never waits, takes nothing
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
        with open(path, "rb") as f:
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


def _results(run_dir: Path) -> dict[str, Any]:
    """The run's results that count on val (runs.summary: a fresh eval_val.json, else metrics.json); {} when it
    has none or they are unreadable (the status table shows what it can)."""
    with contextlib.suppress(RunError):
        return runs.summary(run_dir).results or {}
    return {}


def _ago(when: float) -> str:
    seconds = max(0, time.time() - when)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def _num(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


# ------------------------------------------------------------------------------------------------- helpers

def _prefix(job: _Job, total: int) -> str:
    return f"[{job.index}/{total}] {job.entry.run_name}:"


def _summary(job: _Job, run_dir: Path, status: str, start: float) -> dict[str, Any]:
    return {"name": job.entry.run_name, "config": str(job.entry.config), "run_dir": str(run_dir),
            "seed": job.entry.seed, "status_before": status, "seconds": round(time.time() - start, 1)}


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
