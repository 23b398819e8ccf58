"""Sweeps on a Slurm cluster: one job-array task per run, requeued on preemption or time limit (submitit).

`sweep_tasks()` turns configs (and seeds) into `SlurmTask`s, one per run directory; `submit_sweep()` submits
the runs that are neither finished nor already in Slurm's queue as one job array (`max_parallel` at a time),
and records each run's job in FOLDER/slurm/jobs.json, so that submitting the same sweep again never starts a
run twice. Each array task runs `SlurmRun` in submitit's job process, which starts the work in a child process
(so that it can stop it at a safe point when a signal comes) and waits:

- one process (gpus_per_run <= 1): `python -m cycleseg.experiments.slurm run TASK`, which is `sweep.run_one`, the per-run
  logic of `cycleseg sweep`: skip a finished run, continue an interrupted one exactly from last.pt, train a
  new one (a run made with other settings: error, or anew with `retrain`), then evaluate it on val;
- gpus_per_run = N > 1: the job process decides as run_one would (`_plan`), `torchrun --standalone
  --nproc-per-node N -m cycleseg.experiments.slurm train --mode new|resume|retrain TASK` trains (one node, one process
  per GPU), then `cycleseg.experiments.slurm run` finds the run trained and evaluates it.

The job returns a summary (name, status before, job id, mIoU, PSNR, SNR, seconds): `job.result()`.

Signals (Slurm sends them to every process of the job; submitit's handlers run in the job process):

- SIGUSR2, submitit's `--signal=USR2@signal_delay_s` before the time limit, and what `job._interrupt()`
  sends for a preemption: submitit calls `SlurmRun.checkpoint()`, which sends SIGTERM to the training
  process, waits until it has written last.pt at the end of its current iteration and exited, and returns the
  same task; submitit then runs `scontrol requeue`. The requeued task finds the run interrupted and continues
  it exactly from last.pt. The training processes ignore SIGUSR2 (its default action would kill them).
- SIGTERM (a preemption that Slurm requeues itself, `scontrol requeue`, `scancel`): the training process
  saves last.pt and exits with 143; the job process records the signal and waits for Slurm's SIGKILL (it
  writes no result, so submitit does not take the job for finished). A requeued job then resumes as above,
  a cancelled one stays CANCELLED and continues from last.pt when the sweep is submitted again.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cycleseg.errors import ConfigError, CycleSegError, Interrupted, RunError

try:
    from submitit.helpers import Checkpointable
except ImportError:  # the [slurm] extra is not installed; submit_sweep says so
    Checkpointable = object

__all__ = ["JOBS_FILE", "SlurmRun", "SlurmTask", "Submitted", "job_states", "parse_time", "submit_sweep",
           "sweep_jobs", "sweep_tasks"]

JOBS_FILE = "jobs.json"  # FOLDER/slurm/jobs.json: run name -> the Slurm job that trains it
# States of a job that is over (anything else, PENDING, RUNNING, REQUEUED, SUSPENDED, ..., counts as active).
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
         "OUT_OF_MEMORY", "REVOKED"}
_STOP_WAIT_S = 300  # after SIGTERM, how long the job process waits for Slurm to end it
_EXIT_IN_USE = 75  # a task's child found its run locked by another process (as sweep.EXIT_IN_USE)


@dataclass(frozen=True)
class SlurmTask:
    """One run of a sweep, as an array task sees it (small and picklable)."""

    name: str  # the run's name in the sweep, e.g. "quant2" or "quant2/seed1"; the key in jobs.json
    config: str  # YAML config file
    run_dir: str  # the run directory
    overrides: tuple[str, ...] = ()  # KEY=VALUE overrides, e.g. train.seed=1
    data_root: str | None = None  # overrides data.root
    base_dir: str | None = None  # where `noise.snr_db: from NAME` looks for NAME (the sweep folder)
    retrain: bool = False  # a run in run_dir made with other settings is trained anew (default: error)

    def all_overrides(self) -> list[str]:
        return [*self.overrides, *([f"data.root={self.data_root}"] if self.data_root else [])]


def sweep_tasks(configs: Iterable[Any], sweep_dir: str | Path, overrides: Sequence[str] = (),
                data_root: str | Path | None = None, seeds: Sequence[int] | None = None,
                retrain: bool = False) -> list[SlurmTask]:
    """One task per run, as `cycleseg sweep` lays them out: SWEEP_DIR/NAME for each config (YAML paths or
    `sweep.find_configs` entries), or with `seeds` SWEEP_DIR/NAME/seed<k> with the override train.seed=k, seed by
    seed. With seeds, a `noise.snr_db: from OTHER` that names a config of the sweep (or a folder in SWEEP_DIR)
    becomes `from SWEEP_DIR/OTHER/seed<k>`: seed k's run takes the SNR of seed k's OTHER."""
    sweep_dir = Path(sweep_dir).absolute()
    entries = [(Path(e), Path(e).stem) if isinstance(e, (str, os.PathLike)) else (Path(e.config), e.name)
               for e in configs]
    names = {name for _, name in entries}
    root = [f"data.root={Path(data_root).absolute()}"] if data_root else []
    tasks = []
    for seed in [None] if seeds is None else seeds:
        for path, name in entries:
            common = {"config": str(path.absolute()), "base_dir": str(sweep_dir), "retrain": retrain}
            if seed is None:
                tasks.append(SlurmTask(name, run_dir=str(sweep_dir / name), overrides=(*overrides, *root), **common))
                continue
            extra = [f"train.seed={seed}"]
            source = _snr_from(path, overrides)
            if source and not Path(source).is_absolute() and (source in names or (sweep_dir / source).is_dir()):
                target = sweep_dir / source / f"seed{seed}"
                extra.append(f"noise.snr_db={json.dumps(f'from {target}')}")
            tasks.append(SlurmTask(f"{name}/seed{seed}", run_dir=str(sweep_dir / name / f"seed{seed}"),
                                   overrides=(*overrides, *root, *extra), **common))
    return tasks


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
    from cycleseg import runs
    from cycleseg.experiments.sweep import run_status

    slurm_dir = Path(folder) / "slurm"
    slurm_dir.mkdir(parents=True, exist_ok=True)
    launch = {"gpus": gpus_per_run, "stop_timeout_s": max(10, signal_delay_s - 30)}
    with _locked(slurm_dir / ".lock"):  # two submitters of one sweep at once: one after the other
        ledger = _read_ledger(slurm_dir)
        recorded = [ledger[t.name]["job_id"] for t in tasks if t.name in ledger]
        states = job_states(recorded)
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
            elif _done(task, run_status(Path(task.run_dir))):
                outcome[task.name] = Submitted(task, "finished", job_id)
                log(f"{task.name}: finished, skipped")
            else:
                todo.append(task)  # a run made with other settings: RunError above unless retrain (no job yet)
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


def _done(task: SlurmTask, status: str) -> bool:
    """A finished and evaluated run made with the settings the task asks for (compared without computing: a
    `snr_db: from` SNR is compared by the job, after it resolved it)."""
    if status == "new":
        return False
    from cycleseg.config import load_config

    cfg = load_config(task.config, task.all_overrides())
    if isinstance(cfg.noise.snr_db, str):
        return False if task.retrain else status == "done"
    return not _other_settings(task, cfg) and status == "done"


def sweep_jobs(folder: str | Path) -> list[dict[str, Any]]:
    """The runs that FOLDER/slurm/jobs.json records: name, job_id, Slurm's state of that job (squeue, else sacct;
    UNKNOWN when neither knows it) and the run folder's state (sweep.run_status)."""
    from cycleseg.experiments.sweep import run_status

    ledger = _read_ledger(Path(folder) / "slurm")
    states = job_states([e["job_id"] for e in ledger.values()])
    return [{"name": name, "job_id": e["job_id"], "slurm_state": states.get(e["job_id"], "UNKNOWN"),
             "run": run_status(Path(e["run_dir"]))} for name, e in ledger.items()]


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


