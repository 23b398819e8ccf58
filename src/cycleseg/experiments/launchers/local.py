"""The local launcher (`cycleseg sweep --launcher local --jobs N`): each run in its own process (`worker_main`,
which is `execute.run_one`), up to `jobs` at once, each with its torch threads (and its CUDA_VISIBLE_DEVICES
with `gpus`), its console output in SWEEP_DIR/logs/<run>.log. A run whose SNR is taken `from` another run waits
for that run. SIGINT/SIGTERM: the running runs save their last.pt and stop (a second signal kills them)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cycleseg import runs
from cycleseg.commands.monitor import StopSignals
from cycleseg.errors import CycleSegError, Interrupted, RunError, user_message
from cycleseg.experiments import plan
from cycleseg.experiments.launchers import EXIT_IN_USE, IN_USE, Sweep, execute
from cycleseg.experiments.plan import RunSpec
from cycleseg.fileio import make_folder, open_for_writing, require_file

__all__ = ["LOGS", "launch", "worker_main"]

LOGS = "logs"  # SWEEP_DIR/logs/<config>[.seed<k>].log: the console output of each run started by this launcher
_WORKER = "import sys; from cycleseg.experiments.launchers.local import worker_main; sys.exit(worker_main(sys.argv[1:]))"
_WHAT = {"new": "training", "interrupted": "continuing", "trained": "evaluating", "retrain": "training anew"}


@dataclass
class _Active:
    spec: RunSpec
    proc: subprocess.Popen
    start: float
    log_path: Path
    status_before: str


@dataclass
class _State:
    """The launcher's bookkeeping while it runs: what waits, what runs in which slot, how each run ended."""

    queue: list[tuple[RunSpec, str]]  # (spec, status before) not started yet, in plan order
    launched: set[str]  # the runs this launcher starts (a dependency outside it is not waited for)
    active: dict[int, _Active] = field(default_factory=dict)  # slot -> running process
    outcome: dict[str, str] = field(default_factory=dict)  # run name -> done | failed | in use
    done: list[dict[str, Any]] = field(default_factory=list)  # summaries
    failures: list[str] = field(default_factory=list)
    in_use: list[str] = field(default_factory=list)


