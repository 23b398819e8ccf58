#!/bin/bash
# Usage: slurm-down.sh <SLURM_TEST_DIR>   -- cancels the cluster's jobs, stops only the PIDs recorded by slurm-up.sh
# and removes the dir (KEEP_SLURM_DIR=1 keeps it, with the daemons' logs in log/).
T=${1:?test dir}
stop() { # SIGTERM a list of recorded daemons, wait up to 10 s, then SIGKILL
  local pids=()
  for n in "$@"; do [ -f "$T/$n.bgpid" ] && pids+=("$(cat "$T/$n.bgpid")"); done
  [ ${#pids[@]} -eq 0 ] && return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  alive() { local p; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
  for _ in $(seq 100); do alive || return 0; sleep 0.1; done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}
# slurmd does NOT kill running jobs on exit (slurmstepd lives on), so cancel them first
if [ -f "$T/slurmctld.bgpid" ] && kill -0 "$(cat "$T/slurmctld.bgpid")" 2>/dev/null; then
  export SLURM_CONF="$T/slurm.conf"
  scancel --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 150); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.1; done
fi
# all at once (about 3.5 s instead of 7 s in order; slurmctld then only logs that slurmdbd went away)
stop slurmd slurmctld slurmdbd mariadbd munged
# remove the temp dir unless asked to keep it (logs are in $T/log)
case "$T" in /tmp/slurm-*) [ "${KEEP_SLURM_DIR:-0}" = 1 ] || rm -rf "$T";; esac
