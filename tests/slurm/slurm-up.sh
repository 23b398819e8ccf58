#!/bin/bash
# Start a throwaway single-node Slurm cluster (munged + [mariadbd + slurmdbd] + slurmctld + slurmd) in a temp dir.
# Usage: eval "$(slurm-up.sh)"   -> exports SLURM_TEST_DIR and SLURM_CONF; stop it with slurm-down.sh "$SLURM_TEST_DIR"
# WITH_DBD=1 (default) also starts mariadbd + slurmdbd so that `sacct` works (submitit needs it to see a cancel).
# SLURM_TEST_PORT_BASE (default 16800): ports base+17 slurmctld, +18 slurmd, +19 slurmdbd, +6 mariadbd.
# SLURM_TEST_CRED_EXPIRE (default 10): seconds a requeued job waits before it may start again (Slurm: 120).
# Needs root (slurmd launches the jobs) and the packages of `make slurm-deps`. Adapted from
# /work/shared/slurm-recipe.md (tests/slurm/README.md: why each setting is there).
set -euo pipefail
WITH_DBD=${WITH_DBD:-1}
T=$(mktemp -d /tmp/slurm-XXXXXX)
chmod 755 "$T"                        # munged insists the socket dir is world-executable
HOST=$(hostname -s)
NCPU=$(nproc --all)  # --all: OMP_NUM_THREADS (set by the tests) would make nproc say 1
MEM=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))
BASE=${SLURM_TEST_PORT_BASE:-16800}
CTLD_PORT=$((BASE+17)); SLURMD_PORT=$((BASE+18)); DBD_PORT=$((BASE+19)); DB_PORT=$((BASE+6))
mkdir -p "$T"/{munge,state,spool,log,db}
mungekey --create --keyfile="$T/munge/munge.key" --force
chmod 400 "$T/munge/munge.key"

cat > "$T/slurm.conf" <<CONF
ClusterName=testcluster
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# own munge socket; cred_expire also = delay before a requeued job may restart (default 120 s)
AuthInfo=socket=${T}/munge/munge.socket,cred_expire=${SLURM_TEST_CRED_EXPIRE:-10}
StateSaveLocation=${T}/state
SlurmdSpoolDir=${T}/spool
SlurmctldPidFile=${T}/slurmctld.pid
SlurmdPidFile=${T}/slurmd.pid
SlurmctldLogFile=${T}/log/slurmctld.log
SlurmdLogFile=${T}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# bf_interval, sched_interval: try pending jobs every second (a requeued job waits for its BeginTime, then for
# the next scheduling pass: 60 s by default)
SchedulerParameters=bf_interval=1,sched_interval=1
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${NCPU} RealMemory=${MEM} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONF

if [ "$WITH_DBD" = 1 ]; then
  cat >> "$T/slurm.conf" <<CONF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=${DBD_PORT}
# munge socket for talking to slurmdbd (AuthInfo is NOT used for that connection)
AccountingStoragePass=${T}/munge/munge.socket
CONF
  cat > "$T/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=${T}/munge/munge.socket
DbdHost=${HOST}
DbdAddr=127.0.0.1
DbdPort=${DBD_PORT}
SlurmUser=root
PidFile=${T}/slurmdbd.pid
LogFile=${T}/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=${DB_PORT}
StorageUser=root
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$T/slurmdbd.conf"          # slurmdbd refuses a group/world-readable conf
else
  echo "AccountingStorageType=accounting_storage/none" >> "$T/slurm.conf"
fi

export SLURM_CONF="$T/slurm.conf"
fail() { # stop whatever was started (by recorded PID: TERM, then KILL after 10 s), keep $T for the logs
  echo "slurm-up: $1 (logs in $T/log)" >&2
  local f pids=()
  for f in "$T"/*.bgpid; do [ -f "$f" ] && pids+=("$(cat "$f")"); done
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 100); do
      local p alive=0
      for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      [ $alive = 0 ] && break
      sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  exit 1
}
wait_for() { # wait_for <seconds> <what> <cmd...>
  local end=$((SECONDS+$1)) what=$2; shift 2
  while [ $SECONDS -lt $end ]; do
    "$@" >/dev/null 2>&1 && return 0
    for f in "$T"/*.bgpid; do kill -0 "$(cat "$f")" 2>/dev/null || fail "$(basename "$f" .bgpid) exited"; done
    sleep 0.1
  done
  fail "timeout waiting for $what"
}
bg() { # bg <name> <cmd...> : start in foreground mode, detached, record PID
  local name=$1; shift
  setsid "$@" > "$T/log/$name.out" 2>&1 < /dev/null &
  echo $! > "$T/$name.bgpid"
}

bg munged munged -F --socket="$T/munge/munge.socket" --key-file="$T/munge/munge.key" \
   --log-file="$T/log/munged.log" --pid-file="$T/munge/munged.pid" --seed-file="$T/munge/munged.seed"
wait_for 10 munged test -S "$T/munge/munge.socket"

if [ "$WITH_DBD" = 1 ]; then
  bg mariadbd mariadbd --no-defaults --user=root --datadir="$T/db" --socket="$T/db/mysql.sock" \
     --port=${DB_PORT} --bind-address=127.0.0.1 --skip-grant-tables --pid-file="$T/db/mariadbd.pid" \
     --log-error="$T/log/mariadbd.err" --innodb-buffer-pool-size=64M --innodb-log-file-size=16M
  wait_for 30 mariadbd test -S "$T/db/mysql.sock"
  bg slurmdbd slurmdbd -D
  wait_for 30 slurmdbd bash -c "sacctmgr -n list cluster"
  sacctmgr -i add cluster testcluster >/dev/null 2>&1 || true
fi

bg slurmctld slurmctld -D -i -f "$SLURM_CONF"
wait_for 30 slurmctld bash -c "scontrol ping | grep -q UP"
bg slurmd slurmd -D -f "$SLURM_CONF"
wait_for 30 "node idle" bash -c "sinfo -h -o %T | grep -qx idle"

# the recorded PIDs must be the daemons themselves (setsid does not fork in a non-job-control shell)
for n in munged mariadbd slurmdbd slurmctld slurmd; do
  [ -f "$T/$n.bgpid" ] || continue
  [ "$(cat /proc/"$(cat "$T/$n.bgpid")"/comm 2>/dev/null)" = "$n" ] || fail "PID recorded for $n is not $n"
done
echo "export SLURM_TEST_DIR=$T SLURM_CONF=$T/slurm.conf"
