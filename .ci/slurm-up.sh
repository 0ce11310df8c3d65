#!/usr/bin/env bash
# A one-node Slurm on this machine, with accounting (slurmdbd + MariaDB), for tests/test_slurm.py.
#
#   .ci/slurm-up.sh            install the Debian packages if missing, write the configs, start
#                              munged, mariadbd, slurmdbd, slurmctld and slurmd, wait for the node
#   .ci/slurm-down.sh          stop them again, by the PIDs this script recorded
#
# No systemd: every daemon is started by hand and its PID goes to $SLURM_STATE/pids/.
# SLURM_ACCOUNTING=0 skips slurmdbd and MariaDB (AccountingStorageType=accounting_storage/none),
# the set-up that profiles/slurm-noacct is for. Needs root (Debian/Ubuntu with apt-get).
set -euo pipefail

STATE=${SLURM_STATE:-/var/tmp/scalelab-slurm}
ACCOUNTING=${SLURM_ACCOUNTING:-1}
CLUSTER=scalelab
PIDS=$STATE/pids
started=$(date +%s)
say() { echo "slurm-up: $* ($(( $(date +%s) - started )) s)"; }
fail() { echo "slurm-up: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root"
packages=(slurm-wlm slurm-client munge)
[ "$ACCOUNTING" = 1 ] && packages+=(slurmdbd mariadb-server)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || fail "apt-get not found; install ${missing[*]} by hand"
  # policy-rc.d: the packages must not try to start their daemons through init scripts
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  say "installed ${missing[*]}"
fi

# Leftovers of an earlier bring-up are stopped first: this script is safe to rerun.
"$(dirname "$0")/slurm-down.sh" >/dev/null 2>&1 || true
mkdir -p "$PIDS" "$STATE/log" "$STATE/ctld" "$STATE/d" /run/munge /etc/slurm
chown munge:munge /run/munge
chown slurm:slurm "$STATE/ctld"
chmod 1777 "$PIDS" "$STATE/log"   # the daemons drop to their own users and write here

# ------------------------------------------------------------------ munge
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid --force
cp /run/munge/munged.pid "$PIDS/munged"
munge -n | unmunge >/dev/null || fail "munge does not work"
say "munged up"

# ------------------------------------------------------------------ slurm.conf for this host
node=$(hostname -s)
hw=$(slurmd -C | head -1)   # NodeName=... CPUs=... RealMemory=...
cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
sockets=$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$hw")
cores=$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$hw")
threads=$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$hw")
memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
memory=$(( memory * 90 / 100 ))   # leave the OS its share: a node never offers all of its RAM
if [ "$ACCOUNTING" = 1 ]; then
  accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5"
else
  accounting="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
cat > /etc/slurm/slurm.conf <<EOF
# Written by scalelab's .ci/slurm-up.sh for $node: one node, no cgroups (containers lack them).
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$PIDS/slurmctld
SlurmdPidFile=$PIDS/slurmd
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# squeue still sees a finished job for 5 min, so the executor can poll with squeue too
MinJobAge=300
KillWait=10
$accounting
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
say "slurm.conf: $node, $cpus CPUs, $memory MB"

# ------------------------------------------------------------------ accounting
if [ "$ACCOUNTING" = 1 ]; then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
    --pid-file="$PIDS/mariadbd" --skip-networking=0 --bind-address=127.0.0.1 \
    --log-error="$STATE/log/mariadb.log" >>"$STATE/log/mariadb.log" 2>&1 &
  db=$!
  for _ in $(seq 60); do
    mariadb -e 'select 1' >/dev/null 2>&1 && break
    kill -0 $db 2>/dev/null || break
    sleep 0.5
  done
  mariadb -e 'select 1' >/dev/null 2>&1 || fail "MariaDB did not start (see $STATE/log/mariadb.log)"
  # Every time, not only when the user is new: a `slurm` user left by an earlier set-up with
  # another password would otherwise make slurmdbd fail with "Access denied".
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost';
              ALTER USER 'slurm'@'localhost' IDENTIFIED BY 'slurm';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;" \
    || fail "could not set the MariaDB user slurm's password and grants (see $STATE/log/mariadb.log)"
  say "mariadbd up"
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=$PIDS/slurmdbd
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chown slurm:slurm /etc/slurm/slurmdbd.conf && chmod 600 /etc/slurm/slurmdbd.conf
  slurmdbd
  for _ in $(seq 120); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
  sacctmgr -n list cluster >/dev/null 2>&1 || fail "slurmdbd did not answer (see $STATE/log/slurmdbd.log)"
  sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -i add account scalelab Cluster="$CLUSTER" Description=ci Organization=ci >/dev/null 2>&1 || true
  sacctmgr -i add user root Account=scalelab Cluster="$CLUSTER" >/dev/null 2>&1 || true
  say "slurmdbd up"
fi

# ------------------------------------------------------------------ controller and node
slurmctld
slurmd
for _ in $(seq 120); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -1)
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "$state" = idle ] || fail "node state '${state:-none}' (see $STATE/log/slurmctld.log, slurmd.log)"
say "slurmctld and slurmd up, node $node idle"
