#!/usr/bin/env bash
# Stop the daemons .ci/slurm-up.sh started, each by the PID it recorded (never by name).
set -uo pipefail
PIDS=${SLURM_STATE:-/var/tmp/scalelab-slurm}/pids
[ -d "$PIDS" ] || exit 0
# The node and controller first, the database last.
for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
  file=$PIDS/$daemon
  [ -s "$file" ] || continue
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "slurm-down: stopped $daemon ($pid)"
  fi
  rm -f "$file"
done
