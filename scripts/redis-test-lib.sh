# shellcheck shell=bash
# Shared by the tests that run the chart's Redis/Sentinel scripts (deploy/helm/tally/files/) against
# real redis-server and redis-sentinel processes: scripts/test-redis-scripts.sh and
# scripts/test-backup-restore.sh. Source it from bash with `set -euo pipefail`, after setting
# TEST_NAME (the temp dir's name). It picks free ports, makes the temp dir $T (removed on exit
# with everything started), the password file, and defines the helpers: run_script, start_redis,
# start_sentinel, rcli, role, master_node, replica_of, knows_replicas, wait_for, check, ok, bad.
# It exits 0 ("SKIP") when redis-server, redis-sentinel, redis-cli or the test shell is missing.
#   TEST_SHELL=dash|sh|bash   shell that runs the scripts (default: sh)
#   TEST_BASE_PORT            first of the ports used (default: random, below the ephemeral range)
#   KEEP_TMP=1                keep the temp dir (logs, data)
# shellcheck disable=SC2034 # variables set here are used by the scripts that source this file
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
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
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Ports below the kernel's ephemeral range: a port inside it can be taken at any moment as the
# source port of an outgoing connection (the nodes connect to each other while they start).
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
BASE=${TEST_BASE_PORT:-}
for _ in 1 2 3 4 5 6 7 8 9 10; do
  [ -n "$BASE" ] && break
  b=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000 - 20)))
  ok=1
  for i in 0 1 2 10 11 12; do port_free $((b + i)) || ok=0; done
  [ "$ok" = 1 ] && BASE=$b
done
[ -n "$BASE" ] || { echo "no free ports found"; exit 1; }

PASSWORD='s3cret p@ss "quoted" \back'
printf '%s' "$PASSWORD" >"$T/password"
REDIS_NODES="127.0.0.1:$BASE 127.0.0.1:$((BASE + 1)) 127.0.0.1:$((BASE + 2))"
SENTINEL_NODES="127.0.0.1:$((BASE + 10)) 127.0.0.1:$((BASE + 11)) 127.0.0.1:$((BASE + 12))"
rport() { echo $((BASE + $1)); }
sport() { echo $((BASE + 10 + $1)); }

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
# chart gives a pod); with RUN_EXEC=exec it replaces the (background) shell, so $! is its pid
run_script() {
  local i=$1 s=$2
  shift 2
  ${RUN_EXEC:-} env NODE_INDEX="$i" POD_NAME="tally-redis-$i" REDIS_NODES="$REDIS_NODES" \
    SENTINEL_NODES="$SENTINEL_NODES" REDIS_BIND=127.0.0.1 SENTINEL_BIND=127.0.0.1 \
    REDIS_PASSWORD_FILE="$T/password" REDIS_DATA_DIR="$T/n$i/data" \
    REDIS_RUN_DIR="$T/n$i/redis-run" SENTINEL_RUN_DIR="$T/n$i/sentinel-run" \
    SENTINEL_DOWN_AFTER_MS=2000 SENTINEL_FAILOVER_TIMEOUT_MS=10000 CLI_TIMEOUT=2 \
    ELECTION_WAIT_SECONDS=6 \
    PRESTOP_PAUSE_MS=10000 PRESTOP_TIMEOUT_SECONDS=30 \
    "$SH" "$FILES/$s" "$@"
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

# The master and role predicates are the chart's (redis-lib.sh), calling redis-cli as its
# scripts do: by host:port, with the password in the environment, bounded by CLI_TIMEOUT.
# shellcheck source=deploy/helm/tally/files/redis-lib.sh
. "$FILES/redis-lib.sh"
MASTER_NAME=mymaster CLI_TIMEOUT=3 REDIS_CLI=redis-cli REDIS_CLOCK_DB=15
REDIS_PASSWORD=$PASSWORD SENTINEL_PASSWORD=$PASSWORD
rnode() { echo "127.0.0.1:$(rport "$1")"; }
snode() { echo "127.0.0.1:$(sport "$1")"; }
rcli() { local p=$1; shift; cli "$PASSWORD" "127.0.0.1:$p" "$@" 2>/dev/null; }
role() { role_of "$(rnode "$1")"; }
master_node() { # the node index that all three sentinels name, empty when they do not agree
  local m
  m=$(sentinels_master 3)
  if [ -n "$m" ]; then echo $((${m##*:} - BASE)); fi
}
knows_replicas() { # knows_replicas I: sentinel I lists two replicas of the master
  [ "$(rcli "$(sport "$1")" SENTINEL master mymaster | awk 'p { print; exit } $0 == "num-slaves" { p = 1 }')" = 2 ]
}
replica_of() { # replica_of I M: node I is a replica of node M with its link up
  replica_link_up "$(rnode "$1")" && [ "$(rcli "$(rport "$1")" ROLE | sed -n 3p)" = "$(rport "$2")" ]
}
every_sentinel_logged() { # every_sentinel_logged TEXT: each sentinel's start log has TEXT
  local i
  for i in 0 1 2; do grep -qF "$1" "$T/n$i/sentinel.log" || return 1; done
}
dump_logs() {
  local f
  for f in "$T"/n*/*.log; do
    echo "---- ${f#"$T"/}"
    tail -n 25 "$f"
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