class SlurmRun(Checkpointable):
    """The callable of every array task: train (or continue) one run, then evaluate it; requeued by submitit
    on SIGUSR2 (`submitit.helpers.Checkpointable`: `checkpoint` returns the same call)."""

    def __init__(self, launch: dict[str, Any]) -> None:
        self.launch = launch  # {"gpus": per run, "stop_timeout_s": how long a stop may take}
        self._reset()

    def _reset(self) -> None:
        self._child: subprocess.Popen | None = None
        self._exited = threading.Event()
        self._stop_signal: int | None = None  # SIGTERM / SIGUSR2 received by this process

    def __getstate__(self) -> dict[str, Any]:
        return {"launch": self.launch}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.launch = state["launch"]
        self._reset()

    def __call__(self, task: SlurmTask) -> dict[str, Any]:
        start = time.time()
        job_id = _job_id()
        say = _sayer(job_id, task.name)
        signal.signal(signal.SIGTERM, self._on_term)  # instead of submitit's, which only logs it
        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK") or os.cpu_count() or 1)
        gpus = self.launch["gpus"]
        payload = json.dumps(dataclasses.asdict(task))
        status = None
        if gpus > 1:  # torchrun trains; every rank must be told what to do (no rank may decide on its own)
            plan = _plan(task)
            status = plan["status"]
            if status in ("new", "retrain", "interrupted"):
                say(f"training on {gpus} GPUs (torchrun): {status}"
                    + (f", from step {plan['step']}" if status == "interrupted" else ""))
                mode = "resume" if status == "interrupted" else status
                self._run_child([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 f"--nproc-per-node={gpus}", "-m", "cycleseg.experiments.slurm", "train", "--mode", mode,
                                 json.dumps({**dataclasses.asdict(task), "extra": plan["extra"]})],
                                max(1, cpus // gpus), task, say)
        # One process: `sweep.run_one`, the per-run logic of `cycleseg sweep` (skip, continue, train, retrain),
        # then the evaluation on val; after torchrun it finds the run trained and only evaluates it.
        with tempfile.TemporaryDirectory(prefix="cycleseg-slurm-") as tmp:
            result_file = Path(tmp) / "status"
            prefix = f"[job {job_id}] {task.name}:"
            self._run_child([sys.executable, "-u", "-m", "cycleseg.experiments.slurm", "run", "--prefix", prefix,
                             "--status-file", str(result_file), payload], cpus, task, say)
            status = status or (result_file.read_text().strip() if result_file.is_file() else None)
        from cycleseg import runs

        run_dir = Path(task.run_dir)
        record = runs.read_status(run_dir)
        if job_id and record.get("state") == "finished" and status != "done":  # which job trained it
            with contextlib.suppress(runs.RunInUse), runs.RunLock(run_dir, f"Slurm job {job_id}: {task.name}"):
                runs.set_status(run_dir, "finished", message=record.get("message"), slurm_job=job_id)
        result = runs.summary(run_dir).require_results()  # the run's fresh results on val (RunError if none)
        say(f"done: mIoU {result.get('miou')}")
        return {"name": task.name, "run_dir": str(run_dir), "status_before": status, "job_id": job_id,
                "miou": result.get("miou"), "psnr_db": result.get("psnr_db"), "snr_db": result.get("snr_db"),
                "seconds": round(time.time() - start, 1)}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit, on SIGUSR2 (time limit or preemption): stop training at a safe point (last.pt written),
        then hand submitit the same call for the requeued job."""
        import submitit

        self._stop_signal = signal.SIGUSR2
        child = self._child
        if child is not None and not self._exited.is_set():
            print(f"[job {_job_id()}] SIGUSR2: stopping the training process at its next iteration (it saves "
                  "last.pt)", flush=True)
            self._stop_child(child)
        print(f"[job {_job_id()}] requeueing this task; it continues from last.pt", flush=True)
        return submitit.helpers.DelayedSubmission(SlurmRun(self.launch), *args, **kwargs)

    def _on_term(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum  # Slurm sent it to the training process too; it saves last.pt and exits

    def _stop_child(self, child: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
        if not self._exited.wait(self.launch["stop_timeout_s"]):
            print(f"[job {_job_id()}] the training process did not stop within {self.launch['stop_timeout_s']} s; "
                  "killed (the run continues from its previous last.pt)", flush=True)
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            self._exited.wait(30)

    def _run_child(self, cmd: list[str], threads: int, task: SlurmTask, say) -> None:
        """Run one child process to its end; a child stopped by the signal that ends or requeues this job: wait
        for Slurm's SIGKILL (or submitit's SIGUSR2 handling) instead of returning."""
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        self._exited.clear()
        self._child = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, preexec_fn=_ignore_usr2)  # noqa: PLW1509
        threading.Thread(target=self._wait_child, daemon=True).start()
        while not self._exited.wait(0.5):
            pass
        code = self._child.returncode
        if code == 0:
            return
        if code == _EXIT_IN_USE:  # another process works on the run: it is left alone, never trained twice
            raise RunError(f"{task.name}: the run is in use elsewhere (who holds it: the line above); this job left "
                           "it alone; submit the sweep again once that process is done")
        if self._stop_signal is not None:  # any exit code: torchrun, for one, exits with 1 on SIGTERM
            # Slurm preempts, requeues or cancels this job: it ends it shortly (SIGKILL after KillWait). No result is
            # written meanwhile, so that submitit does not take a requeued job for finished.
            say(f"stopped by {signal.Signals(self._stop_signal).name} (exit code {code}); last.pt is saved; "
                "waiting for Slurm to end or requeue this job")
            deadline = time.time() + _STOP_WAIT_S
            while time.time() < deadline:
                time.sleep(1)
            raise RunError(f"{task.name}: stopped by a signal, and Slurm did not end the job within "
                           f"{_STOP_WAIT_S} s; submit the sweep again to continue the run from last.pt")
        raise RunError(f"{task.name}: failed (exit code {code}; the error is in this job's log above)")

    def _wait_child(self) -> None:
        self._child.wait()
        self._exited.set()


def _plan(task: SlurmTask) -> dict[str, Any]:
    """What the task has to do with its run folder, as `sweep.run_one` decides it: status new / retrain /
    interrupted / trained / done; `extra` overrides for the training processes (a resolved `snr_db: from`)."""
    from cycleseg import runs
    from cycleseg.commands.calibrate import resolve_snr_from
    from cycleseg.config import load_config
    from cycleseg.experiments.sweep import run_status

    run_dir = Path(task.run_dir)
    cfg = load_config(task.config, task.all_overrides())
    resolved = resolve_snr_from(cfg, base_dir=task.base_dir or run_dir.parent)
    extra = [f"noise.snr_db={json.dumps(resolved.noise.snr_db)}"] if resolved is not cfg else []
    status = run_status(run_dir)
    if status != "new" and _other_settings(task, resolved):
        status = "retrain"
    step = runs.checkpoint_step(run_dir / runs.LAST) if (run_dir / runs.LAST).is_file() else 0
    return {"status": status, "extra": extra, "step": step or 0}


def _other_settings(task: SlurmTask, cfg: Any) -> bool:
    """Whether the run in the task's folder was made with other settings than `cfg` (the keys outside
    RESUMABLE_KEYS): RunError naming the key, or True with the task's `retrain`. False when there is no run."""
    from cycleseg import runs
    from cycleseg.config import config_from_dict

    run_dir = Path(task.run_dir)
    path = run_dir / runs.LAST if (run_dir / runs.LAST).is_file() else run_dir / runs.CONFIG
    if not path.is_file():
        return False
    saved = runs.load_checkpoint(path, mmap=True)["config"] if path.name == runs.LAST else runs.read_yaml(path)
    diff = runs.config_difference(config_from_dict(saved, source=str(path)), cfg)
    if diff is None:
        return False
    if task.retrain:
        return True
    key, then, now = diff
    raise RunError(f"{run_dir}: this run was made with {key}={then!r}, the sweep now asks for {now!r}; submit "
                   "with the same overrides, with retrain to train it anew, or choose another folder")


