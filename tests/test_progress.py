"""Progress bars where long work happens, on a terminal; nothing with --quiet or when stderr is not a terminal."""

import fcntl
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios

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
