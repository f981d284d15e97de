# shellcheck shell=bash
# Shared by the tests of the chart's Redis/Sentinel scripts against real processes
# (scripts/test-redis-scripts.sh, test-redis-acl.sh, test-redis-upgrade.sh,
# test-redis-cluster-acl.sh, test-backup-restore.sh): free ports, a temp dir, the ACL users'
# password files, starting the chart's scripts as a pod's containers, bounded waits, verdicts.
# Source it from bash with `set -euo pipefail`; TEST_NAME names the temp dir. It exits 0 ("SKIP")
# when redis-server, redis-sentinel, redis-cli or the test shell is missing. Defines functions
# and these variables:
#   ROOT   the repository (unless the caller set it)
#   FILES  the chart's files/      T  the temp dir (removed on exit unless KEEP_TMP=1)
#   BASE   first port: Redis node I on BASE+I, its Sentinel on BASE+10+I; BASE+20 is free too
#   AUTH   the users' password files (REDIS_AUTH_DIR of every script); USERS the users
#   TEST_SHELL=dash|sh|bash   shell that runs the scripts (default: sh)
#   TEST_BASE_PORT            first of the ports used (default: random, below the ephemeral range)
#   TEST_PORT_RANGE           LOW-HIGH: where the random first port is picked (tests side by side)
#   PORT_SPAN                 (set by the caller) BASE + PORT_SPAN stays below the ephemeral range
#                             too (default 30; Cluster mode's bus ports are the ports + 10000)
#   KEEP_TMP=1                keep the temp dir (logs, data)
# shellcheck disable=SC2034 # FILES, AUTH, REDIS_NODES... are the caller's
# shellcheck disable=SC2016 # conditions are passed to wait_for/check as eval strings on purpose

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
FILES=$ROOT/deploy/helm/tally/files
SH=${TEST_SHELL:-sh}
for bin in redis-server redis-sentinel redis-cli "$SH"; do
  command -v "$bin" >/dev/null || { echo "SKIP: $bin not installed"; exit 0; }
done

