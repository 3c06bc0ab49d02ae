#!/usr/bin/env bash
# A single-node SLURM cluster with accounting on localhost: for lowbit's tests and for
# trying `executor: slurm` on one machine. Needs root and apt-get (Debian 12 / Ubuntu).
#
#   bash slurm/local-cluster.sh start    install (first time), configure, start; waits until idle
#   bash slurm/local-cluster.sh status   which daemons run, and sinfo (exit 0 only if all run)
#   bash slurm/local-cluster.sh stop     stop each daemon by the PID in its pid file
#   bash slurm/local-cluster.sh wipe     forget every job: job state AND accounting, then start
#
# Daemons (no systemd): munged, mariadbd (a private instance on its own port and data
# dir), slurmdbd, slurmctld, slurmd. Everything they write lives under $LOWBIT_SLURM_DIR
# (default /var/tmp/lowbit-slurm); the configs go where SLURM's clients look for them
# (/etc/slurm), each marked as written by this script. A second `start` is fast and
# harmless. Settings and their reasons: docs/slurm.md and the platform notes.
set -euo pipefail

STATE=${LOWBIT_SLURM_DIR:-/var/tmp/lowbit-slurm}
CLUSTER=${LOWBIT_SLURM_CLUSTER:-lowbit}
PARTITION=${LOWBIT_SLURM_PARTITION:-local}
DB_PORT=${LOWBIT_SLURM_DB_PORT:-3307} # not 3306: never collide with a system MariaDB
WAIT_S=${LOWBIT_SLURM_WAIT_S:-60}
CONF_DIR=/etc/slurm # sbatch, sinfo, sacct read /etc/slurm/slurm.conf by default
MARK="# written by lowbit slurm/local-cluster.sh; rewritten on every start"
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd slurm-wlm-mysql-plugin mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd) # start order; stop is the reverse

RUN=$STATE/run LOG=$STATE/log DB=$STATE/mysql DB_SOCK=$STATE/run/mariadb.sock

say() { echo "local-cluster: $*"; }
die() {
  echo "local-cluster: error: $*" >&2
  exit 1
}

pidfile() { echo "$RUN/$1.pid"; }

# The PID in a daemon's pid file, if that process is alive and is that daemon (a stale
# file may name a PID the kernel has reused for something else).
live_pid() {
  local f pid
  f=$(pidfile "$1")
  [ -s "$f" ] || return 1
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  [ "$(cat "/proc/$pid/comm")" = "$1" ] || return 1
  echo "$pid"
}