def _train_worker(payload: dict[str, Any], mode: str) -> None:
    """The training process (every rank under torchrun): train the run fresh, anew or from last.pt."""
    from cycleseg import runs
    from cycleseg.config import RESUMABLE_KEYS, flat_items, load_config
    from cycleseg.commands.train import train

    task = _task(payload)
    run_dir = Path(task.run_dir)
    cfg = load_config(task.config, task.all_overrides() + list(payload.get("extra", [])))
    if mode == "resume":
        values = dict(flat_items(cfg.to_dict()))  # this sweep's values of the keys a continued run may take
        session, saved = runs.resume_config(run_dir, [f"{k}={json.dumps(values[k])}" for k in RESUMABLE_KEYS])
        train(session, run_dir, resume=True, run_config=saved)
    else:
        train(cfg, run_dir, overwrite=mode == "retrain")


def _run_worker(payload: dict[str, Any], prefix: str, status_file: str | None) -> None:
    """The single training process of a task: `sweep.run_one` (skip / continue / train, then evaluate)."""
    from cycleseg.config import load_config
    from cycleseg.experiments.sweep import run_one

    task = _task(payload)
    cfg = load_config(task.config, task.all_overrides())
    status = run_one(cfg, Path(task.run_dir), Path(task.base_dir or Path(task.run_dir).parent), task.retrain, prefix,
                     log=lambda line: print(line, flush=True), command=f"Slurm job {_job_id()}: {task.name}")
    if status_file:
        Path(status_file).write_text(status)