T=$(mktemp -d "${TMPDIR:-/tmp}/${TEST_NAME:-tally-redis-test}.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $T"; return; fi
  # A start script's auth loop outlives its killed server by up to REDIS_AUTH_INTERVAL (it polls
  # its parent) and may be writing into its run directory: rm then finds it not empty. Retry for
  # a few seconds; a test's verdict is its checks, not this.
  local try
  for try in 1 2 3 4 5; do
    rm -rf "$T" 2>/dev/null && return
    sleep 1
  done
  echo "warning: $T not removed: a process still writes into it" >&2
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Ports below the kernel's ephemeral range: a port inside it can be taken at any moment as the
# source port of an outgoing connection (the nodes connect to each other while they start).
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
BASE=${TEST_BASE_PORT:-}
# TEST_PORT_RANGE=LOW-HIGH: BASE from LOW to HIGH-30, so tests run side by side (check-chart.sh)
# never pick the same ports; BASE + PORT_SPAN stays below the ephemeral range either way.
if [ -n "${TEST_PORT_RANGE:-}" ]; then
  PORT_LOW=${TEST_PORT_RANGE%-*} PORT_HIGH=${TEST_PORT_RANGE#*-}
else
  PORT_LOW=10000 PORT_HIGH=$((EPHEMERAL_LOW - ${PORT_SPAN:-30} + 30))
fi
for _ in 1 2 3 4 5 6 7 8 9 10; do
  [ -n "$BASE" ] && break
  b=$((PORT_LOW + RANDOM % (PORT_HIGH - PORT_LOW - 30)))
  [ $((b + ${PORT_SPAN:-30})) -lt "$EPHEMERAL_LOW" ] || continue
  ok=1
  for i in 0 1 2 3 4 5 10 11 12 20; do port_free $((b + i)) || ok=0; done
  [ "$ok" = 1 ] && BASE=$b
done
[ -n "$BASE" ] || { echo "no free ports found"; exit 1; }
REDIS_NODES="127.0.0.1:$BASE 127.0.0.1:$((BASE + 1)) 127.0.0.1:$((BASE + 2))"
SENTINEL_NODES="127.0.0.1:$((BASE + 10)) 127.0.0.1:$((BASE + 11)) 127.0.0.1:$((BASE + 12))"
rport() { echo $((BASE + $1)); }
sport() { echo $((BASE + 10 + $1)); }
rnode() { echo "127.0.0.1:$(rport "$1")"; }
snode() { echo "127.0.0.1:$(sport "$1")"; }

# The users' password files, with characters that need care in a configuration file, a shell and
# JSON: spaces, quotes, a backslash.
# As with a mounted Secret, AUTH is a symlink to a directory that an update replaces as a whole
# (auth_update), so a reader never sees half an update.
USERS="tally replication sentinel operator exporter backup admin"
AUTH=$T/auth
AUTH_VERSION=0
mkdir -p "$T/auth.0"
ln -s auth.0 "$AUTH"
# new_password USER: a fresh password for USER
new_password() { printf '%s p@ss "%s" \\x%s' "$1" "$RANDOM$RANDOM" "$RANDOM"; }
for u in $USERS; do new_password "$u" >"$AUTH/$u-password"; done
pw() { cat "$AUTH/$1-password"; } # pw USER: USER's current password
# auth_update SHELL-COMMANDS: runs the commands in a copy of the password files' directory (the
# current directory), then swaps the copy in at once
auth_update() {
  local next=$T/auth.$((AUTH_VERSION + 1))
  cp -a "$T/auth.$AUTH_VERSION" "$next"
  (cd "$next" && eval "$1")
  AUTH_VERSION=$((AUTH_VERSION + 1))
  ln -s "auth.$AUTH_VERSION" "$T/auth.new"
  mv -T "$T/auth.new" "$AUTH"
}

PASS=0
FAIL=0
START=$(date +%s)
ok() { PASS=$((PASS + 1)); printf 'ok   %s\n' "$*"; }
bad() { FAIL=$((FAIL + 1)); printf 'FAIL %s\n' "$*"; }
check() { # check DESCRIPTION CMD...: ok when CMD succeeds
  local desc=$1
  shift
  if "$@"; then ok "$desc"; else bad "$desc"; fi
}
elapsed() { echo $(($(date +%s) - START)); }

# run_script I SCRIPT ARGS...: a script of files/ with node I's environment (the environment the
# chart gives a pod); with RUN_EXEC=exec it replaces the (background) shell, so $! is its pid.
# RUN_FILES: another copy of files/ (an older version of the chart's scripts).
run_script() {
  local i=$1 s=$2
  shift 2
  ${RUN_EXEC:-} env NODE_INDEX="$i" POD_NAME="tally-redis-$i" REDIS_NODES="$REDIS_NODES" \
    SENTINEL_NODES="$SENTINEL_NODES" REDIS_BIND=127.0.0.1 SENTINEL_BIND=127.0.0.1 \
    REDIS_AUTH_DIR="$AUTH" REDIS_PASSWORD_FILE="$AUTH/password" REDIS_DATA_DIR="$T/n$i/data" \
    REDIS_RUN_DIR="$T/n$i/redis-run" SENTINEL_RUN_DIR="$T/n$i/sentinel-run" \
    SENTINEL_DOWN_AFTER_MS=2000 SENTINEL_FAILOVER_TIMEOUT_MS=10000 CLI_TIMEOUT=2 \
    ELECTION_WAIT_SECONDS=6 REDIS_AUTH_INTERVAL=1 REDIS_MAXMEMORY=64mb \
    PRESTOP_PAUSE_MS=10000 PRESTOP_TIMEOUT_SECONDS=30 \
    "$SH" "${RUN_FILES:-$FILES}/$s" "$@"
}
declare -A REDIS_PID SENTINEL_PID
start_redis() {
  mkdir -p "$T/n$1"
  RUN_EXEC='exec' run_script "$1" start-redis.sh >>"$T/n$1/redis.log" 2>&1 &
  REDIS_PID[$1]=$!
  PIDS+=("$!")
}
start_sentinel() {
  mkdir -p "$T/n$1"
  RUN_EXEC='exec' run_script "$1" start-sentinel.sh >>"$T/n$1/sentinel.log" 2>&1 &
  SENTINEL_PID[$1]=$!
  PIDS+=("$!")
}
kill_node() { # kill_node I: SIGKILL node I's redis
  kill -9 "${REDIS_PID[$1]}" 2>/dev/null || true
  wait "${REDIS_PID[$1]}" 2>/dev/null || true
}
kill_sentinel() { # kill_sentinel I: SIGKILL node I's sentinel
  kill -9 "${SENTINEL_PID[$1]}" 2>/dev/null || true
  wait "${SENTINEL_PID[$1]}" 2>/dev/null || true
}

# The master and role predicates are the chart's (redis-lib.sh, as user operator), calling
# redis-cli as its scripts do: by host:port, the password in the environment, bounded.
FILES_DIR=$FILES
# shellcheck source=deploy/helm/tally/files/redis-lib.sh
. "$FILES/redis-lib.sh"
MASTER_NAME=mymaster CLI_TIMEOUT=3 REDIS_CLI=redis-cli REDIS_CLOCK_DB=15 REDIS_AUTH_DIR=$AUTH
# as USER PORT ARGS...: redis-cli as USER on 127.0.0.1:PORT; acli PORT ARGS...: as admin
as() { local u=$1 p=$2; shift 2; cli "$u" "$(pw "$u")" "127.0.0.1:$p" "$@" 2>/dev/null; }
acli() { as admin "$@"; }
rcli() { acli "$@"; }
role() { role_of "$(rnode "$1")"; }
master_node() { # the node index that all three sentinels name, empty when they do not agree
  local m
  m=$(sentinels_master 3)
  if [ -n "$m" ]; then echo $((${m##*:} - BASE)); fi
}
knows_replicas() { # knows_replicas I: sentinel I lists two replicas of the master
  [ "$(acli "$(sport "$1")" SENTINEL master mymaster | awk 'p { print; exit } $0 == "num-slaves" { p = 1 }')" = 2 ]
}
replica_of() { # replica_of I M: node I is a replica of node M with its link up
  replica_link_up "$(rnode "$1")" && [ "$(acli "$(rport "$1")" ROLE | sed -n 3p)" = "$(rport "$2")" ]
}
every_sentinel_logged() { # every_sentinel_logged TEXT: each sentinel's start log has TEXT
  local i
  for i in 0 1 2; do grep -qF "$1" "$T/n$i/sentinel.log" || return 1; done
}
dump_logs() {
  local f
  [ ! -e "$T/why" ] || { echo "---- why"; cat "$T/why"; }
  for f in "$T"/n*/*.log; do
    echo "---- ${f#"$T"/}"
    tail -n 25 "$f"
  done
}
# acl_denials PORT: the ACL LOG of the process on PORT, one "user reason object" line per entry
acl_denials() {
  acli "$1" ACL LOG 128 | awk '$0 == "username" { getline; u = $0 } $0 == "reason" { getline; r = $0 }
    $0 == "object" { getline; o = $0 } $0 == "client-info" { getline; print u, r, o }'
}
# acl_log_reset: empties the ACL LOG of every Redis and Sentinel process
acl_log_reset() {
  local i
  for i in 0 1 2; do acli "$(rport "$i")" ACL LOG RESET >/dev/null; acli "$(sport "$i")" ACL LOG RESET >/dev/null; done
}
user_hashes() { # user_hashes PORT USER: the password hashes PORT's process accepts for USER, sorted
  acli "$1" ACL GETUSER "$2" | awk '$0 == "passwords" { p = 1; next } p && length($0) == 64 && /^[0-9a-f]+$/ { print; next } p { exit }' | sort
}
applied_everywhere() { # every process accepts exactly what the files say, for each of its users
  local i u p side want
  for i in 0 1 2; do
    for side in redis sentinel; do
      p=$(if [ "$side" = redis ]; then rport "$i"; else sport "$i"; fi)
      for u in $(acl_users "$side"); do
        [ "$u" != default ] || continue
        want=$(auth_hashes "$u" | tr ' ' '\n' | tr -d '#' | sed '/^$/d' | sort)
        [ "$(user_hashes "$p" "$u")" = "$want" ] || return 1
      done
    done
  done
}

# wait_for SECONDS DESCRIPTION CMD...: polls CMD every 0.2 s until it succeeds or time runs out
wait_for() {
  local secs=$1 desc=$2 t0
  shift 2
  t0=$(date +%s)
  while ! "$@"; do
    if [ $(($(date +%s) - t0)) -ge "$secs" ]; then
      bad "$desc (not within ${secs}s)"
      dump_logs
      echo "$PASS passed, $FAIL failed"
      exit 1
    fi
    sleep 0.2
  done
  ok "$desc ($(($(date +%s) - t0))s)"
}

# start_group: all six processes at once, as a StatefulSet with parallel pod management would,
# then waits until node 0 is master with two replicas, every sentinel naming it and knowing them
start_group() {
  local i
  for i in 0 1 2; do start_redis "$i"; start_sentinel "$i"; done
  wait_for 40 "the group forms: a master, two replicas, all sentinels agree" \
    eval 'm=$(master_node); [ -n "$m" ] && replica_of $(((m + 1) % 3)) "$m" && replica_of $(((m + 2) % 3)) "$m"'
  wait_for 30 "every sentinel knows both replicas" eval 'knows_replicas 0 && knows_replicas 1 && knows_replicas 2'
}
