"""A run folder from a stranger never writes outside itself (issue 35): a link, FIFO or folder where cycleseg
writes a file is refused with one line and the link's target is left byte-identical; readers never block on a
FIFO; a full disk is one line naming the file and the free space; `upgrade` takes the run lock; the plan reads
configs as the loader does; diagnose names a checkpoint that does not fit; report and table name every run they
leave out; train.seed seeds NumPy's RNG too.

Every planted link points at a file in the test's own folder, never at a system file."""

import errno
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import cycleseg.commands.calibrate
import cycleseg.commands.evaluate
import cycleseg.experiments.sweep  # noqa: F401 -- imported before the timed calls: an import is no answer
from blocking import answered_within
from cycleseg import runs
from cycleseg.cli import main
from cycleseg.commands.state import TrainState
from cycleseg.commands.train import train
from cycleseg.config import load_config
from cycleseg.errors import RunError
from cycleseg.report import build_report
from cycleseg.runs import LAST, LOCK, load_checkpoint, save_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
V1 = "cycleseg-checkpoint-v1"


@pytest.fixture
def run(trained_cycle_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_cycle_run, copy)
    return copy


def _plant(path: Path, kind: str, outside: Path) -> None:
    """A link to a file of `outside` (the test's own folder), a dangling link into it, or a FIFO at `path`."""
    outside.mkdir(exist_ok=True)
    path.unlink(missing_ok=True)
    if kind == "link":
        (outside / "victim").write_bytes(b"root:x:0:0:the user's own file\n")
        path.symlink_to(outside / "victim")
    elif kind == "dangling link":
        path.symlink_to(outside / "made.lock")
    else:
        os.mkfifo(path)


