#!/bin/bash
# Install the Debian packages that some tests need, when missing (`make test-deps`; `make test` runs it first):
#   slurm:   slurmctld slurmd slurm-client munge (the one-node cluster of tests/test_slurm.py) and slurmdbd
#            mariadb-server-core (its accounting: sacct);
#   browser: chromium (tests/test_docs.py and tests/test_sweep_report.py open the built pages headless).
# Arguments name the groups (default: both). Quick (no apt) when the programs are there.
# Where they cannot be installed (not root, no apt-get: macOS, other distributions) it prints ONE line saying
# which tests will be skipped and how to run them, and exits 0: `make test` still passes, the tests skip.
# CYCLESEG_NO_SLURM=1 / CYCLESEG_NO_BROWSER=1 leave a group out (no install; its tests skip).
# CYCLESEG_SBIN: folders searched besides PATH (default /usr/sbin:/sbin, where Debian puts the daemons).
set -euo pipefail
groups="${*:-slurm browser}"
SBIN="${CYCLESEG_SBIN-/usr/sbin:/sbin}"
SLURM_PACKAGES="slurmctld slurmd slurm-client munge slurmdbd mariadb-server-core"
SLURM_PROGRAMS="slurmctld slurmd sbatch squeue sacct scontrol munged mungekey slurmdbd mariadbd"
BROWSER_PACKAGES="chromium fonts-dejavu-core"  # a font, or the pages render without text

found() {  # a program on PATH or in $SBIN
  command -v "$1" >/dev/null 2>&1 && return 0
  local d
  for d in ${SBIN//:/ }; do [ -x "$d/$1" ] && return 0; done
  return 1
}

packages=""; skipped=""; missing=""
for g in $groups; do
  case "$g" in
    slurm)
      if [ "${CYCLESEG_NO_SLURM:-0}" = 1 ]; then
        echo "test-deps: CYCLESEG_NO_SLURM=1: not installing Slurm; the Slurm tests are skipped"; continue
      fi
      m=""; for p in $SLURM_PROGRAMS; do found "$p" || m="$m $p"; done
      [ -n "$m" ] && { packages="$packages $SLURM_PACKAGES"; skipped="$skipped${skipped:+ and }the Slurm tests"
                       missing="$missing$m"; } ;;
    browser)
      if [ "${CYCLESEG_NO_BROWSER:-0}" = 1 ]; then
        echo "test-deps: CYCLESEG_NO_BROWSER=1: not installing Chromium; the browser tests are skipped"; continue
      fi
      if ! found chromium && ! found chromium-browser && ! found google-chrome; then
        packages="$packages $BROWSER_PACKAGES"; skipped="$skipped${skipped:+ and }the browser tests"
        missing="$missing chromium"
      fi ;;
    *) echo "test-deps: unknown group '$g' (slurm, browser)" >&2; exit 2 ;;
  esac
done
[ -z "$packages" ] && exit 0

why=""
if [ "$(id -u)" != 0 ]; then why="not root"
elif ! command -v apt-get >/dev/null 2>&1; then why="no apt-get on this machine"
fi
if [ -n "$why" ]; then
  echo "test-deps: $why, cannot install$packages: skipping $skipped (missing:$missing);" \
       "to run them, on Debian/Ubuntu as root: make test-deps"
  exit 0
fi

echo "test-deps: installing$packages (missing:$missing)"
export DEBIAN_FRONTEND=noninteractive
# Services are not started: the tests start their own daemons (in a container, policy-rc.d blocks the start).
apt-get install -y -q --no-install-recommends $packages >/dev/null \
  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $packages >/dev/null; } \
  || { echo "test-deps: apt-get install$packages failed; install them by hand, or set CYCLESEG_NO_SLURM=1 /" \
            "CYCLESEG_NO_BROWSER=1 to leave those tests out" >&2; exit 1; }