# A daemon counts as running if its pid file names it; for munged, any instance that
# answers on the default socket will do (a system one may already be there).
running() {
  live_pid "$1" >/dev/null && return 0
  [ "$1" = munged ] && command -v munge >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "not root: cannot install ${missing[*]} (ask an admin, or run as root)"
  command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
  say "installing ${missing[*]} (apt-get, first time only)"
  # Keep the packages' own init scripts from starting a second, unconfigured copy of
  # each daemon; this script starts the ones it configures.
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  local rc=0
  {
    apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >"$LOG/apt.log" 2>&1
  } || rc=$?
  [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || die "apt-get install failed (exit $rc); see $LOG/apt.log"
}

# Write $2 to $1 only if it differs; returns 0 when the file changed.
write_if_changed() {
  local path=$1 text=$2
  if [ -f "$path" ] && [ "$(cat "$path")" = "$text" ]; then
    return 1
  fi
  if [ -f "$path" ] && ! grep -qF "$MARK" "$path"; then
    cp -p "$path" "$path.before-lowbit"
    say "kept the previous $path as $path.before-lowbit"
  fi
  printf '%s\n' "$text" >"$path"
  return 0
}

db_password() {
  local f=$STATE/db.password
  if [ ! -s "$f" ]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$f")
  fi
  cat "$f"
}

slurm_conf() {
  local host node_line
  host=$(hostname -s)
  # `slurmd -C` prints this machine's real node line (CPUs, sockets, RealMemory); the
  # address is forced to loopback so nothing depends on DNS.
  node_line=$(slurmd -C | head -n1)
  [[ $node_line == NodeName=* ]] || die "unexpected output of 'slurmd -C': $node_line"
  cat <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again
# (default 120 s); a step credential here is used within a second of being made.
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
# No cgroups in a container: track processes by parent PID, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# CR_Core, not CR_Core_Memory: with memory as a consumable every job takes the whole
# node's memory and jobs run one at a time.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# batch_sched_delay=0: otherwise every job waits ~3 s before it starts. The 5 s
# scheduling passes (default 60 / 30 s) start a requeued job soon after it is eligible.
SchedulerParameters=batch_sched_delay=0,sched_interval=5,bf_interval=5
# A cancelled job is killed 5 s after SIGTERM, not ~32 s.
KillWait=5
# An impossible request (a GPU here, too many CPUs) fails at submit instead of pending forever.
EnforcePartLimits=ALL
ReturnToService=2
MailProg=/bin/true
# submitit learns a job's state only from sacct: accounting is not optional.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
Waittime=0
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

slurmdbd_conf() {
  cat <<EOF
$MARK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
AuthType=auth/munge
PidFile=$(pidfile slurmdbd)
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(db_password)
StorageLoc=slurm_acct_db
EOF
}

# Returns 0 when a config changed (running daemons must restart to read it).
configure() {
  mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/spool"
  local changed=1
  write_if_changed "$CONF_DIR/slurm.conf" "$(slurm_conf)" && changed=0
  (umask 077 && write_if_changed "$CONF_DIR/slurmdbd.conf" "$(slurmdbd_conf)") && changed=0
  # slurmdbd refuses to start unless its config (it holds the DB password) is 600.
  chmod 600 "$CONF_DIR/slurmdbd.conf"
  chmod 644 "$CONF_DIR/slurm.conf"
  return $changed
}

wait_for() { # wait_for <seconds> <what> <command...>
  local until=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || return 1
    sleep 0.2
  done
  echo "$what" >/dev/null
}

mysql_root() { mariadb --no-defaults --socket="$DB_SOCK" -u root "$@"; }

start_munged() {
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  # The socket's directory must be /run/munge: SLURM's clients look for it there.
  mkdir -p /run/munge /var/lib/munge /var/log/munge "$STATE/munge"
  chown munge:munge /run/munge /var/lib/munge /var/log/munge "$STATE/munge"
  chmod 755 /run/munge
  runuser -u munge -- munged --pid-file="$STATE/munge/munged.pid" \
    --log-file="$STATE/munge/munged.log"
  ln -sf "$STATE/munge/munged.pid" "$(pidfile munged)"
  wait_for 10 munged bash -c 'munge -n | unmunge' || die "munged did not answer; see $STATE/munge/munged.log"
}

start_mariadbd() {
  if [ ! -d "$DB/mysql" ]; then
    mkdir -p "$DB"
    mariadb-install-db --no-defaults --datadir="$DB" --user=root \
      --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed; see $LOG/mariadb-install.log"
  fi
  # A private instance: own data dir, socket and port, loopback only, small buffers.
  setsid mariadbd --no-defaults --datadir="$DB" --socket="$DB_SOCK" --port="$DB_PORT" \
    --bind-address=127.0.0.1 --pid-file="$(pidfile mariadbd)" --user=root \
    --log-error="$LOG/mariadb.log" --skip-name-resolve --innodb-buffer-pool-size=64M \
    </dev/null >/dev/null 2>&1 &
  wait_for 30 mariadbd mariadb-admin --no-defaults --socket="$DB_SOCK" -u root ping ||
    die "mariadbd did not start; see $LOG/mariadb.log"
  wait_for 5 mariadbd live_pid mariadbd || die "mariadbd wrote no pid file"
  # slurmdbd's database user, created before slurmdbd first connects.
  local pass
  pass=$(db_password)
  mysql_root <<EOF || die "could not create the slurm database user"
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurmdbd() {
  slurmdbd || die "slurmdbd failed to start; see $LOG/slurmdbd.log"
  wait_for 30 slurmdbd sacctmgr -n list cluster || die "slurmdbd does not answer; see $LOG/slurmdbd.log"
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
}

start_slurmctld() {
  slurmctld || die "slurmctld failed to start; see $LOG/slurmctld.log"
}

start_slurmd() {
  slurmd || die "slurmd failed to start; see $LOG/slurmd.log"
}

node_state() { sinfo -h -N -o %t 2>/dev/null | head -n1; }

wait_idle() {
  local until=$((SECONDS + WAIT_S)) state="" resumed=0
  while :; do
    state=$(node_state || true)
    case $state in
      idle | mix | alloc) return 0 ;;
      drain* | down* | drng*)
        # A node left down or drained by an earlier run (e.g. an unclean stop) returns now.
        if [ $resumed = 0 ]; then
          scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
          resumed=1
        fi
        ;;
    esac
    [ $SECONDS -lt $until ] || die "node not idle after ${WAIT_S}s (state: ${state:-no answer}); see $LOG/"
    sleep 0.2
  done
}

start() {
  mkdir -p "$RUN" "$LOG"
  install_packages
  local restart=0
  configure && restart=1
  if [ $restart = 1 ]; then
    for d in slurmd slurmctld slurmdbd; do
      if live_pid "$d" >/dev/null; then
        say "configuration changed: restarting $d"
        stop_one "$d"
      fi
    done
  fi
  local d started=()
  for d in "${DAEMONS[@]}"; do
    running "$d" && continue
    "start_$d"
    started+=("$d")
  done
  wait_idle
  if [ ${#started[@]} -eq 0 ]; then
    say "already running (node $(node_state)); state in $STATE"
  else
    say "started ${started[*]}; node $(node_state); state in $STATE"
  fi
}

stop_one() {
  local d=$1 pid
  pid=$(live_pid "$d") || {
    rm -f "$(pidfile "$d")"
    return 0
  }
  kill -TERM "$pid" 2>/dev/null || true
  local until=$((SECONDS + 20))
  while [ -d "/proc/$pid" ] && [ $SECONDS -lt $until ]; do sleep 0.1; done
  if [ -d "/proc/$pid" ]; then
    say "$d (pid $pid) ignored SIGTERM for 20 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$(pidfile "$d")"
}

stop() {
  local i
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    stop_one "${DAEMONS[$i]}"
  done
  say "stopped"
}

status() {
  local d pid all=0
  for d in "${DAEMONS[@]}"; do
    if pid=$(live_pid "$d"); then
      printf '  %-10s running (pid %s)\n' "$d" "$pid"
    elif running "$d"; then
      printf '  %-10s running (not started by this script)\n' "$d"
    else
      printf '  %-10s stopped\n' "$d"
      all=3
    fi
  done
  if [ $all = 0 ]; then sinfo || all=3; fi
  return $all
}

# Job ids restart from 1 once the controller's state is gone, so the accounting DB
# must go with it: otherwise sacct answers for a new job with an old job's record and
# submitit reports successful jobs as FAILED.
wipe() {
  mkdir -p "$RUN" "$LOG"
  for d in slurmd slurmctld slurmdbd; do stop_one "$d"; done
  rm -rf "${STATE:?}/ctld" "${STATE:?}/spool"
  if live_pid mariadbd >/dev/null; then
    mysql_root -e "DROP DATABASE IF EXISTS slurm_acct_db" || die "could not drop the accounting DB"
  elif [ -d "$DB" ]; then
    rm -rf "${DB:?}/slurm_acct_db"
  fi
  say "wiped job state and accounting"
  start
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  wipe) wipe ;;
  *)
    echo "usage: $0 start|stop|status|wipe   (state: \$LOWBIT_SLURM_DIR, now $STATE)" >&2
    exit 2
    ;;
esac