def _listing(folder: Path) -> dict[str, str]:
    """Every regular file under `folder` (links followed): relative path -> SHA-256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------------------ RUN/.lock: link, dangling, FIFO

@pytest.mark.parametrize("kind", ["link", "dangling link", "fifo"])
@pytest.mark.parametrize("command", [["evaluate", "{run}", "--data", "{data}"],
                                     ["calibrate", "{run}", "--data", "{data}"],
                                     # a resume with work left (one epoch more): one with nothing to do exits
                                     # before it takes the lock, and writes nothing
                                     ["train", "--resume", "{run}", "optim.epochs=2", "train.max_iters=3"]])
def test_a_planted_lock_is_refused_and_nothing_is_written_anywhere(run, tiny_data, tmp_path, capsys, kind, command):
    outside = tmp_path / "outside"
    _plant(run / LOCK, kind, outside)
    before, outside_before = _listing(run), _listing(outside)
    args = [a.format(run=run, data=tiny_data) for a in command]
    assert answered_within(lambda: main(args)) == 2
    what = "a FIFO" if kind == "fifo" else "a symbolic link"
    assert _one_line(capsys).endswith(f"error: {run / LOCK}: is {what}" + (" (named pipe)" if kind == "fifo" else "")
                                      + " where cycleseg writes a file, and cycleseg writes nothing through it; "
                                        "remove it and run again")
    assert _listing(outside) == outside_before  # the target byte-identical; nothing created through the link
    assert _listing(run) == before


@pytest.mark.parametrize("name", [LOCK, runs.LOG, runs.STATUS])
def test_sweep_status_answers_at_once_and_names_a_fifo(run, tmp_path, capsys, name):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.move(run, sweep / "quant2")
    os.unlink(sweep / "quant2" / name)
    os.mkfifo(sweep / "quant2" / name)
    assert answered_within(lambda: main(["sweep", "status", str(sweep)])) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("quant2"))
    assert "failed" in line and f"{sweep / 'quant2' / name}: is a FIFO (named pipe)" in line, line


# ------------------------------------------------------------------------------ linked folders and the cache

def test_a_linked_predictions_folder_in_a_run_is_refused(run, tiny_data, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "predictions_val").symlink_to(elsewhere, target_is_directory=True)
    assert main(["evaluate", str(run), "--data", str(tiny_data), "--official"]) == 2
    assert f"{run / 'predictions_val'}: is a symbolic link where cycleseg makes a folder" in _one_line(capsys)
    assert main(["predict", str(run), "--data", str(tiny_data), "--out", str(run / "predictions_val")]) == 2
    assert "is a symbolic link where cycleseg makes a folder" in _one_line(capsys)
    assert list(elsewhere.iterdir()) == []


def test_the_cache_never_writes_through_a_planted_link(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("cycleseg_cache"))
    victim = tmp_path / "victim"
    victim.write_bytes(b"the user's own file\n")
    folder = data / "cycleseg_cache" / "64x32"
    folder.mkdir(parents=True)
    (folder / "val_images.npy.tmp").symlink_to(victim)  # replaced, never written through
    os.mkfifo(folder / "train_images.npy.tmp")  # removed, never opened
    assert answered_within(lambda: main(["prepare", str(data), "--size", "64x32"]), 10) == 0
    assert victim.read_bytes() == b"the user's own file\n" and np.load(folder / "val_images.npy").shape[0] == 4
    shutil.rmtree(data / "cycleseg_cache")
    (data / "cycleseg_cache").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    assert main(["prepare", str(data), "--size", "64x32"]) == 2
    assert f"{data / 'cycleseg_cache'}: is a symbolic link where cycleseg makes a folder" in _one_line(capsys)
    assert list((tmp_path / "elsewhere").iterdir()) == []


# ------------------------------------------------------------------------------------------------ full disks

class _FullAt:
    """A file whose writes fail with ENOSPC once `limit` bytes are written: a disk that fills at a chosen byte."""

    def __init__(self, f, limit: int) -> None:
        self.f, self.limit, self.written = f, limit, 0

    def write(self, data) -> int:
        if self.written + len(data) > self.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("limit", [0, 64, 4096, 300_000])
def test_a_disk_full_at_any_byte_of_a_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, monkeypatch,
                                                                                          limit):
    path = tmp_path / LAST
    save_checkpoint(path, {"value": torch.ones(3)})
    real_open = open
    monkeypatch.setattr("cycleseg.fileio.open", lambda fd, mode: _FullAt(real_open(fd, mode), limit), raising=False)
    # torch's zip writer swallows the OSError of its file and raises "RuntimeError: [enforce fail at
    # inline_container.cc] unexpected pos" later: the error must still be the disk's, in one line
    with pytest.raises(RunError) as e:
        save_checkpoint(path, {"value": torch.zeros(100_000), "more": torch.zeros(100_000)})
    message = str(e.value)
    assert message.startswith(f"{path}: could not write (No space left on device); the disk (or quota) of "
                              f"{tmp_path} is full (") and " free, too little for this file)" in message
    assert message.endswith("the previous file is intact") and "\n" not in message
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["value"], torch.ones(3)) and not (tmp_path / (LAST + ".tmp")).exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB file system (tmpfs), or a skip where this machine does not let the tests mount one."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False) if shutil.which("mount") else None
    if done is None or done.returncode != 0:
        pytest.skip("cannot mount a 3 MB tmpfs here (needs root and mount); the disk-full tests at a chosen byte "
                    "stand in")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_file_system_is_one_line_for_train_and_upgrade(small_disk, tiny_data, capsys):
    """`train` whose first checkpoint does not fit, and `upgrade` without room for the new file: one line naming
    the file and the free space, exit 2 / 1, the previous file intact."""
    out = small_disk / "run"
    assert main(["train", str(CONFIGS / "demo" / "quant2.yaml"), "--data", str(tiny_data), "--out", str(out),
                 "data.height=32", "data.width=64", "optim.epochs=1", "optim.decay_start_epoch=0",
                 "train.progress=false"]) == 2
    line = _one_line(capsys)
    assert f"error: {out / LAST}: could not write (No space left on device); the disk (or quota) of {out} is full" \
        in line and "free, too little for this file" in line
    shutil.rmtree(out)
    old = small_disk / "old.pt"
    torch.save({"format": V1, "version": "0.1.0", "value": torch.zeros(400_000),  # 1.6 MB: no room for a copy
                "rng": {"numpy": np.random.get_state()}}, old)
    before = old.read_bytes()
    assert main(["upgrade", str(old), "--trust-checkpoint"]) == 1
    assert f"{old}: could not write (No space left on device)" in capsys.readouterr().err
    assert old.read_bytes() == before and not (small_disk / "old.pt.tmp").exists()


# ------------------------------------------------------------------------------------------ upgrade's lock

def test_upgrade_is_refused_while_another_process_holds_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    runs.write_json(run / runs.STATUS, {"state": "running"})
    old = run / "old.pt"
    torch.save({"format": V1, "version": "0.1.0", "value": torch.ones(3), "rng": {"numpy": np.random.get_state()}},
               old)
    before = old.read_bytes()
    other = runs.RunLock(run, command="cycleseg train --resume RUN")
    pid = os.fork()  # the trainer: another process, holding the run until told to go
    if pid == 0:
        other.acquire()
        time.sleep(30)
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while runs.run_in_use(run) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert main(["upgrade", str(run), "--trust-checkpoint"]) == 1
        assert "in use by `cycleseg train --resume RUN`" in capsys.readouterr().err
        assert old.read_bytes() == before
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert main(["upgrade", str(run), "--trust-checkpoint"]) == 0 and old.read_bytes() != before


# --------------------------------------------------------------------------- configs, --only and diagnose

def test_the_sweep_reads_configs_as_the_loader_does(tmp_path, tiny_data, capsys):
    config = tmp_path / "noise.yaml"
    config.write_bytes(b"\x9a\x01\xd7\xff\xfe random bytes \x00\x80")
    assert main(["sweep", str(config), "--out", str(tmp_path / "sweep"), "--data", str(tiny_data)]) == 2
    sweep_line = _one_line(capsys)
    assert main(["train", str(config), "--data", str(tiny_data), "--out", str(tmp_path / "run")]) == 2
    train_line = _one_line(capsys)
    assert sweep_line.split("error: ")[1] == train_line.split("error: ")[1]
    assert f"{config}: not valid YAML" in sweep_line and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("only", [",", "", " , "])
def test_only_without_names_is_an_error(tmp_path, capsys, only):
    assert main(["sweep", str(CONFIGS / "demo"), "--out", str(tmp_path / "sweep"), "--only", only]) == 2
    assert "--only: no config names given" in _one_line(capsys) and not (tmp_path / "sweep").exists()


def test_diagnose_names_the_checkpoint_that_is_not_the_runs_model(run, tiny_data, capsys):
    plain = load_config(CONFIGS / "erfnet.yaml", ["data.height=32", "data.width=64", "train.precision=fp32",
                                                  "model.num_classes=20"])  # as train resolves it from the data
    TrainState(plain, torch.device("cpu")).save(run / "epoch_0000.pt")  # a plain run's checkpoint, copied in
    assert main(["diagnose", str(run), "--data", str(tiny_data), "--along-training"]) == 2
    line = _one_line(capsys)
    assert f"error: {run / 'epoch_0000.pt'}: holds a plain model, but the run {run} is a cyclegan model" in line


# ---------------------------------------------------------------------------------- runs left out, named

def _seeded_sweep(trained_cycle_run: Path, sweep: Path) -> None:
    """quant2/seed0 finished, seed1 stopped (interrupted), seed2 stopped before config.yaml, seed3 unreadable."""
    shutil.copytree(trained_cycle_run, sweep / "quant2" / "seed0")
    for seed in (1, 2, 3):
        (sweep / "quant2" / f"seed{seed}").mkdir()
    for seed in (1, 3):
        shutil.copyfile(trained_cycle_run / runs.CONFIG, sweep / "quant2" / f"seed{seed}" / runs.CONFIG)
    runs.write_json(sweep / "quant2" / "seed1" / runs.STATUS, {"state": "interrupted", "step": 1})
    (sweep / "quant2" / "seed2" / LOCK).touch()
    (sweep / "quant2" / "seed3" / runs.STATUS).write_text("{cut")


def test_table_and_report_name_every_run_they_leave_out(trained_cycle_run, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _seeded_sweep(trained_cycle_run, sweep)
    assert main(["table", str(sweep)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("missing (not finished, left out): quant2/seed1 (interrupted), quant2/seed2 (not "
                           "started: no config.yaml), quant2/seed3 (unreadable: ")
    assert f"{sweep / 'quant2' / 'seed3' / runs.STATUS}: not readable JSON" in last
    assert main(["table", str(sweep / "quant2")]) == 0  # the config's folder of seeds: the same runs named
    assert capsys.readouterr().out.strip().splitlines()[-1] == last

    md, _ = build_report(sweep, data_root=tmp_path / "no-data")
    err = capsys.readouterr().err
    assert "cycleseg report: 3 run(s) left out of every number and figure: " in err
    text = md.read_text()
    for name in ("quant2/seed1 (interrupted", "quant2/seed2 (not started: no config.yaml)", "quant2/seed3 (unreadable: "):
        assert name in err and name in text, name


# ------------------------------------------------------------------------------------------ seeded NumPy

def _assert_equal(a, b, where="last.pt"):
    """Two checkpoint states equal bit for bit, but for the time the training took."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k != "train_seconds":
                _assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow  # two trainings: a few seconds
def test_two_runs_of_one_seed_end_with_the_same_last_pt_numpy_state_included(tiny_data, tmp_path):
    """The smallest run there is (a plain ERFNet, one iteration on two images, one validation image), twice."""
    cfg = load_config(CONFIGS / "erfnet.yaml", [f"data.root={tiny_data}", "data.height=32", "data.width=64",
                                                "train.precision=fp32", "optim.batch_size=2", "optim.epochs=1",
                                                "optim.decay_start_epoch=0", "data.max_train_images=2",
                                                "data.max_val_images=1", "train.progress=false", "train.seed=3"])
    states = []
    for name, draws in (("a", 3), ("b", 7)):
        np.random.rand(draws)  # whatever the process drew before: the seed decides, not the history
        train(cfg, tmp_path / name)
        states.append(load_checkpoint(tmp_path / name / LAST))
    assert states[0]["rng"]["numpy"]["pos"] == states[1]["rng"]["numpy"]["pos"]
    _assert_equal(states[0], states[1])
