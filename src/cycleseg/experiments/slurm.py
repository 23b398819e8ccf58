"""Sweeps on a Slurm cluster, the Slurm launcher: one job-array task per run, requeued on preemption or time
limit (submitit).

`sweep_tasks()` takes the runs of `plan.plan` (configs, seeds, the same folders and order as `cycleseg sweep`)
as `SlurmTask`s; `submit_sweep()` submits the runs that are neither finished (`plan.decide`) nor already in
Slurm's queue as one job array (`max_parallel` at a time), a run whose SNR is taken `from` another run in a later
array that waits for that run's job, and records each run's job in FOLDER/slurm/jobs.json, so that submitting
the same sweep again never starts a run twice. What each array task runs (`SlurmRun`: the per-run logic of
`cycleseg sweep`, also on several GPUs with torchrun, and what it does on SIGUSR2 and SIGTERM) is in
`launchers.slurm_job`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cycleseg.errors import ConfigError, RunError
from cycleseg.experiments import plan
from cycleseg.experiments.launchers.slurm_job import SlurmRun, SlurmTask, main
from cycleseg.fileio import make_folder, open_for_writing

__all__ = ["JOBS_FILE", "SlurmRun", "SlurmTask", "Submitted", "job_states", "parse_time", "submit_sweep",
           "sweep_jobs", "sweep_tasks"]

JOBS_FILE = "jobs.json"  # FOLDER/slurm/jobs.json: run name -> the Slurm job that trains it
# States of a job that is over (anything else, PENDING, RUNNING, REQUEUED, SUSPENDED, ..., counts as active).
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
         "OUT_OF_MEMORY", "REVOKED"}


def sweep_tasks(configs: Iterable[Any], sweep_dir: str | Path, overrides: Sequence[str] = (),
                data_root: str | Path | None = None, seeds: Sequence[int] | None = None,
                retrain: bool = False) -> list[SlurmTask]:
    """One task per run, as `cycleseg sweep` lays them out and orders them (`plan.plan`): SWEEP_DIR/NAME for each
    config (YAML paths or `plan.find_configs` entries), or with `seeds` SWEEP_DIR/NAME/seed<k> with the override
    train.seed=k, seed by seed. With seeds, a `noise.snr_db: from OTHER` that names a config of the sweep (or a
    folder in SWEEP_DIR) becomes `from SWEEP_DIR/OTHER/seed<k>`: seed k's run takes the SNR of seed k's OTHER
    (and `depends_on` names that run)."""
    root = [f"data.root={Path(data_root).absolute()}"] if data_root else []
    specs = plan.plan(list(configs), Path(sweep_dir).absolute(), [*overrides, *root], seeds)
    return [SlurmTask.of(spec, retrain) for spec in specs]


def parse_time(value: float | str) -> int:
    """A Slurm time limit in minutes: 90, "90", "1:30:00" (H:M:S), "2-00:00:00" (D-H:M:S), "1-12" (D-H)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        minutes = int(value)
    else:
        text = str(value).strip()
        match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
        if not match:
            raise ConfigError(f"--time {value!r}: expected minutes or [D-]H:M:S, e.g. 240 or 4:00:00 or 1-12:00:00")
        days, a, b, c = (int(g) if g else None for g in match.groups())
        if days is not None:  # D-H, D-H:M, D-H:M:S
            minutes = days * 1440 + a * 60 + (b or 0) + ((c or 0) + 59) // 60
        elif b is None:  # M
            minutes = a
        elif c is None:  # M:S
            minutes = a + (b + 59) // 60
        else:  # H:M:S
            minutes = a * 60 + b + (c + 59) // 60
    if minutes < 1:
        raise ConfigError(f"--time {value!r}: must be at least one minute")
    return minutes


@dataclass
class Submitted:
    """What `submit_sweep` did with one task."""

    task: SlurmTask
    state: str  # "submitted", "queued" (already in Slurm's queue: not submitted again), "finished" or "in use"
    # (another process holds the run's lock: not submitted)
    job_id: str | None = None
    job: Any = None  # the submitit Job, for a task submitted by this call