def launch(specs: list[RunSpec], sweep: Sweep) -> list[dict[str, Any]]:
    """Up to `sweep.jobs` runs at once, each `worker_main` in its own process; dependencies (`from` SNRs) wait."""
    total = len(specs)
    threads = sweep.threads or max(1, _cpu_count() // sweep.jobs)
    state = _skip_done(specs, sweep)
    make_folder(sweep.sweep_dir / LOGS, sweep.sweep_dir)  # never a logs/ linked elsewhere
    with _StopSignals() as stop:
        while state.queue or state.active:
            if stop.signum is None:
                _start_ready(state, sweep, threads, total)
            elif not stop.forwarded:
                for a in state.active.values():  # Ctrl-C reaches them from the terminal too; SIGTERM only us
                    with contextlib.suppress(ProcessLookupError):
                        a.proc.send_signal(signal.SIGTERM)
                stop.forwarded = True
                sweep.log(f"stopping: {len(state.active)} running runs save their last.pt and stop; "
                          f"{len(state.queue)} not started")
            if stop.count >= 2:
                for a in state.active.values():
                    with contextlib.suppress(ProcessLookupError):
                        a.proc.kill()
            if stop.signum is not None and not state.active:
                break
            _reap(state, sweep, stop.signum is not None, total)
            time.sleep(0.1 if state.active or state.queue else 0)
    if stop.signum is not None:
        left = [spec.name for spec, _ in state.queue]
        raise Interrupted(f"stopped by {signal.Signals(stop.signum).name}; the interrupted runs saved last.pt"
                          + (f", {len(left)} not started" if left else ""), stop.signum)
    if state.failures:
        raise RunError(f"{len(state.failures)} of {total} runs failed ({', '.join(state.failures)}); see `cycleseg "
                       f"sweep status {sweep.sweep_dir}` and {sweep.sweep_dir / LOGS}/; the others are done, rerun "
                       "the sweep to retry")
    execute.refuse_in_use(state.in_use, total, sweep.sweep_dir)
    return state.done


def _skip_done(specs: list[RunSpec], sweep: Sweep) -> _State:
    """Decide every run before anything starts (plan.decide, computing nothing): the finished ones are skipped
    here, a run made with other settings stops the sweep (RunError) unless `retrain`."""
    state = _State([], set())
    for spec in specs:
        action = plan.decide(spec, sweep.retrain, measure=False)
        if action == "done":
            sweep.log(f"{execute.prefix(spec, len(specs))} finished, skipped")
            now = time.time()
            state.done.append(execute.summary(spec, "done", now))
            sweep.book.ended(spec, "skipped", now, summary=state.done[-1])
            state.outcome[spec.name] = "done"
        else:
            state.queue.append((spec, plan.status_before(spec, action)))
    state.launched = {spec.name for spec, _ in state.queue}
    return state


def _start_ready(state: _State, sweep: Sweep, threads: int, total: int) -> None:
    """Start the queued runs whose dependency has ended, while slots are free; fail those whose dependency failed."""
    for spec, status in list(state.queue):
        free = [s for s in range(sweep.jobs) if s not in state.active]
        if not free:
            break
        dep, prefix = spec.depends_on, execute.prefix(spec, total)
        if dep in state.launched and state.outcome.get(dep) in ("failed", IN_USE):
            state.queue.remove((spec, status))
            why = "failed" if state.outcome[dep] == "failed" else "is in use elsewhere"
            message = f"not started: it takes its SNR from {dep}, which {why}"
            sweep.log(f"{prefix} {message}")
            sweep.book.ended(spec, "failed", time.time(), error=message)
            state.outcome[spec.name] = "failed"
            state.failures.append(spec.name)
            continue
        if dep in state.launched and dep not in state.outcome:
            continue  # its SNR source is still training
        state.queue.remove((spec, status))
        holder = runs.run_in_use(spec.run_dir)
        if holder is not None:  # never a second trainer on a run (the worker would be refused too)
            message = runs.RunInUse.describe(spec.run_dir, holder)
            sweep.log(f"{prefix} in use elsewhere, left alone: {message}")
            sweep.book.ended(spec, IN_USE, time.time(), error=message)
            state.outcome[spec.name] = IN_USE
            state.in_use.append(spec.name)
            continue
        slot = free[0]
        gpu = sweep.gpus[slot % len(sweep.gpus)] if sweep.gpus else None
        state.active[slot] = _start(spec, status, gpu, threads, sweep, total)


def _reap(state: _State, sweep: Sweep, stopping: bool, total: int) -> None:
    """Collect the runs whose process has ended."""
    for slot, a in list(state.active.items()):
        code = a.proc.poll()
        if code is None:
            continue
        del state.active[slot]
        ended = _ended(a, code, stopping, sweep, total, state.done)
        state.outcome[a.spec.name] = {"finished": "done", IN_USE: IN_USE}.get(ended, "failed")
        if ended == "failed":
            state.failures.append(a.spec.name)
        elif ended == IN_USE:
            state.in_use.append(a.spec.name)


def _start(spec: RunSpec, status: str, gpu: str | None, threads: int, sweep: Sweep, total: int) -> _Active:
    log_path = sweep.sweep_dir / LOGS / (spec.name.replace("/", ".") + ".log")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    job = {"config": str(spec.config_path), "overrides": list(spec.overrides), "run_dir": str(spec.run_dir),
           "sweep_dir": str(sweep.sweep_dir), "retrain": sweep.retrain, "threads": threads,
           "prefix": execute.prefix(spec, total), "name": spec.name}
    # the child holds its own descriptor; never through a link planted at the log's name (fileio)
    with os.fdopen(open_for_writing(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a") as out:
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {spec.name}: started, torch threads {threads}"
                  + (f", CUDA_VISIBLE_DEVICES={gpu}" if gpu is not None else "") + "\n")
        out.flush()
        proc = subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(job)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    start = time.time()
    sweep.book.started(spec, proc.pid, log_path, start, gpu=gpu)
    where = f", GPU {gpu}" if gpu is not None else ""
    sweep.log(f"{execute.prefix(spec, total)} {_WHAT.get(status, 'started')} (pid {proc.pid}, {threads} "
              f"thread{'s' if threads > 1 else ''}{where}); log {log_path}")
    return _Active(spec, proc, start, log_path, status)


def _ended(a: _Active, code: int, stopping: bool, sweep: Sweep, total: int, done: list[dict[str, Any]]) -> str:
    """Record how a run's process ended: "finished", IN_USE, "interrupted" or "failed"."""
    spec, book = a.spec, sweep.book
    seconds = time.time() - a.start
    prefix = execute.prefix(spec, total)
    if code == 0:
        done.append(execute.summary(spec, a.status_before, a.start))
        book.ended(spec, "finished", a.start, summary=done[-1], exit_code=0)
        results = execute.results(spec.run_dir)
        psnr = f", PSNR {execute.num(results['psnr_db'], 2)} dB" if results.get("psnr_db") is not None else ""
        sweep.log(f"{prefix} finished in {seconds:.0f} s"
                  + (f": mIoU {execute.num(results.get('miou'), 1)} %{psnr}" if results else ""))
        return "finished"
    error = _last_line(a.log_path)
    if code == EXIT_IN_USE:
        book.ended(spec, IN_USE, a.start, error=error, exit_code=code)
        sweep.log(f"{prefix} in use elsewhere, left alone: {error.removeprefix('RunInUse: ')}")
        return IN_USE
    if stopping and (code < 0 or code >= 128):
        book.ended(spec, "interrupted", a.start, error=error, exit_code=code)
        sweep.log(f"{prefix} stopped after {seconds:.0f} s; a rerun continues it")
        return "interrupted"
    book.ended(spec, "failed", a.start, error=error, exit_code=code)
    sweep.log(f"{prefix} failed (exit {code}) after {seconds:.0f} s: {error}; log {a.log_path}")
    return "failed"


def worker_main(argv: list[str]) -> int:
    """One run of the local launcher, in its own process: argv[0] is the run as JSON (`_start`). Exit code
    0 (done), 2 (an error the user can fix; its one line last in the log), 128 + signal (stopped, last.pt saved)."""
    job = json.loads(argv[0])
    threads = int(job.get("threads") or 0)
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        run_dir, sweep_dir = Path(job["run_dir"]), Path(job["sweep_dir"])
        spec = RunSpec.load(job.get("name") or run_dir.name, job["config"],
                            [*job["overrides"], "train.progress=false"], run_dir, sweep_dir)  # a log, not a terminal
        execute.run_one(spec, job["retrain"], job["prefix"], log=lambda line: print(line, flush=True))
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


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (the worker writes its error there last)."""
    try:
        if not require_file(path):
            return "no log"
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:  # never blocks on a FIFO
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except (OSError, RunError):
        return "no log"
    return (lines[-1].removeprefix("error: ") if lines else "no output")[:500]
