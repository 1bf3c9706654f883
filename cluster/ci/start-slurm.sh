#!/usr/bin/env bash
# Start a single-node SLURM (munged + slurmctld + slurmd) on this machine, for the tests.
#
# For CI and development containers: Debian/Ubuntu, run as root, no systemd needed. Idempotent:
# installs the packages if missing, writes /etc/slurm/slurm.conf (only if absent or written by
# this script), starts whatever is not running, and waits until the node is idle.
# Exit status 0 when `sbatch` works, non-zero (with the reason on stderr) when it cannot be made
# to work here; tests/test_slurm.py then skips. Stop it all with cluster/ci/stop-slurm.sh.
#
# Environment: SLURM_START_TIMEOUT (seconds to wait for the node, default 60).
set -euo pipefail

MARKER="# written by plate_refocus cluster/ci/start-slurm.sh"
CONF=/etc/slurm/slurm.conf
TIMEOUT=${SLURM_START_TIMEOUT:-60}

say() { echo "start-slurm: $*" >&2; }
die() { say "$*"; exit 1; }
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons)"

# 1. Packages.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || die "slurm is not installed and apt-get is not available"
    say "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge \
        >/tmp/start-slurm-apt.log 2>&1; then
        apt-get update -q >>/tmp/start-slurm-apt.log 2>&1 || true
        apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge \
            >>/tmp/start-slurm-apt.log 2>&1 \
            || die "apt-get install failed (see /tmp/start-slurm-apt.log)"
    fi
fi

# 2. munge: a key, a run directory, the daemon as the munge user.
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key --force
fi
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! alive /run/munge/munged.pid; then
    say "starting munged"
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
fi
for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munged does not answer (see /var/log/munge/munged.log)"

# 3. slurm.conf for this one node: CPUs and memory from `slurmd -C`, memory 5% lower
#    (slurmd drains a node whose configured memory exceeds what it finds).
host=$(hostname -s)
read -r cpus mem < <(slurmd -C | awk '/^NodeName/ {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    print v["CPUs"], int(v["RealMemory"] * 0.95) }')
[[ -n "${cpus:-}" && -n "${mem:-}" ]] || die "could not read CPUs/RealMemory from 'slurmd -C'"
if [[ -f $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching it"
fi
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
new_conf=$(cat <<EOF
$MARKER
ClusterName=plate-refocus-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
MinJobAge=10
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
)
changed=0
if [[ ! -f $CONF ]] || [[ "$(cat "$CONF")" != "$new_conf" ]]; then
    printf '%s\n' "$new_conf" >"$CONF"
    changed=1
fi

# 4. Daemons: controller first, then the node daemon (restarted if the config changed).
if alive /run/slurmctld.pid && [[ $changed -eq 1 ]]; then
    say "slurm.conf changed: restarting"
    "$(dirname "$0")/stop-slurm.sh" --keep-munge
fi
if ! alive /run/slurmctld.pid; then
    say "starting slurmctld"
    slurmctld
fi
for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
scontrol ping 2>/dev/null | grep -q UP || die "slurmctld does not answer (see /var/log/slurm/slurmctld.log)"
if ! alive /run/slurmd.pid; then
    say "starting slurmd"
    slurmd
fi

# 5. Wait for the node to be idle (resume it once if it came up down or drained).
resumed=0
for _ in $(seq $((TIMEOUT * 2))); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n1)
    case "$state" in
        idle|mixed|allocated) say "node $host is $state ($cpus CPUs, ${mem} MB)"; exit 0 ;;
        down*|drain*|fail*)
            if [[ $resumed -eq 0 ]]; then
                scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
                resumed=1
            fi ;;
    esac
    sleep 0.5
done
die "node $host not idle after ${TIMEOUT}s (state '${state:-?}'; see /var/log/slurm/slurmd.log)"