def submit_sweep(tasks: Sequence[SlurmTask], folder: str | Path, partition: str | None = None,
                 gpus_per_run: int = 0, cpus_per_run: int = 1, time: int | str = 60, max_parallel: int = 4, *,
                 account: str | None = None, qos: str | None = None, mem_gb: float | None = None,
                 signal_delay_s: int = 120, max_requeues: int = 10, setup: Sequence[str] = (),
                 sbatch: dict[str, Any] | None = None, log=print) -> list[Submitted]:
    """Submit the runs of `tasks` that are not finished and not queued yet as one Slurm job array.

    `folder` is the sweep folder: submitit's job files and logs go to FOLDER/slurm/<jobid>/, and
    FOLDER/slurm/jobs.json records the job of each run. Per run: `gpus_per_run` GPUs (> 1: torchrun, one
    process per GPU) and `cpus_per_run` CPUs on one node, a time limit of `time` (minutes or [D-]H:M:S);
    `max_parallel` runs at a time. SIGUSR2 comes `signal_delay_s` before the time limit: the run then saves
    last.pt and is requeued, at most `max_requeues` times for time limits (preemptions do not count). A run
    whose `noise.snr_db` comes `from` another run of the sweep waits for that run's job (a second array with
    a dependency). `setup`: shell lines run before each task (module load ...); `sbatch`: further sbatch
    options, e.g. {"constraint": "a100"}. Returns what happened to each task, in order.
    """
    try:
        import submitit
    except ImportError:
        raise RunError("Slurm sweeps need submitit: pip install 'cycleseg[slurm]'") from None
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:  # submitit would stop with a traceback ('Could not detect "srun"')
        raise RunError(f"--launcher slurm: no Slurm on this machine ({' and '.join(missing)} not found on PATH); "
                       "submit from a Slurm login node, or use --launcher local")
    if gpus_per_run < 0 or cpus_per_run < 1 or max_parallel < 1:
        raise ConfigError(f"gpus_per_run {gpus_per_run}, cpus_per_run {cpus_per_run}, max_parallel {max_parallel}: "
                          "need gpus >= 0, cpus >= 1, max_parallel >= 1")
    minutes = parse_time(time)
    names = [t.name for t in tasks]
    runs_ = [str(Path(t.run_dir).absolute()) for t in tasks]
    for what, values in (("name", names), ("run folder", runs_)):
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise ConfigError(f"tasks with the same {what} {', '.join(dup)}: each run needs its own")
    slurm_dir = Path(folder) / "slurm"
    make_folder(slurm_dir, folder)  # never a slurm/ linked elsewhere
    launch = {"gpus": gpus_per_run, "stop_timeout_s": max(10, signal_delay_s - 30)}
    with _locked(slurm_dir / ".lock"):  # two submitters of one sweep at once: one after the other
        ledger = _read_ledger(slurm_dir)
        outcome, todo = _triage(tasks, ledger, log)
        executor = submitit.SlurmExecutor(folder=slurm_dir / "%j", max_num_timeout=max_requeues)
        params = {"time": minutes, "nodes": 1, "ntasks_per_node": 1, "cpus_per_task": cpus_per_run,
                  "signal_delay_s": signal_delay_s, "job_name": "cycleseg-sweep", "setup": list(setup) or None,
                  "partition": partition, "account": account, "qos": qos, "gpus_per_node": gpus_per_run or None,
                  "mem": f"{int(mem_gb * 1024)}MB" if mem_gb else None}
        for wave, dependencies in _waves(todo, tasks, outcome):
            extra = dict(sbatch or {})
            if dependencies:  # afterany: a failed source run fails its dependants with a clear message
                extra["dependency"] = "afterany:" + ":".join(sorted(dependencies))
            executor.update_parameters(**{k: v for k, v in params.items() if v is not None},
                                       array_parallelism=max_parallel, additional_parameters=extra)
            jobs = executor.map_array(SlurmRun(launch), wave)
            for task, job in zip(wave, jobs, strict=True):
                outcome[task.name] = Submitted(task, "submitted", job.job_id, job)
                ledger[task.name] = {"job_id": job.job_id, "run_dir": str(Path(task.run_dir).absolute()),
                                     "submitted": _now(), "logs": str(slurm_dir / job.job_id)}
                log(f"{task.name}: submitted as job {job.job_id}"
                    + (f" (after {extra['dependency']})" if dependencies else ""))
            _write_ledger(slurm_dir, ledger)
    return [outcome[t.name] for t in tasks]


