"""One process per run directory (issue 26): RUN/.lock, flock'ed by every writer, refuses a second one.

The fast tests play the other process with a second open file of RUN/.lock (flock locks belong to the open
file, so one process can stand for two); the slow ones start real processes: a trainer stopped (SIGSTOP) while
it holds its run, against which a resume, an --overwrite, an evaluate, a sweep and a sweep worker are refused,
the run's files unchanged and its end bit-identical to an undisturbed run; and a holder killed with SIGKILL,
after which a resume takes the run at once.
"""

import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cycleseg import runs
from cycleseg.cli import main
from cycleseg.commands.train import train
from cycleseg.config import config_from_dict
from cycleseg.errors import RunError
from cycleseg.experiments.sweep import EXIT_IN_USE, IN_USE, sweep_status
from cycleseg.runs import LAST, LOCK, RunLock, load_checkpoint, run_in_use
from test_resume import CYCLEGAN_YAML, _cfg, assert_same_state
from test_resume import TINY as RESUME_TINY

# test_resume's run (a checkpoint after every iteration, Gaussian noise: the RNG matters) in 2 epochs, 8 iterations
TINY = [*RESUME_TINY, "optim.epochs=2", "optim.decay_start_epoch=1"]
WORKER = "import sys; from cycleseg.experiments.sweep import worker_main; sys.exit(worker_main(sys.argv[1:]))"
HOLDER = {"pid": 4242, "host": "node7", "command": "cycleseg train --resume RUN", "since": "2026-12-02T10:00:00+0000"}


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """The run of TINY, uninterrupted: its last.pt."""
    out = tmp_path_factory.mktemp("reference")
    train(_cfg(tiny_data, *TINY[len(RESUME_TINY):]), out)
    return load_checkpoint(out / LAST)


@pytest.fixture
def run(trained_cycle_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_cycle_run, copy)
    return copy


def _hold(run_dir: Path, holder: dict = HOLDER) -> int:
    """Lock RUN/.lock through a file of its own, as another process would, with `holder` in it."""
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder).encode())
    return fd


