#!/usr/bin/env bash
# A single-node SLURM for the tests: munge, slurmctld and slurmd on this machine,
# plus Debian's qsub/qstat/qdel wrappers so PBS job scripts run on the same node.
#
#   .ci/slurm.sh install   apt packages (CI runs on a fresh machine)
#   .ci/slurm.sh start     write the config, start the daemons, wait for the node
#   .ci/slurm.sh stop      stop the daemons this script started, by process id
#   .ci/slurm.sh status    sinfo
#
# State, logs and the config live in $EDF_SLURM_DIR (default /tmp/edf-slurm);
# clients find the config through SLURM_CONF=$EDF_SLURM_DIR/slurm.conf, which the
# test fixtures also fall back to.
set -euo pipefail

dir="${EDF_SLURM_DIR:-/tmp/edf-slurm}"
conf="$dir/slurm.conf"
export SLURM_CONF="$conf"

install() {
  if command -v slurmctld >/dev/null && command -v qsub >/dev/null \
    && command -v munged >/dev/null; then
    return 0
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge slurm-wlm-torque >/dev/null
}

write_config() {
  local host node cpus memory
  host=$(hostname -s)
  # slurmd must find its own name in the config, and the node is drained when
  # RealMemory exceeds what slurmd detects: take both from `slurmd -C`.
  node=$(slurmd -C | head -1)
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node")
  memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  mkdir -p "$dir/state" "$dir/spool" "$dir/jobs"
  cat >"$conf" <<EOF
ClusterName=edfci
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  install
  # sinfo retries for a minute when no controller answers: bound it.
  if timeout 3 sinfo -h -o %T 2>/dev/null | grep -q .; then
    echo "slurm already answering (SLURM_CONF=$conf)"
    return 0
  fi
  # Job ids and queued jobs survive in the state folder: start clean.
  rm -rf "$dir/state" "$dir/spool"
  write_config
  # No systemd here: munged needs its socket folder made by hand.
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    cp /run/munge/munged.pid "$dir/munged.pid"
  fi
  munge -n | unmunge | grep -q Success
  slurmctld -f "$conf"
  slurmd -f "$conf"
  for _ in $(seq 150); do
    if timeout 2 sinfo -h -o %T 2>/dev/null | grep -q '^idle'; then
      echo "slurm up: $(sinfo -h -o '%P %D %T %c CPUs %m MB')"
      return 0
    fi
    sleep 0.2
  done
  echo "slurm did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
  return 1
}

stop_pid() {
  local file=$1 pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  rm -f "$file"
}

stop() {
  # Cancel what is left so no job outlives CI, then stop the daemons we started.
  timeout 10 scancel --user="$(id -un)" 2>/dev/null || true
  stop_pid "$dir/slurmd.pid"
  stop_pid "$dir/slurmctld.pid"
  stop_pid "$dir/munged.pid"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
