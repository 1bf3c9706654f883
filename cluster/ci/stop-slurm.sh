#!/usr/bin/env bash
# Stop what cluster/ci/start-slurm.sh started: slurmd, slurmctld and munged, by their pid files.
# Cancels remaining jobs first. `--keep-munge` leaves munged running.
set -uo pipefail

say() { echo "stop-slurm: $*" >&2; }

stop() {  # stop NAME PIDFILE: TERM, wait up to 10 s, then KILL
    local name=$1 pidfile=$2 pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping $name ($pid)"
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$pidfile"
}

if command -v scancel >/dev/null && [[ -f /run/slurmctld.pid ]]; then
    scancel --quiet --user="$(id -un)" 2>/dev/null || true
fi
stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
if [[ "${1:-}" != "--keep-munge" ]]; then
    stop munged /run/munge/munged.pid
fi
exit 0
