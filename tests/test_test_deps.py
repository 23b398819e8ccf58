"""`make test-deps` (tests/install-deps.sh) and the rule the Slurm and browser tests follow (tests/system_deps.py):
installed where root and apt-get exist, one line and skipped tests where they do not, never a failing `make test`
on a machine that cannot install them."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

import system_deps

SCRIPT = Path(__file__).resolve().parent / "install-deps.sh"
SLURM_PACKAGES = "slurmctld slurmd slurm-client munge slurmdbd mariadb-server-core"


def _fake(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _run(tmp_path: Path, uid: int, apt: bool, present: tuple[str, ...] = (), **env: str):
    """install-deps.sh with a PATH holding only fakes: `id -u` prints uid, apt-get (if apt) records its arguments,
    and the programs in `present` exist; nothing of the machine's own Slurm or Chromium is seen."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _fake(bin_dir, "id", f"echo {uid}")
    if apt:
        _fake(bin_dir, "apt-get", f'echo "$@" >> {tmp_path / "apt.log"}')
    for program in present:
        _fake(bin_dir, program, "exit 0")
    return subprocess.run([shutil.which("bash"), str(SCRIPT)], env={"PATH": str(bin_dir), "CYCLESEG_SBIN": "", **env},
                          capture_output=True, text=True, timeout=30, check=False)


def test_not_root_says_in_one_line_what_is_skipped_and_passes(tmp_path):
    result = _run(tmp_path, uid=1000, apt=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and result.stderr == ""
    assert lines[0].startswith("test-deps: not root, cannot install")
    assert "skipping the Slurm tests and the browser tests" in lines[0] and "make test-deps" in lines[0]
    assert not (tmp_path / "apt.log").exists()


def test_no_apt_get_says_so_and_passes(tmp_path):
    result = _run(tmp_path, uid=0, apt=False, present=("chromium",))  # a browser, but no Slurm
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [result.stdout.strip()]
    assert "no apt-get on this machine" in result.stdout
    assert "skipping the Slurm tests (" in result.stdout and "browser" not in result.stdout


def test_root_with_apt_installs_what_is_missing(tmp_path):
    result = _run(tmp_path, uid=0, apt=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("test-deps: installing")
    calls = (tmp_path / "apt.log").read_text().splitlines()
    assert calls == [f"install -y -q --no-install-recommends {SLURM_PACKAGES} chromium fonts-dejavu-core"]


def test_nothing_missing_is_quiet(tmp_path):
    programs = ("slurmctld", "slurmd", "sbatch", "squeue", "sacct", "scontrol", "munged", "mungekey", "slurmdbd",
                "mariadbd", "chromium")
    result = _run(tmp_path, uid=1000, apt=False, present=programs)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_groups_can_be_left_out(tmp_path):
    result = _run(tmp_path, uid=0, apt=True, CYCLESEG_NO_SLURM="1", CYCLESEG_NO_BROWSER="1")
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 2 and "not installing" in result.stdout
    assert not (tmp_path / "apt.log").exists()
    assert _run(tmp_path, uid=0, apt=True, present=()).returncode == 0  # default: both groups
    bad = subprocess.run([shutil.which("bash"), str(SCRIPT), "browsers"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "unknown group" in bad.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_as_a_real_unprivileged_user():
    """The same script run as user nobody, with the machine's own id and PATH minus the packages' folders.

    Nobody runs a copy of the script in a folder of its own under the system's temporary folder: the clone (and
    pytest's tmp_path) may sit in a folder only root may enter (/root, a mktemp -d folder)."""
    env = {"PATH": os.path.dirname(shutil.which("id")), "CYCLESEG_SBIN": ""}
    # chromium may be installed in /usr/bin; ask for the Slurm group, whose daemons Debian puts in /usr/sbin
    if all(shutil.which(p, path=env["PATH"]) for p in ("slurmctld", "slurmd", "munged")):
        pytest.skip("Slurm's daemons are on PATH here; nothing would be missing")
    with tempfile.TemporaryDirectory(prefix="cycleseg-test-deps-") as folder:
        readable = Path(folder)
        if any(not os.stat(p).st_mode & stat.S_IXOTH for p in readable.parents):
            pytest.skip(f"{readable.parent}: the temporary folder is not open to other users; set TMPDIR to one that is")
        readable.chmod(0o755)
        script = readable / SCRIPT.name
        shutil.copyfile(SCRIPT, script)
        script.chmod(0o644)
        result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", shutil.which("bash"),
                                 str(script), "slurm"], env=env, cwd=readable, capture_output=True, text=True,
                                timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("test-deps: not root, cannot install slurmctld")


def test_the_tests_skip_where_nothing_can_be_installed(monkeypatch):
    monkeypatch.delenv("CYCLESEG_NO_BROWSER", raising=False)
    assert system_deps.decide("browser", "the browser tests", [], "chromium") is None
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    verdict, reason = system_deps.decide("browser", "the browser tests", ["chromium"], "chromium")
    assert verdict == "skip" and "not root" in reason and "make test-deps" in reason
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(system_deps, "which", lambda program: None)  # root, but no apt-get
    verdict, reason = system_deps.decide("browser", "the browser tests", ["chromium"], "chromium")
    assert verdict == "skip" and "no apt-get" in reason


def test_the_tests_fail_where_the_packages_could_have_been_installed(monkeypatch):
    monkeypatch.delenv("CYCLESEG_NO_SLURM", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(system_deps, "which", lambda program: "/usr/bin/apt-get" if program == "apt-get" else None)
    verdict, reason = system_deps.decide("slurm", "the Slurm tests", ["sbatch"], SLURM_PACKAGES)
    assert verdict == "fail" and "make test-deps" in reason
    monkeypatch.setenv("CYCLESEG_NO_SLURM", "1")
    assert system_deps.decide("slurm", "the Slurm tests", ["sbatch"], SLURM_PACKAGES)[0] == "skip"