def _triage(tasks: Sequence[SlurmTask], ledger: dict[str, Any], log) -> tuple[dict[str, Submitted], list[SlurmTask]]:
    """What becomes of each task before anything is submitted: "queued" (its job in jobs.json is still active),
    "in use" (another process holds its run's lock), "finished" (`plan.decide`: done, computing nothing); the
    rest is to submit. A run made with other settings: RunError unless retrain (no job submitted yet)."""
    from cycleseg import runs

    states = job_states([ledger[t.name]["job_id"] for t in tasks if t.name in ledger])
    outcome: dict[str, Submitted] = {}
    todo = []
    for task in tasks:
        job_id = ledger.get(task.name, {}).get("job_id")
        if job_id and states.get(job_id, "UNKNOWN") not in ENDED:
            outcome[task.name] = Submitted(task, "queued", job_id)
            log(f"{task.name}: already in the queue as job {job_id} ({states.get(job_id, 'UNKNOWN')}), "
                "not submitted again")
        elif (holder := runs.run_in_use(task.run_dir)) is not None:  # never a second trainer on a run
            outcome[task.name] = Submitted(task, "in use", job_id)
            log(f"{task.name}: in use elsewhere, not submitted: {runs.RunInUse.describe(task.run_dir, holder)}")
        elif plan.decide(task.spec(), task.retrain, measure=False) == "done":
            outcome[task.name] = Submitted(task, "finished", job_id)
            log(f"{task.name}: finished, skipped")
        else:
            todo.append(task)
    return outcome, todo


def _waves(todo: list[SlurmTask], tasks: Sequence[SlurmTask], outcome: dict[str, Submitted]):
    """Yield (tasks, job ids they wait for), one job array each. A task whose `depends_on` run is trained by a
    job of this sweep (queued before, or submitted in an earlier array) goes into a later array that depends on
    those jobs; the caller records each array's jobs in `outcome` before taking the next."""
    by_name = {t.name: t for t in tasks}
    source = {t.name: by_name.get(t.depends_on) for t in todo if t.depends_on}
    left = list(todo)
    while left:
        waiting = {t.name for t in left}
        wave = [t for t in left if source.get(t.name) is None or source[t.name].name not in waiting]
        if not wave:
            raise ConfigError("noise.snr_db 'from' runs form a cycle: " + ", ".join(t.name for t in left))
        deps = {outcome[src.name].job_id for src in (source.get(t.name) for t in wave)
                if src is not None and src.name in outcome and outcome[src.name].state in ("submitted", "queued")}
        yield wave, deps
        left = [t for t in left if t not in wave]


def sweep_jobs(folder: str | Path) -> list[dict[str, Any]]:
    """The runs that FOLDER/slurm/jobs.json records: name, job_id, Slurm's state of that job (squeue, else sacct;
    UNKNOWN when neither knows it) and the run folder's state (plan.run_status)."""
    ledger = _read_ledger(Path(folder) / "slurm")
    states = job_states([e["job_id"] for e in ledger.values()])
    return [{"name": name, "job_id": e["job_id"], "slurm_state": states.get(e["job_id"], "UNKNOWN"),
             "run": plan.run_status(Path(e["run_dir"]))} for name, e in ledger.items()]


def job_states(job_ids: Iterable[str]) -> dict[str, str]:
    """Slurm's state of each job id ("123" or an array task "123_4"): from squeue while Slurm holds the job,
    from sacct after it; ids neither knows are left out."""
    wanted = set(job_ids)
    if not wanted:
        return {}
    found: dict[str, str] = {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-u", _user()], capture_output=True, text=True,
                             timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RunError(f"squeue failed ({e}); is this a Slurm login node?") from None
    if out.returncode != 0:
        raise RunError(f"squeue failed: {' '.join(out.stderr.split())}")
    for line in out.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id in wanted:
            found[job_id] = state
    rest = sorted(wanted - set(found))
    if rest:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):  # no accounting: unknown, taken as ended
            out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(rest)],
                                 capture_output=True, text=True, timeout=60, check=False)
            for line in out.stdout.splitlines() if out.returncode == 0 else []:
                job_id, _, state = line.strip().partition("|")
                if job_id in wanted and job_id not in found:
                    found[job_id] = state.split()[0] if state else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
    return found


def _user() -> str:
    import getpass

    return getpass.getuser()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@contextlib.contextmanager
def _locked(path: Path):
    with os.fdopen(open_for_writing(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_ledger(slurm_dir: Path) -> dict[str, Any]:
    path = slurm_dir / JOBS_FILE
    if not path.is_file():
        return {}
    from cycleseg.runs import read_json

    return read_json(path)


def _write_ledger(slurm_dir: Path, ledger: dict[str, Any]) -> None:
    from cycleseg.runs import write_json

    write_json(slurm_dir / JOBS_FILE, ledger)


if __name__ == "__main__":  # `python -m cycleseg.experiments.slurm run|train TASK`: as launchers.slurm_job
    sys.exit(main())
