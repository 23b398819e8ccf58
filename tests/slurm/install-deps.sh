#!/bin/bash
# Install the Debian packages that the Slurm tests (tests/test_slurm.py) start a cluster with, when missing:
# slurmctld slurmd slurm-client munge (the cluster) and slurmdbd mariadb-server-core (accounting: sacct).
# Quick (no apt) when they are installed. Needs root and apt-get; CYCLESEG_NO_SLURM=1 skips it (and the tests).
set -euo pipefail
PACKAGES="slurmctld slurmd slurm-client munge slurmdbd mariadb-server-core"
PROGRAMS="slurmctld slurmd sbatch squeue sacct scontrol munged mungekey slurmdbd mariadbd"
if [ "${CYCLESEG_NO_SLURM:-0}" = 1 ]; then
  echo "slurm-deps: CYCLESEG_NO_SLURM=1: not installing Slurm; the Slurm tests are skipped"
  exit 0
fi
missing=""
for p in $PROGRAMS; do
  command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
fail() {
  echo "slurm-deps: $1; the Slurm tests need$missing (packages: $PACKAGES)." >&2
  echo "slurm-deps: install them, or set CYCLESEG_NO_SLURM=1 to leave the Slurm tests out" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || fail "not root, cannot apt-get install"
command -v apt-get >/dev/null 2>&1 || fail "no apt-get on this machine"
echo "slurm-deps: installing $PACKAGES (missing:$missing)"
export DEBIAN_FRONTEND=noninteractive
# Services are not started: the tests start their own daemons (in a container, policy-rc.d blocks the start).
apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null \
  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null; } \
  || fail "apt-get install failed"
