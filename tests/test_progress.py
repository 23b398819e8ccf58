"""Progress bars where long work happens, on a terminal; nothing with --quiet or when stderr is not a terminal;
training off a terminal prints plain progress lines instead."""

import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from datetime import datetime

import pytest

pytestmark = pytest.mark.slow


def _on_a_terminal(args: list[str]) -> str:
    """Run `cycleseg ARGS` with stdout and stderr on a pseudo-terminal; everything it wrote there."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a new pty is 0x0
    proc = subprocess.Popen([sys.executable, "-m", "cycleseg.cli", *args], stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=follower, env={**os.environ, "COLUMNS": "120"})
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the follower side closed: the process ended
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")[-2000:]
    return b"".join(chunks).decode(errors="replace")


def test_long_commands_show_progress_on_a_terminal(trained_cycle_run, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_cycle_run, run)
    data = ["--data", str(tiny_data)]
    expected = {
        "make-synthetic train": ["make-synthetic", str(tmp_path / "synthetic"), "--train", "3", "--val", "2",
                                 "--size", "64x32"],
        "evaluate val": ["evaluate", str(run), *data],
        "calibrate val": ["calibrate", str(run), *data],
        "diagnose val": ["diagnose", str(run), *data, "--max-images", "2", "--examples", "1"],
        "validation": ["train", "configs/demo/quant2.yaml", *data, "--out", str(tmp_path / "new"), "data.height=32",
                       "data.width=64", "optim.epochs=1", "optim.decay_start_epoch=0"],
        "segment": ["segment", str(run), str(tiny_data / "leftImg8bit" / "val"), "--out", str(tmp_path / "seg")],
    }
    for bar, args in expected.items():
        assert f"{bar}:" in _on_a_terminal(args), bar
    quiet = _on_a_terminal(["evaluate", str(run), *data, "--quiet"])
    assert "evaluate val:" not in quiet and "mIoU" in quiet


def test_no_progress_when_stderr_is_not_a_terminal(trained_cycle_run, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_cycle_run, run)
    proc = subprocess.run([sys.executable, "-m", "cycleseg.cli", "evaluate", str(run), "--data",
                           str(tiny_data), "--precision", "fp32"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "evaluate val:" not in proc.stderr + proc.stdout


def test_train_off_a_terminal_prints_progress_lines_and_logs_the_pace(tiny_data, tmp_path):
    """stdout a pipe (a batch system's log file): a line every train.print_every iterations and at each validation,
    with step / total, epoch, the losses, it/s, ETA and peak memory; every log.jsonl record has the same fields."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "cycleseg.cli", "train", "configs/demo/quant2.yaml", "--data",
                           str(tiny_data), "--out", str(out), "data.height=32", "data.width=64", "optim.batch_size=4",
                           "optim.epochs=2", "optim.decay_start_epoch=1", "train.eval_every=1",
                           "train.print_every=2"], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if " demo-quant2: step " in line]
    training = [line for line in lines if "validation" not in line]
    validations = [line for line in lines if "validation" in line]
    assert [line.split(" step ")[1].split(":")[0] for line in training] == ["2/4, epoch 1/2", "4/4, epoch 2/2"]
    assert len(validations) == 2 and "mIoU" in validations[-1] and "PSNR" in validations[-1]
    for line in lines:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line), line
        assert re.search(r"; [\d.]+ it/s, ETA \d+ (s|min)", line) and "peak memory" in line, line
    assert all(k in training[0] for k in ("seg ", "rec_x ", "adv ", "rec_y ", "D ", "lr ")), training[0]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    for record in records:
        assert {"time", "step", "total_steps", "epoch", "it_per_s", "eta_s", "peak_memory_mib"} <= set(record)
        assert record["total_steps"] == 4 and record["peak_memory_mib"] > 0
        assert datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S%z")
    assert records[-1]["it_per_s"] > 0 and records[-1]["eta_s"] == 0