def _files(run_dir: Path) -> dict[str, str]:
    """Every file under the run: relative path -> SHA-256 of its bytes."""
    return {p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------------------------------------------ fast


def test_a_held_run_refuses_every_writing_command_and_names_the_holder(run, tiny_data, capsys):
    fd = _hold(run)
    before = _files(run)
    try:
        assert run_in_use(run) == HOLDER  # what `sweep status` reads: the probe never waits
        # a resume with work left (one epoch more); one with nothing to do exits before it takes the lock
        for argv in (["train", "--resume", str(run), "optim.epochs=3"],
                     ["train", CYCLEGAN_YAML, "--data", str(tiny_data), "--out", str(run), "--overwrite", *TINY],
                     ["evaluate", str(run), "--data", str(tiny_data)],
                     ["calibrate", str(run), "--data", str(tiny_data)],
                     ["diagnose", str(run), "--data", str(tiny_data)],
                     ["predict", str(run), "--data", str(tiny_data), "--out", str(run / "preds")]):
            assert main(argv) == 2, argv
            err = _one_error_line(capsys)
            assert (f"{run}: in use by `cycleseg train --resume RUN` (pid 4242 on node7, since "
                    "2026-12-02T10:00:00+0000); wait until it ends, or stop it (kill 4242 on node7)") in err, err
        assert _files(run) == before  # nothing written, nothing removed
        assert main(["table", str(run)]) == 0  # a reader is never refused
        # predict and export lock the run only when they write into it
        assert runs.inside_run(run / "preds", run) and not runs.inside_run(run.parent / "preds", run)
    finally:
        os.close(fd)  # the other "process" ends: its lock goes with it
    with RunLock(run, "mine"):
        holder = run_in_use(run)
        assert (holder["pid"], holder["host"], holder["command"]) == (os.getpid(), socket.gethostname(), "mine")
        assert json.loads((run / LOCK).read_text()) == holder
    assert run_in_use(run) is None


def test_the_lock_nests_in_one_process_and_survives_overwrite(run):
    outer = RunLock(run).acquire()
    with RunLock(run):  # run_one holds it around train and evaluate: one process, one lock
        pass
    with pytest.raises(BlockingIOError):  # still held after the inner holder let go
        fcntl.flock(os.open(run / LOCK, os.O_RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert runs.read_status(run)["in_use"] is None  # a finished run: nothing in it notes a writer at work
    runs.set_status(run, "finished")
    assert runs.read_status(run)["in_use"]["pid"] == os.getpid()  # a writer's status update says who works on it
    outer.release()
    assert runs.read_status(run)["in_use"] is None and run_in_use(run) is None
    inode = (run / LOCK).stat().st_ino
    with RunLock(run):  # what train --overwrite does
        runs.create_run(run, config_from_dict(runs.read_yaml(run / runs.CONFIG)), overwrite=True)
        assert runs.read_status(run)["in_use"]["pid"] == os.getpid()
    assert not (run / LAST).exists() and (run / LOCK).stat().st_ino == inode  # never removed nor replaced: a
    # new file would lock no one out
    # A folder that holds only the lock file (a run whose creation failed) is an empty folder.
    empty = run.parent / "empty"
    empty.mkdir()
    (empty / LOCK).touch()
    runs.require_new_run(empty, overwrite=False)
    # A folder that does not exist holds no run and is not created by a reader's lock.
    with RunLock(run.parent / "missing"):
        assert not (run.parent / "missing").exists()


@pytest.mark.parametrize(("code", "cause"), [
    (errno.ENOSPC, "the disk (or quota) of {dir} is full ("),
    (errno.EACCES, "no permission to write in {dir}"),
    (errno.ENOENT, "{dir} or the temporary file was removed while writing (by another process?)"),
    (errno.EIO, "check the folder and the disk"),
])
def test_a_failed_write_names_its_real_cause(tmp_path, monkeypatch, code, cause):
    path = tmp_path / "last.pt"
    path.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(RunError) as e:
        runs.atomic_write(path, b"new")
    message = str(e.value)
    assert message.startswith(f"{path}: could not write ({os.strerror(code)}); {cause.format(dir=tmp_path)}"), message
    assert message.endswith("the previous file is intact") and path.read_bytes() == b"old"
    assert ("disk" in message) == (code in (errno.ENOSPC, errno.EIO))  # no "free disk space" for a missing file


def test_sweep_status_shows_a_run_in_use_elsewhere(run, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.move(run, sweep / "quant2")
    fd = _hold(sweep / "quant2")
    try:
        [state] = sweep_status(sweep)
        assert state.state == IN_USE and state.holder == HOLDER
        assert main(["sweep", "status", str(sweep)]) == 0
        out = capsys.readouterr().out
        assert "1 in use" in out and "in use elsewhere: `cycleseg train --resume RUN` (pid 4242 on node7" in out, out
    finally:
        os.close(fd)
    assert sweep_status(sweep)[0].state == "finished"


# ------------------------------------------------------------------------------------------- real processes


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "cycleseg.cli", *map(str, args)]


# The trainers compute with the reference's number of threads (conftest sets it): sums over another number of
# threads round differently, and bit-identical would not hold for reasons of no concern here.
THREADS = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def _logged_step(run_dir: Path) -> int:
    try:
        lines = (run_dir / "log.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return max((json.loads(line)["step"] for line in lines if line.endswith("}") and '"lr"' in line), default=0)


def _start_trainer(out: Path, data: Path, *extra) -> subprocess.Popen:
    """A trainer of TINY's run (8 iterations, a checkpoint after each), returned once it trained a step; the
    caller stops it (SIGSTOP: it keeps its lock, as a trainer busy in a long epoch does) or kills it."""
    proc = subprocess.Popen(_cli("train", CYCLEGAN_YAML, "--data", data, "--out", out, *TINY, *extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=THREADS)
    deadline = time.time() + 120
    while _logged_step(out) < 1:
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "no training step in 120 s"
        time.sleep(0.02)
    return proc


@pytest.mark.slow
def test_a_training_run_is_refused_to_every_other_writer_and_ends_undisturbed(tiny_data, tmp_path, reference):
    sweep = tmp_path / "sweep"
    out = sweep / "cyclegan"  # a run of a sweep folder: the sweep and its worker aim at it too
    trainer = _start_trainer(out, tiny_data, "--name", "cyclegan")  # the name the sweep gives its config's run
    trainer.send_signal(signal.SIGSTOP)
    try:
        time.sleep(0.2)  # a step's checkpoint write in flight when it stopped is no concern: it is stopped
        before = _files(out)
        spec = {"config": CYCLEGAN_YAML, "overrides": [*TINY, f"data.root={tiny_data}"], "run_dir": str(out),
                "sweep_dir": str(sweep), "retrain": False, "threads": 1, "prefix": "[1/1] cyclegan:"}
        others = {
            "resume": _cli("train", "--resume", out),
            "overwrite": _cli("train", CYCLEGAN_YAML, "--data", tiny_data, "--out", out, "--overwrite", *TINY),
            "evaluate": _cli("evaluate", out, "--data", tiny_data),
            "sweep": _cli("sweep", CYCLEGAN_YAML, "--data", tiny_data, "--out", sweep, *TINY, "--launcher", "local"),
            "worker": [sys.executable, "-c", WORKER, json.dumps(spec)],
        }
        procs = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, cmd in others.items()}
        results = {name: (p.wait(120), *p.communicate()) for name, p in procs.items()}
        holder = f"in use by `cycleseg train {CYCLEGAN_YAML}"
        for name in ("resume", "overwrite", "evaluate"):
            code, _, err = results[name]
            assert code == 2 and len(err.strip().splitlines()) == 1, (name, err)
            assert f"{out}: {holder}" in err and f"(pid {trainer.pid} on {socket.gethostname()}" in err, (name, err)
        code, stdout, sweep_err = results["sweep"]
        assert code == 2 and "in use elsewhere, left alone" in stdout and f"pid {trainer.pid}" in stdout, (stdout, sweep_err)
        code, stdout, err = results["worker"]
        assert code == EXIT_IN_USE and holder in err.strip().splitlines()[-1], err
        assert _files(out) == before  # byte-identical: nothing written, nothing removed
        [state] = sweep_status(sweep)
        assert state.state == IN_USE and state.holder["pid"] == trainer.pid
    finally:
        trainer.send_signal(signal.SIGCONT)
    _, err = trainer.communicate(timeout=120)
    assert trainer.returncode == 0, err
    assert_same_state(load_checkpoint(out / LAST), reference)  # it ended as the undisturbed run
    assert run_in_use(out) is None and runs.read_status(out)["in_use"] is None


@pytest.mark.slow
def test_a_killed_holder_leaves_no_lock_and_a_resume_ends_bit_identical(tiny_data, tmp_path, reference):
    out = tmp_path / "run"
    trainer = _start_trainer(out, tiny_data)
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    assert run_in_use(out) is None  # the kernel let go of the lock with the process: no stale lock
    assert runs.read_status(out)["in_use"]["pid"] == trainer.pid  # run.json keeps the dead holder's note ...
    done = subprocess.run(_cli("train", "--resume", out), capture_output=True, text=True, timeout=120, check=False,
                          env=THREADS)
    assert done.returncode == 0, done.stderr  # ... which refuses no one
    assert_same_state(load_checkpoint(out / LAST), reference)
    assert runs.read_status(out)["in_use"] is None


@pytest.mark.slow
def test_under_torchrun_every_rank_stops_when_rank_0_is_refused(run):
    """Rank 0 holds the lock for all ranks; refused, it tells the others (no rank waits for it in a collective)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not found")
    fd = _hold(run)
    before = _files(run)
    try:
        proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "cycleseg.cli", "train",
                               "--resume", run, "optim.epochs=3"], capture_output=True, text=True, timeout=300,
                              check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        os.close(fd)
    assert proc.returncode != 0
    assert f"{run}: in use by `cycleseg train --resume RUN` (pid 4242 on node7" in proc.stderr, proc.stderr[-2000:]
    assert f"{run}: rank 0 could not lock the run" in proc.stderr, proc.stderr[-2000:]  # rank 1's own line
    assert _files(run) == before
