"""What runs in a Slurm job of a sweep (`experiments.slurm` submits them): one job-array task per run.

Each array task runs `SlurmRun` in submitit's job process, which starts the work in a child process (so that it
can stop it at a safe point when a signal comes) and waits:

- one process (gpus_per_run <= 1): `python -m cycleseg.experiments.launchers.slurm_job run TASK`, which is
  `execute.run_one`, the per-run logic of `cycleseg sweep` (`plan.decide`: skip a finished run, continue an
  interrupted one exactly from last.pt, train a new one; a run made with other settings: error, or anew with
  `retrain`), then the evaluation on val;
- gpus_per_run = N > 1: the job process asks `plan.decide` first (`_torchrun_plan`), `torchrun --standalone
  --nproc-per-node N -m cycleseg.experiments.launchers.slurm_job train --mode new|resume|retrain TASK` trains
  (`execute.train_run`; one node, one process per GPU), then `... run` finds the run trained and evaluates it.

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
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cycleseg.errors import CycleSegError, Interrupted, RunError
from cycleseg.experiments import plan
from cycleseg.experiments.launchers import EXIT_IN_USE, execute
from cycleseg.experiments.plan import RunSpec

try:
    from submitit.helpers import Checkpointable
except ImportError:  # the [slurm] extra is not installed; submit_sweep says so
    Checkpointable = object

__all__ = ["SlurmRun", "SlurmTask", "main"]

_STOP_WAIT_S = 300  # after SIGTERM, how long the job process waits for Slurm to end it
_CHILD = "cycleseg.experiments.launchers.slurm_job"  # python -m _CHILD run|train TASK: a task's child process


@dataclass(frozen=True)
class SlurmTask:
    """One run of a sweep, as an array task sees it (small and picklable): a `RunSpec` without its config."""

    name: str  # the run's name in the sweep, e.g. "quant2" or "quant2/seed1"; the key in jobs.json
    config: str  # YAML config file
    run_dir: str  # the run directory
    overrides: tuple[str, ...] = ()  # KEY=VALUE overrides, e.g. train.seed=1
    data_root: str | None = None  # overrides data.root
    base_dir: str | None = None  # where `noise.snr_db: from NAME` looks for NAME (the sweep folder)
    retrain: bool = False  # a run in run_dir made with other settings is trained anew (default: error)
    depends_on: str | None = None  # the task (name) whose run's measured SNR this run takes: submitted after it

    @classmethod
    def of(cls, spec: RunSpec, retrain: bool = False) -> SlurmTask:
        """The task of a planned run (`plan.plan`)."""
        return cls(spec.name, str(spec.config_path.absolute()), str(spec.run_dir), spec.overrides,
                   base_dir=str(spec.sweep_dir), retrain=retrain, depends_on=spec.depends_on)

    def all_overrides(self) -> list[str]:
        return [*self.overrides, *([f"data.root={self.data_root}"] if self.data_root else [])]

    def spec(self, extra: list[str] | tuple[str, ...] = ()) -> RunSpec:
        """The task's run as a RunSpec (its config loaded, with `extra` overrides on top)."""
        run_dir = Path(self.run_dir)
        return RunSpec.load(self.name, self.config, [*self.all_overrides(), *extra], run_dir,
                            self.base_dir or run_dir.parent, depends_on=self.depends_on)


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
            todo = _torchrun_plan(task)
            status = todo["status"]
            if todo["mode"] is not None:
                say(f"training on {gpus} GPUs (torchrun): {status}"
                    + (f", from step {todo['step']}" if status == "interrupted" else ""))
                self._run_child([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 f"--nproc-per-node={gpus}", "-m", _CHILD, "train", "--mode", todo["mode"],
                                 json.dumps({**dataclasses.asdict(task), "extra": todo["extra"]})],
                                max(1, cpus // gpus), task, say)
        # One process: `execute.run_one`, the per-run logic of `cycleseg sweep` (skip, continue, train, retrain),
        # then the evaluation on val; after torchrun it finds the run trained and only evaluates it.
        with tempfile.TemporaryDirectory(prefix="cycleseg-slurm-") as tmp:
            result_file = Path(tmp) / "status"
            prefix = f"[job {job_id}] {task.name}:"
            self._run_child([sys.executable, "-u", "-m", _CHILD, "run", "--prefix", prefix,
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
        if code == EXIT_IN_USE:  # another process works on the run: it is left alone, never trained twice
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


def _torchrun_plan(task: SlurmTask) -> dict[str, Any]:
    """What a multi-GPU task does with its run folder, as `plan.decide` says: `mode` new / retrain / resume for
    torchrun (None: nothing to train, the evaluation follows), `status` before (new, retrain, interrupted,
    trained, done), `extra` overrides for every rank (the resolved `snr_db: from`), `step` of last.pt."""
    from cycleseg import runs

    original = task.spec()
    spec = plan.resolve(original)
    action = plan.decide(spec, task.retrain)
    status = plan.status_before(spec, action)
    extra = [f"noise.snr_db={json.dumps(spec.config.noise.snr_db)}"] if spec is not original else []
    mode = action if action in ("new", "retrain") else "resume" if status == "interrupted" else None
    step = runs.checkpoint_step(spec.run_dir / runs.LAST) if (spec.run_dir / runs.LAST).is_file() else 0
    return {"status": status, "mode": mode, "extra": extra, "step": step or 0}


def _train_worker(payload: dict[str, Any], mode: str) -> None:
    """The training process (every rank under torchrun): train the run fresh, anew or from last.pt."""
    task = _task(payload)
    execute.train_run(task.spec(payload.get("extra", [])), "continue" if mode == "resume" else mode)


def _run_worker(payload: dict[str, Any], prefix: str, status_file: str | None) -> None:
    """The single training process of a task: `execute.run_one` (skip / continue / train, then evaluate)."""
    task = _task(payload)
    status = execute.run_one(task.spec(), task.retrain, prefix, log=lambda line: print(line, flush=True),
                             command=f"Slurm job {_job_id()}: {task.name}")
    if status_file:
        Path(status_file).write_text(status)


def _task(payload: dict[str, Any]) -> SlurmTask:
    fields = {f.name for f in dataclasses.fields(SlurmTask)}
    return SlurmTask(**{k: (tuple(v) if k == "overrides" else v) for k, v in payload.items() if k in fields})


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


def main(argv: list[str] | None = None) -> int:
    """`python -m cycleseg.experiments.launchers.slurm_job run TASK_JSON` / `train --mode new|retrain|resume
    TASK_JSON`: a task's child process."""
    parser = argparse.ArgumentParser(prog=f"python -m {_CHILD}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train (or continue) and evaluate one task's run: execute.run_one")
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
        return EXIT_IN_USE if isinstance(e, RunInUse) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
