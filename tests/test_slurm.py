"""Sweeps on Slurm (cycleseg.experiments.slurm), on a real one-node cluster that the session starts (tests/slurm_fixture.py).

One sweep of 2 tiny configs x 2 seeds, plus an uninterrupted copy of one run as the reference, as one job
array, 2 runs at a time (1 CPU, 1 thread each): submitted again while it runs, nothing is submitted twice;
one run is preempted mid-training (SIGTERM, then SIGUSR2, as submitit's `_interrupt`), requeued, continued from
its last.pt, requeued by `scontrol requeue` (SIGTERM only) later on, continued again, and ends bit-identical
to the reference; one run is cancelled, reported CANCELLED, and finishes
when the sweep is submitted again. The tests without a cluster check the task list, time limits and arrays.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cycleseg.cli import main
from cycleseg.errors import RunError
from cycleseg.experiments.slurm import (
    ENDED,
    SlurmTask,
    Submitted,
    _waves,
    job_states,
    parse_time,
    submit_sweep,
    sweep_jobs,
    sweep_tasks,
)
from cycleseg.runs import LAST, METRICS, RunLock, artifact, load_checkpoint, run_in_use

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"
# 8 images, batch 1: 8 iterations per epoch, 16 in all (about 0.3 s each); every step logged, to see progress.
TINY = ("data.height=32", "data.width=64", "optim.epochs=2", "optim.decay_start_epoch=1", "optim.batch_size=1",
        "train.progress=false", "train.precision=fp32", "train.log_every=1")
ORDER = ["quant2/seed0", "quant2/seed1", "erfnet/seed0", "erfnet/seed1", "reference"]  # the first two start first
SUBMIT = {"partition": "debug", "cpus_per_run": 1, "time": 60, "max_parallel": 2}


def _steps(run_dir: Path) -> list[int]:
    """The training steps logged in log.jsonl so far."""
    try:
        lines = (run_dir / "log.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line)["step"] for line in lines if line.endswith("}") and '"lr"' in line]


def _wait(condition, timeout: float, what: str, logs: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            text = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(logs.rglob("*_log.*"))) if logs else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{text}")
        time.sleep(0.05)


def _signal(job_id: str, sig: str) -> None:
    """`scancel --signal SIG JOB_ID`, once. Slurm 22.05 delivers a signal to an array task whose siblings are still
    pending but answers "Job can not be altered now", and scancel then sends it again every 5 to 8 s for 35 s
    (a requeued task would get it once more): the first try is all we want."""
    scancel = subprocess.Popen(["scancel", job_id, "--signal", sig], stderr=subprocess.DEVNULL)
    try:
        scancel.wait(1)
    except subprocess.TimeoutExpired:
        scancel.kill()
        scancel.wait()


def _log(job) -> str:
    return (job.stdout() or "") + (job.stderr() or "")


@pytest.fixture(scope="module")
def sweep(slurm_cluster, tiny_data, tmp_path_factory):
    """The sweep above, run to its end: submissions, job logs, what was seen on the way."""
    folder = tmp_path_factory.mktemp("slurm-sweep")
    tasks = {t.name: t for t in sweep_tasks([DEMO / "quant2.yaml", DEMO / "erfnet.yaml"], folder, TINY,
                                            data_root=tiny_data, seeds=[0, 1])}
    tasks["reference"] = SlurmTask("reference", str(DEMO / "quant2.yaml"), str(folder / "reference"),
                                   (*TINY, "train.seed=0"), str(tiny_data), str(folder))
    tasks = [tasks[name] for name in ORDER]
    start = time.monotonic()
    first = submit_sweep(tasks, folder, log=lambda text: None, **SUBMIT)
    again = submit_sweep(tasks, folder, log=lambda text: None, **SUBMIT)  # while the array is queued / running
    jobs = {s.task.name: s.job for s in first}
    logs = folder / "slurm"

    preempted, cancelled = Path(tasks[0].run_dir), Path(tasks[1].run_dir)
    _wait(lambda: len(_steps(preempted)) >= 3 and _steps(cancelled), 90, "quant2 seed0 and seed1 to train", logs)
    preempted_at = max(_steps(preempted))
    jobs["quant2/seed1"].cancel()  # (first: the signals below take a second each)
    for sig in ("SIGTERM", "SIGUSR2"):  # a preemption, as submitit's job._interrupt() sends it
        _signal(jobs["quant2/seed0"].job_id, sig)
    # Continued from last.pt, the same run is requeued by Slurm itself (SIGTERM only, then SIGKILL), later in
    # training, as a preemption with PreemptMode=REQUEUE does it.
    _wait(lambda: "continuing from step" in _log(jobs["quant2/seed0"]) and max(_steps(preempted), default=0) >= 8,
          90, "quant2/seed0 to continue to step 8", logs)
    requeued_at = max(_steps(preempted))
    subprocess.run(["scontrol", "requeue", jobs["quant2/seed0"].job_id], check=True)

    for name in ORDER:
        _wait(lambda name=name: jobs[name].done(), 150, f"{name} to end", logs)
    results = {name: jobs[name].result() for name in ORDER if name != "quant2/seed1"}
    ids = [s.job_id for s in first]  # a job's result is written a moment before Slurm sees the job end
    _wait(lambda: set(job_states(ids).values()) <= ENDED, 30, "Slurm to see every job end", logs)
    states = {j["name"]: j for j in sweep_jobs(folder)}
    seconds = time.monotonic() - start
    return {"folder": folder, "tasks": tasks, "first": first, "again": again, "jobs": jobs, "results": results,
            "states": states, "preempted_at": preempted_at, "requeued_at": requeued_at, "seconds": seconds}


@pytest.mark.slow
@pytest.mark.slurm
def test_submitting_a_queued_sweep_again_submits_nothing(sweep):
    assert [s.state for s in sweep["first"]] == ["submitted"] * 5
    assert [s.state for s in sweep["again"]] == ["queued"] * 5
    assert [s.job_id for s in sweep["again"]] == [s.job_id for s in sweep["first"]]
    assert all(s.job is None for s in sweep["again"])
    recorded = json.loads((sweep["folder"] / "slurm" / "jobs.json").read_text())
    assert {k: v["job_id"] for k, v in recorded.items()} == {s.task.name: s.job_id for s in sweep["first"]}


@pytest.mark.slow
@pytest.mark.slurm
def test_preempted_run_is_requeued_and_ends_bit_identical(sweep):
    run, reference = Path(sweep["tasks"][0].run_dir), Path(sweep["tasks"][4].run_dir)
    result = sweep["results"]["quant2/seed0"]
    log = _log(sweep["jobs"]["quant2/seed0"])
    assert sweep["preempted_at"] < sweep["requeued_at"] < 16, "interrupted too late to test a resume"
    assert result["status_before"] == "interrupted", log  # the requeued task found the run interrupted
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log, log  # submitit checkpointed and requeued it
    assert "stopped by SIGTERM (exit code 143)" in log, log  # (at least) `scontrol requeue`'s SIGTERM
    steps = [int(part.split()[0]) for part in log.split("continuing from step ")[1:]]
    assert len(steps) == 2 and 0 < steps[0] < steps[1] < 16, log
    assert sweep["results"]["reference"]["status_before"] == "new"
    a, b = load_checkpoint(run / LAST), load_checkpoint(reference / LAST)
    _assert_same(a, b, "last.pt")
    ma, mb = (json.loads((d / METRICS).read_text()) for d in (run, reference))
    ma.pop("train_seconds"), mb.pop("train_seconds")
    assert ma == mb and ma["iterations"] == 16
    assert json.loads(artifact(run, "eval", "val").read_text()) == json.loads(
        artifact(reference, "eval", "val").read_text())
    assert _steps(run) == list(range(1, 17))  # every step logged once: the resume dropped nothing, repeated nothing


@pytest.mark.slow
@pytest.mark.slurm
def test_cancelled_run_is_reported_and_finishes_when_submitted_again(sweep, tiny_data, capsys):
    folder, tasks = sweep["folder"], sweep["tasks"]
    states = sweep["states"]
    assert states["quant2/seed1"]["slurm_state"] == "CANCELLED"
    assert sweep["jobs"]["quant2/seed1"].state.startswith("CANCELLED")  # submitit: "CANCELLED by 0"
    assert states["quant2/seed1"]["run"] == "interrupted"  # SIGTERM: last.pt saved at the step it reached
    assert {n: s["slurm_state"] for n, s in states.items() if n != "quant2/seed1"} == dict.fromkeys(
        ["quant2/seed0", "erfnet/seed0", "erfnet/seed1", "reference"], "COMPLETED")
    assert all(s["run"] == "done" for n, s in states.items() if n != "quant2/seed1")

    assert main(["sweep", "status", str(folder)]) == 0  # what a user sees: the run and its cancelled job
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("quant2/seed1 "))
    assert "interrupted" in line and f"Slurm job {sweep['jobs']['quant2/seed1'].job_id} CANCELLED" in line, line

    third = submit_sweep(tasks, folder, log=lambda text: None, **SUBMIT)
    assert [s.state for s in third] == ["finished", "submitted", "finished", "finished", "finished"]
    job = third[1].job
    _wait(job.done, 120, "the resubmitted quant2/seed1", folder / "slurm")
    assert job.result()["status_before"] == "interrupted", _log(job)
    _wait(lambda: set(job_states([job.job_id]).values()) <= ENDED, 30, "Slurm to see the job end")
    assert {j["name"]: (j["slurm_state"], j["run"]) for j in sweep_jobs(folder)}["quant2/seed1"] == (
        "COMPLETED", "done")
    assert _steps(Path(tasks[1].run_dir)) == list(range(1, 17))
    # The same sweep through the command line: every run finished, nothing to submit.
    assert main(["sweep", str(DEMO / "quant2.yaml"), str(DEMO / "erfnet.yaml"), *TINY, "--out", str(folder),
                 "--data", str(tiny_data), "--seeds", "2", "--launcher", "slurm", "--partition", "debug"]) == 0
    assert "0 of 4 runs submitted to Slurm" in capsys.readouterr().out
    longer = dataclasses.replace(tasks[2], overrides=(*tasks[2].overrides, "optim.epochs=3"))
    with pytest.raises(RunError, match="made with optim.epochs=2, the sweep now asks for 3"):
        submit_sweep([longer], folder, log=lambda text: None, **SUBMIT)  # refused before anything is submitted


@pytest.mark.slow
@pytest.mark.slurm
def test_a_requeued_job_racing_a_resume_by_hand_trains_the_run_once(slurm_cluster, tiny_data, tmp_path):
    """A preempted run: while Slurm requeues its job, the user continues it by hand (`train --resume`). The run's
    lock lets one of them train; the other is refused with one line naming the holder. Whoever takes the lock
    first is stopped (SIGSTOP, keeping the lock) until the other has been refused, so both orders are decided."""
    folder = tmp_path / "race"
    [task] = sweep_tasks([DEMO / "quant2.yaml"], folder, TINY, data_root=tiny_data)
    [submitted] = submit_sweep([task], folder, log=lambda text: None, **SUBMIT)
    job, run, logs = submitted.job, Path(task.run_dir), folder / "slurm"
    _wait(lambda: len(_steps(run)) >= 3, 90, "the job to train", logs)
    first = run_in_use(run)["pid"]  # the job's training process
    for sig in ("SIGTERM", "SIGUSR2"):  # a preemption: last.pt saved, the job requeued
        _signal(job.job_id, sig)
    _wait(lambda: (run_in_use(run) or {}).get("pid") != first, 60, "the job's training process to stop", logs)
    hand = subprocess.Popen([sys.executable, "-m", "cycleseg.cli", "train", "--resume", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: run_in_use(run) or hand.poll() is not None, 120, "the resume or the requeued job to take the run",
          logs)
    holder = run_in_use(run) or {}
    if holder.get("pid") == hand.pid:  # the hand won: it waits (stopped) until the requeued job was refused
        hand.send_signal(signal.SIGSTOP)
        _wait(job.done, 150, "the requeued job to be refused", logs)
        hand.send_signal(signal.SIGCONT)
        _, err = hand.communicate(timeout=120)
        assert hand.returncode == 0, err
        assert f"{run}: in use by `cycleseg train --resume {run}` (pid {hand.pid}" in _log(job), _log(job)
        with pytest.raises(Exception, match="in use elsewhere"):
            job.result()
    else:  # the requeued job won: the hand is refused at once, the job trains and evaluates the run
        _, err = hand.communicate(timeout=120)
        assert hand.returncode == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{run}: in use by `Slurm job {job.job_id}: quant2`" in err, err
        _wait(job.done, 150, "the requeued job to end", logs)
        assert job.result()["status_before"] == "interrupted", _log(job)
    assert _steps(run) == list(range(1, 17))  # trained once: no step twice, none lost
    assert json.loads((run / METRICS).read_text())["iterations"] == 16 and run_in_use(run) is None
    _wait(lambda: set(job_states([job.job_id]).values()) <= ENDED, 30, "Slurm to see the job end")
    with RunLock(run, "a resume by hand"):  # submitting while another process holds the run: nothing submitted
        [again] = submit_sweep([task], folder, log=lambda text: None, **SUBMIT)
    assert again.state == "in use" and again.job is None


def _assert_same(a, b, where: str) -> None:
    """Bit-identical nested checkpoints (tensors, numbers, strings), apart from the measured training time and the
    global Python and NumPy RNG states: training draws from neither (the pool has its own generator, seeded), and
    no one seeds them, so they differ between any two processes."""
    if where in ("last.pt.rng.python", "last.pt.rng.numpy"):
        return
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k != "train_seconds":
                _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# ---------------------------------------------------------------------------------------------- no cluster


def test_tasks_with_seeds_get_their_own_folder_and_seed(tmp_path):
    tasks = sweep_tasks([DEMO / "quant2.yaml"], tmp_path, ["optim.epochs=3"], data_root="data", seeds=[0, 3])
    assert [t.name for t in tasks] == ["quant2/seed0", "quant2/seed3"]
    assert [Path(t.run_dir) for t in tasks] == [tmp_path / "quant2" / "seed0", tmp_path / "quant2" / "seed3"]
    assert tasks[1].overrides == ("optim.epochs=3", f"data.root={Path('data').absolute()}", "train.seed=3")
    plain = sweep_tasks([DEMO / "quant2.yaml"], tmp_path)
    assert [(t.name, Path(t.run_dir)) for t in plain] == [("quant2", tmp_path / "quant2")]


def test_a_run_whose_snr_comes_from_another_waits_for_it(tmp_path):
    gauss = tmp_path / "gauss.yaml"
    gauss.write_text("model: {kind: cyclegan}\nnoise: {kind: gaussian, snr_db: from quant2}\n")
    tasks = sweep_tasks([gauss, DEMO / "quant2.yaml"], tmp_path, seeds=[0])
    assert [t.name for t in tasks] == ["quant2/seed0", "gauss/seed0"]  # the sweep's order: the SNR source first
    assert tasks[1].overrides[-1] == f'noise.snr_db="from {tmp_path / "quant2" / "seed0"}"'  # the same seed's run
    assert tasks[1].depends_on == "quant2/seed0" and tasks[0].depends_on is None
    outcome: dict[str, Submitted] = {}
    waves = _waves(tasks, tasks, outcome)
    first, deps = next(waves)
    assert [t.name for t in first] == ["quant2/seed0"] and not deps
    outcome["quant2/seed0"] = Submitted(first[0], "submitted", "7_0")
    second, deps = next(waves)
    assert [t.name for t in second] == ["gauss/seed0"] and deps == {"7_0"}
    assert next(waves, None) is None


@pytest.mark.parametrize(("text", "minutes"), [(90, 90), ("90", 90), ("1:30:00", 90), ("2-00:00:00", 2880),
                                               ("1-12", 2160), ("10:30", 11), ("0:00:30", 1)])
def test_time_limits(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "soon", "1:2:3:4", 0])
def test_bad_time_limits(text):
    with pytest.raises(Exception, match="--time"):
        parse_time(text)
