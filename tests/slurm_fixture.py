"""`slurm_cluster`: a real one-node Slurm cluster for the tests marked `slurm`, started once per session.

tests/slurm/slurm-up.sh starts munged, mariadbd, slurmdbd, slurmctld and slurmd in a fresh /tmp/slurm-XXXXXX
(own munge socket, own ports, nothing of the machine's own Slurm or MUNGE is used) and records their PIDs;
tests/slurm/slurm-down.sh cancels the cluster's jobs and stops exactly those PIDs. The fixture yields the
cluster's environment and puts SLURM_CONF into os.environ meanwhile (submitit calls sbatch, squeue, sacct and
scancel, and the jobs inherit it).

Where the packages are missing the rule of tests/system_deps.py applies: they skip with one line where they
cannot be installed (not root, no apt-get), and fail naming `make test-deps` where they could have been;
CYCLESEG_NO_SLURM=1 skips them. KEEP_SLURM_DIR=1 keeps the cluster's folder, with the daemons' logs in log/,
after the session.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from system_deps import decide

SCRIPTS = Path(__file__).resolve().parent / "slurm"
PROGRAMS = ("munged", "mungekey", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "squeue", "sacct",
            "scancel", "scontrol", "sacctmgr", "sinfo")
SBIN = "/usr/sbin:/sbin"


PACKAGES = "slurmctld slurmd slurm-client munge slurmdbd mariadb-server-core"


def _why_not() -> str | None:
    """Why a cluster cannot start here, or None; skips the test where the packages cannot be installed."""
    missing = [p for p in PROGRAMS if shutil.which(p, path=f"{os.environ.get('PATH', '')}:{SBIN}") is None]
    verdict = decide("slurm", "the Slurm tests", missing, PACKAGES)
    if verdict:
        if verdict[0] == "skip":
            pytest.skip(verdict[1])
        return verdict[1]
    if os.geteuid() != 0:  # installed, but slurmd starts the jobs as root
        pytest.skip("the Slurm tests skipped: they need root (slurmd starts the jobs); run make test as root")
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed: pip install -e '.[test]' (or '.[slurm]')"
    return None


def _port_base() -> int:
    """A port base whose four ports (+6 mariadbd, +17 slurmctld, +18 slurmd, +19 slurmdbd) are free now, so that
    clusters of other sessions on this machine do not collide with this one."""
    for _ in range(100):
        base = random.randrange(20000, 60000, 50)
        try:
            for offset in (6, 17, 18, 19):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports for the Slurm cluster")


def _log_tails(text: str) -> str:
    """The last lines of the daemons' logs in the folder that slurm-up.sh names when it fails."""
    tails = []
    for word in text.split():
        folder = Path(word.strip("()"))
        if word.startswith("/tmp/slurm-") and folder.is_dir():
            for log in sorted(folder.glob("*")):
                if log.is_file():
                    lines = log.read_text(errors="replace").splitlines()[-5:]
                    tails.append(f"--- {log}\n" + "\n".join(lines))
    return "\n".join(tails)


@pytest.fixture(scope="session")
def slurm_cluster():
    """{"SLURM_CONF", "SLURM_TEST_DIR", "start_s"} of a running one-node cluster (partition `debug`, all CPUs
    of this machine, accounting on); stopped at the end of the session."""
    reason = _why_not()
    if reason:
        pytest.fail(f"cannot start a Slurm cluster: {reason}", pytrace=False)
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:{SBIN}", "SLURM_TEST_PORT_BASE": str(_port_base()),
           "SLURM_TEST_CRED_EXPIRE": "5", "WITH_DBD": "1"}
    start = time.monotonic()
    try:
        up = subprocess.run([str(SCRIPTS / "slurm-up.sh")], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"tests/slurm/slurm-up.sh did not finish in 120 s: {e.stderr}", pytrace=False)
    if up.returncode != 0:
        pytest.fail(f"tests/slurm/slurm-up.sh failed (exit {up.returncode}): {up.stderr.strip()}\n"
                    f"{_log_tails(up.stderr)}", pytrace=False)
    cluster = dict(kv.split("=", 1) for kv in up.stdout.split()[1:])  # "export A=.. B=.."
    cluster["start_s"] = round(time.monotonic() - start, 1)
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    os.environ["SLURM_CONF"] = cluster["SLURM_CONF"]
    os.environ["PATH"] = env["PATH"]
    try:
        yield cluster
    finally:
        subprocess.run([str(SCRIPTS / "slurm-down.sh"), cluster["SLURM_TEST_DIR"]], env=env, timeout=120,
                       check=False)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
