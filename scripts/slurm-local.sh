#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (localhost), for tests and
# for trying examples/slurm/sweep.sbatch by hand. Runs as root in a container
# without systemd: munged, slurmctld and slurmd are started directly, with
# every file (config, key, sockets, state, logs) under one state folder.
#
#   scripts/slurm-local.sh install        install the Debian packages if missing
#   scripts/slurm-local.sh up DIR         install if needed, write DIR/slurm.conf,
#                                         start the daemons, wait for an idle node
#   scripts/slurm-local.sh down DIR       cancel the cluster's jobs, stop the
#                                         daemons started by `up DIR`
#
# Exit status of `install` and `up`: 0 done; 3 cannot be had here (not root,
# no apt-get, the install failed); 4 a daemon did not start; 5 the node did
# not become idle in time.
#
# After `up DIR`, point the Slurm commands at the cluster with
#   export SLURM_CONF=DIR/slurm.conf
#
# Settings (environment variables):
#   SLURM_LOCAL_PORT    slurmctld's port; slurmd uses the next one  (16817)
#   SLURM_LOCAL_CPUS    CPUs the node declares (more than the machine has is
#                       allowed: the node is oversubscribed)          (32)
#   SLURM_LOCAL_WAIT    seconds to wait for the node to be idle       (60)
#   SLURM_LOCAL_FORCE_INSTALL=1  run apt-get even when the packages are there
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)
# The programs `up` needs; any one missing: install the packages.
PROGRAMS=(munged slurmctld slurmd sinfo sbatch squeue scontrol)

log() { echo "slurm-local: $*" >&2; }

have_all() {
  local p
  for p in "${PROGRAMS[@]}"; do
    command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] || return 1
  done
}

install() {
  if [ "${SLURM_LOCAL_FORCE_INSTALL:-0}" != 1 ] && have_all; then
    log "packages present ($(dpkg-query -W -f='${Package} ${Version}, ' "${PACKAGES[@]}" 2>/dev/null))"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    log "cannot install ${PACKAGES[*]}: not root"
    return 3
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    log "cannot install ${PACKAGES[*]}: no apt-get"
    return 3
  fi
  log "installing ${PACKAGES[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  local t0=$SECONDS
  # apt's lock may be held by another install on this machine: wait for it.
  # Its output goes to a file, shown only when it fails.
  local aptlog
  aptlog="$(mktemp)"
  if ! apt-get -o DPkg::Lock::Timeout=300 update -qq >"$aptlog" 2>&1; then
    log "apt-get update failed:"; tail -n 20 "$aptlog" >&2; rm -f "$aptlog"; return 3
  fi
  if ! apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
    "${PACKAGES[@]}" >"$aptlog" 2>&1; then
    log "apt-get install failed:"; tail -n 20 "$aptlog" >&2; rm -f "$aptlog"; return 3
  fi
  rm -f "$aptlog"
  log "installed in $((SECONDS - t0)) s"
  have_all || { log "installed, yet a program is missing (${PROGRAMS[*]})"; return 3; }
}

pidfile_alive() {
  local f="$1" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

down() {
  local dir="${1:?usage: $0 down DIR}"
  local name f pid
  # Cancel this cluster's jobs first, so that Slurm ends their processes
  # (slurmstepd and the job scripts outlive slurmd otherwise).
  if pidfile_alive "$dir/slurmctld.pid" && [ -f "$dir/slurm.conf" ]; then
    export SLURM_CONF="$dir/slurm.conf"
    if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
      scancel --full -u "$(id -un)" 2>/dev/null || true
      for _ in $(seq 1 40); do
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.5
      done
      log "cancelled the jobs left in the queue"
    fi
  fi
  for name in slurmd slurmctld munged; do
    f="$dir/$name.pid"
    if pidfile_alive "$f"; then
      pid="$(cat "$f")"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "$pid" 2>/dev/null; then
        log "$name ($pid) did not stop on TERM: KILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      log "stopped $name ($pid)"
    fi
    rm -f "$f"
  done
}

up() {
  local dir="${1:?usage: $0 up DIR}"
  if [ "$(id -u)" != 0 ]; then
    log "cannot start the cluster: the daemons run as root here (SlurmUser=root)"
    return 3
  fi
  install || return $?
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  chmod 0700 "$dir"
  local port="${SLURM_LOCAL_PORT:-16817}"
  local cpus="${SLURM_LOCAL_CPUS:-32}"
  local wait_s="${SLURM_LOCAL_WAIT:-60}"
  local host
  host="$(hostname -s)"
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
  chmod 0700 "$dir/munge"

  # munge: a fresh key, a private socket.
  if [ ! -f "$dir/munge/munge.key" ]; then
    if command -v mungekey >/dev/null 2>&1; then
      mungekey --create --keyfile="$dir/munge/munge.key" --force >/dev/null
    else
      dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    fi
  fi
  chmod 0400 "$dir/munge/munge.key"
  local sock="$dir/munge/munge.socket"
  munged --key-file="$dir/munge/munge.key" --socket="$sock" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munge.seed" --force >&2 ||
    { log "munged did not start; its log:"; tail -n 20 "$dir/log/munged.log" >&2 || true; return 4; }
  if ! munge -S "$sock" -n </dev/null | unmunge -S "$sock" >/dev/null; then
    log "munge round trip failed"
    return 4
  fi

  cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm-local.sh: one node, localhost, no cgroups, no accounting.
ClusterName=braggrun-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
# Quick scheduling and requeue for tests.
SchedulerParameters=sched_interval=2,bf_interval=2
KillWait=5
MinJobAge=600
InactiveLimit=0
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -f "$SLURM_CONF" >&2 ||
    { log "slurmctld did not start; its log:"; tail -n 30 "$dir/log/slurmctld.log" >&2 || true; return 4; }
  slurmd -f "$SLURM_CONF" >&2 ||
    { log "slurmd did not start; its log:"; tail -n 30 "$dir/log/slurmd.log" >&2 || true; return 4; }

  local t0=$SECONDS state=""
  while [ $((SECONDS - t0)) -lt "$wait_s" ]; do
    state="$(sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true)"
    case "$state" in
      idle) break ;;
      down* | drain* | fail*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  if [ "$state" != idle ]; then
    log "node $host not idle after ${wait_s} s (state '${state:-none}'); logs:"
    tail -n 30 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
    return 5
  fi
  log "cluster up in $((SECONDS - t0)) s: node $host idle, SLURM_CONF=$dir/slurm.conf"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  install) install ;;
  up) up "$@" ;;
  down) down "$@" ;;
  *)
    echo "usage: $0 install | up DIR | down DIR" >&2
    exit 2
    ;;
esac