def _task(payload: dict[str, Any]) -> SlurmTask:
    fields = {f.name for f in dataclasses.fields(SlurmTask)}
    return SlurmTask(**{k: (tuple(v) if k == "overrides" else v) for k, v in payload.items() if k in fields})


def _waves(todo: list[SlurmTask], tasks: Sequence[SlurmTask], outcome: dict[str, Submitted]):
    """Yield (tasks, job ids they wait for), one job array each. A task whose `noise.snr_db: from` run is trained
    by a job of this sweep (queued before, or submitted in an earlier array) goes into a later array that
    depends on those jobs; the caller records each array's jobs in `outcome` before taking the next."""
    by_dir = {str(Path(t.run_dir).absolute()): t for t in tasks}
    source: dict[str, SlurmTask | None] = {}
    for task in todo:
        name = _snr_from(Path(task.config), task.overrides)
        if name:
            path = Path(name) if Path(name).is_absolute() else Path(task.base_dir or Path(task.run_dir).parent) / name
            source[task.name] = by_dir.get(str(path.absolute()))
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


def _snr_from(config: Path, overrides: Sequence[str] = ()) -> str | None:
    """NAME of `noise.snr_db: from NAME` in the config file or the overrides; None when snr_db is a number."""
    import yaml

    value = None
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
        value = (yaml.safe_load(config.read_text()) or {}).get("noise", {}).get("snr_db")
    for item in overrides:
        key, _, text = item.partition("=")
        if key.strip() == "noise.snr_db":
            value = text.strip().strip("\"'")
    return value.removeprefix("from ").strip() if isinstance(value, str) and value.startswith("from ") else None


def _ignore_usr2() -> None:
    """In the training process before exec: SIGUSR2 is for submitit's handler in the job process only."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def _sayer(job_id: str | None, name: str):
    def say(text: str) -> None:
        print(f"[job {job_id}] {name}: {text}", flush=True)
    return say


def _user() -> str:
    import getpass

    return getpass.getuser()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
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


def main(argv: list[str] | None = None) -> int:
    """`python -m cycleseg.experiments.slurm run TASK_JSON` / `train --mode new|retrain|resume TASK_JSON`: a task's child."""
    parser = argparse.ArgumentParser(prog="python -m cycleseg.experiments.slurm")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train (or continue) and evaluate one task's run: sweep.run_one")
    p.add_argument("--prefix", default="", help="the start of its log lines")
    p.add_argument("--status-file", help="where to write the run's status before (new, interrupted, ...)")
    p.add_argument("task", help="the task as JSON")
    p = sub.add_parser("train", help="train one task's run under torchrun (> 1 GPU); SlurmRun decided how")
    p.add_argument("--mode", choices=["new", "retrain", "resume"], required=True)
    p.add_argument("task", help="the task as JSON")
    args = parser.parse_args(argv)
    _ignore_usr2()
    try:
        if args.command == "run":
            _run_worker(json.loads(args.task), args.prefix, args.status_file)
        else:
            _train_worker(json.loads(args.task), args.mode)
    except Interrupted as e:
        print(f"cycleseg slurm: {' '.join(str(e).splitlines())}", file=sys.stderr, flush=True)
        return 128 + e.signum
    except CycleSegError as e:
        from cycleseg.runs import RunInUse

        print(f"cycleseg slurm: error: {' '.join(str(e).splitlines())}", file=sys.stderr, flush=True)
        return _EXIT_IN_USE if isinstance(e, RunInUse) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
