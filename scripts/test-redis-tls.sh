#!/usr/bin/env bash
# Tests the chart's Redis group over TLS only (deploy/helm/tally/files/tls-lib.sh) against real
# redis-server and redis-sentinel processes started by the chart's scripts, with a CA and
# certificates from scripts/test-certs.sh, tls-auth-clients yes (every link shows a certificate):
# the group forms over TLS (replication, Sentinel, the scripts); a plain-TCP client, a TLS client
# without a certificate and one with a certificate of another CA are refused; the probes work;
# redis_exporter scrapes over TLS; backup-redis.sh takes a verified RDB over TLS as user backup;
# a SIGKILLed master fails over and the preStop handover works.
# Then every certificate rotates to one of a new CA, as docs/tls.md says (1. a CA bundle with both
# CAs, 2. the new certificates, 3. the new CA alone) while INCRs run, each on a new connection: the
# watcher applies each step without restarting redis-server (same pid), the sentinels restart in
# place one at a time keeping their state, 0 INCRs fail, the exporter goes on scraping, the old
# CA is refused at the end, and the group still fails over. Last, the Redis Cluster test
# (scripts/test-redis-cluster-acl.sh) runs over TLS only, the Cluster bus included.
#
# Node names: every node is `localhost` with its own ports, the one name that resolves to the
# loopback on every machine without editing /etc/hosts; each node still gets its own certificate
# for it. (The HA harness's TLS stack, deploy/compose/harness.sh with TALLY_HA_TLS=1, gives every
# node a name of its own, which tally verifies.)
#
# Needs redis-server, redis-sentinel, redis-cli and openssl; prometheus-redis-exporter and curl
# for the exporter part (skipped without them). Bounded; everything started is stopped on exit.
#   TEST_SHELL, TEST_BASE_PORT, KEEP_TMP   as scripts/test-redis-scripts.sh
#   TLS_CLUSTER=no                         skip the Cluster part
# shellcheck disable=SC2016 # conditions are passed to wait_for/check as eval strings on purpose
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TEST_NAME=tally-redis-tls
# shellcheck source=scripts/redis-test-lib.sh
. "$ROOT/scripts/redis-test-lib.sh"
command -v openssl >/dev/null || { echo "SKIP: openssl not installed"; exit 0; }
echo "testing TLS of $FILES with $SH on localhost ports $BASE-$((BASE + 20)), temp dir $T"

# ---------------------------------------------------------------------------------------------
# The nodes are localhost:<port>; the test itself is a client like the scripts (tls-lib.sh's
# options: REDIS_TLS and a directory laid out as the chart mounts its Secret).
REDIS_NODES="localhost:$BASE localhost:$((BASE + 1)) localhost:$((BASE + 2))"
SENTINEL_NODES="localhost:$((BASE + 10)) localhost:$((BASE + 11)) localhost:$((BASE + 12))"
rnode() { echo "localhost:$(rport "$1")"; }
snode() { echo "localhost:$(sport "$1")"; }
as() { local u=$1 p=$2; shift 2; cli "$u" "$(pw "$u")" "localhost:$p" "$@" 2>/dev/null; }
export REDIS_TLS=yes REDIS_TLS_DIR=$T/tls/client

# Certificate directories as Kubernetes mounts a Secret: DIR is a symlink to a version directory
# that an update replaces at once. The pods n0..n2 and the test's client each have one.
CERTS=$T/certs
SCRIPT_CERTS=$ROOT/scripts/test-certs.sh
TLS_VERSION=0
DIRS="n0 n1 n2 client"
# tls_publish CA-FILE CERT-NAME: a new version of every directory: the CA bundle CA-FILE and each
# one's certificate CERT-NAME-<dir> (issued beforehand), swapped in at once
tls_publish() {
  local d v=$((TLS_VERSION + 1))
  for d in $DIRS; do
    mkdir -p "$T/tls/$d.$v"
    cp "$1" "$T/tls/$d.$v/ca.crt"
    cp "$CERTS/$2-$d.crt" "$T/tls/$d.$v/tls.crt"
    cp "$CERTS/$2-$d.key" "$T/tls/$d.$v/tls.key"
    ln -sfn "$d.$v" "$T/tls/$d.new"
    mv -T "$T/tls/$d.new" "$T/tls/$d"
  done
  TLS_VERSION=$v
}
certs_of() { # certs_of CA-DIR NAME: NAME-<dir> for every directory, signed by CA-DIR's CA
  local d
  for d in $DIRS; do
    bash "$SCRIPT_CERTS" issue "$1" "$2-$d" localhost >/dev/null
    cp "$1/$2-$d.crt" "$1/$2-$d.key" "$CERTS/"
  done
}
mkdir -p "$CERTS" "$T/tls"
bash "$SCRIPT_CERTS" ca "$T/ca1"
bash "$SCRIPT_CERTS" ca "$T/ca2"
certs_of "$T/ca1" old
certs_of "$T/ca2" new
cat "$T/ca1/ca.crt" "$T/ca2/ca.crt" >"$T/bundle.crt"
tls_publish "$T/ca1/ca.crt" old

# The pods' environment: the chart's, with TLS on every port and client certificates required.
# Both loopback addresses are bound, for machines where localhost resolves to ::1 first.
run_script() {
  local i=$1 s=$2
  shift 2
  ${RUN_EXEC:-} env NODE_INDEX="$i" POD_NAME="tally-redis-$i" REDIS_NODES="$REDIS_NODES" \
    SENTINEL_NODES="$SENTINEL_NODES" REDIS_BIND="127.0.0.1 -::1" SENTINEL_BIND="127.0.0.1 -::1" \
    REDIS_AUTH_DIR="$AUTH" REDIS_DATA_DIR="$T/n$i/data" \
    REDIS_RUN_DIR="$T/n$i/redis-run" SENTINEL_RUN_DIR="$T/n$i/sentinel-run" \
    SENTINEL_DOWN_AFTER_MS=2000 SENTINEL_FAILOVER_TIMEOUT_MS=10000 CLI_TIMEOUT=2 \
    ELECTION_WAIT_SECONDS=6 REDIS_AUTH_INTERVAL=1 REDIS_MAXMEMORY=64mb \
    PRESTOP_PAUSE_MS=10000 PRESTOP_TIMEOUT_SECONDS=30 \
    REDIS_TLS="${TLS_MODE:-yes}" REDIS_TLS_DIR="${RUN_TLS_DIR:-$T/tls/n$i}" REDIS_TLS_AUTH_CLIENTS=yes REDIS_TLS_RESTART_STAGGER=2 \
    "$SH" "$FILES/$s" "$@"
}
# With TLS a sentinel runs as the child of its start script (tls_run): stop those too on exit.
sentinel_pid() { cat "$T/n$1/sentinel-run/sentinel.pid" 2>/dev/null; }
trap 'for i in 0 1 2; do p=$(sentinel_pid "$i"); [ -z "$p" ] || kill -9 "$p" 2>/dev/null || true; done; cleanup' EXIT
server_pid() { as admin "$1" INFO server | tr -d '\r' | sed -n 's/^process_id://p'; }

# plain PORT ARGS...: redis-cli without TLS; tls_as CERT-DIR PORT ARGS...: with TLS, as admin,
# showing the certificate of CERT-DIR (none when it has no tls.crt)
plain() { local p=$1; shift; REDISCLI_AUTH=$(pw admin) timeout 3 redis-cli --user admin -h localhost -p "$p" "$@" 2>&1; }
tls_as() {
  local dir=$1 p=$2 opts=(--tls --cacert "$1/ca.crt")
  shift 2
  [ ! -e "$dir/tls.crt" ] || opts+=(--cert "$dir/tls.crt" --key "$dir/tls.key")
  REDISCLI_AUTH=$(pw admin) timeout 3 redis-cli "${opts[@]}" --user admin -h localhost -p "$p" "$@" 2>&1
}
# issuer_ok PORT CA-FILE: the certificate served on PORT verifies against CA-FILE alone
issuer_ok() {
  openssl s_client -connect "localhost:$1" -CAfile "$2" -cert "$T/tls/client/tls.crt" \
    -key "$T/tls/client/tls.key" -verify_return_error </dev/null >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------------------
# 1. The group forms over TLS only.
check "TLS lines in the generated redis.conf are written by listen_conf" \
  eval '[ "$(REDIS_TLS=yes REDIS_TLS_DIR=/x listen_conf 6379 cluster | sed -n "1p;2p;\$p" | tr "\n" " ")" = "port 0 tls-port 6379 tls-cluster yes " ]'
start_group
for i in 0 1 2; do
  check "node $i: TLS only (port 0, tls-port, tls-replication)" eval \
    'grep -qx "port 0" "$T/n$i/redis-run/redis.conf" && grep -qx "tls-replication yes" "$T/n$i/redis-run/redis.conf"'
done
M=$(master_node)
MP=$(rport "$M")
SP=$(sport "$M")
check "replication runs over TLS (both replicas' links up)" \
  eval 'replica_of $(((M + 1) % 3)) "$M" && replica_of $(((M + 2) % 3)) "$M"'
wait_for 20 "the sentinels see each other over TLS (CKQUORUM)" \
  eval 'acli "$SP" SENTINEL CKQUORUM mymaster | grep -q "^OK 3 usable"'

# 2. Who is refused.
mkdir -p "$T/nocert" "$T/stranger"
cp "$T/ca1/ca.crt" "$T/nocert/ca.crt"
bash "$SCRIPT_CERTS" ca "$T/ca3" && bash "$SCRIPT_CERTS" issue "$T/ca3" x localhost
cp "$T/ca1/ca.crt" "$T/stranger/ca.crt"
cp "$T/ca3/x.crt" "$T/stranger/tls.crt" && cp "$T/ca3/x.key" "$T/stranger/tls.key"
for p in "$MP" "$SP"; do
  check "port $p: a plain-TCP client gets no answer" eval '[ "$(plain "$p" PING)" != PONG ]'
  check "port $p: a TLS client with the CA and a certificate is served" eval '[ "$(tls_as "$T/tls/client" "$p" PING)" = PONG ]'
  check "port $p: a TLS client without a certificate is refused (tls-auth-clients yes)" \
    eval '[ "$(tls_as "$T/nocert" "$p" PING)" != PONG ]'
  check "port $p: a client certificate of another CA is refused" eval '[ "$(tls_as "$T/stranger" "$p" PING)" != PONG ]'
  check "port $p: a server certificate of another CA is not trusted by the client" \
    eval '[ "$(REDIS_TLS_CA_FILE=$T/ca3/ca.crt acli "$p" PING)" != PONG ]'
done

# 3. The probes speak TLS (and fail without it).
for i in 0 1 2; do
  if run_script "$i" probe.sh redis-ready >/dev/null && run_script "$i" probe.sh redis-alive >/dev/null \
    && run_script "$i" probe.sh sentinel-ready >/dev/null && run_script "$i" probe.sh sentinel-alive >/dev/null; then
    ok "probes pass on node $i over TLS"
  else
    bad "probes fail on node $i over TLS"
  fi
done
check "the probe fails when it does not speak TLS" eval '! TLS_MODE=no run_script 0 probe.sh redis-alive >/dev/null 2>&1'

# 4. redis_exporter over TLS (rediss://, the CA and the client certificate of the pod).
EXPORTER_PORT=$((BASE + 20))
metric() { curl -s --max-time 5 "http://127.0.0.1:$EXPORTER_PORT/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
EXPORTER=no
if command -v prometheus-redis-exporter >/dev/null && command -v curl >/dev/null; then
  EXPORTER=yes
  REDIS_AUTH_DIR=$AUTH EXPORTER_REDIS_ADDR="rediss://localhost:$MP" EXPORTER_AUTH_FILE="$T/exporter.json" \
    "$SH" "$FILES/exporter-auth.sh" 2>/dev/null
  # The exporter reads the CA and the client certificate again for every scrape's connection.
  prometheus-redis-exporter -redis.addr "rediss://localhost:$MP" -redis.user exporter \
    -redis.password-file "$T/exporter.json" -web.listen-address "127.0.0.1:$EXPORTER_PORT" \
    -tls-ca-cert-file "$T/tls/n$M/ca.crt" -tls-client-cert-file "$T/tls/n$M/tls.crt" \
    -tls-client-key-file "$T/tls/n$M/tls.key" -config-command=- >>"$T/exporter.log" 2>&1 &
  PIDS+=("$!")
  wait_for 15 "redis_exporter scrapes over TLS: redis_up 1" eval '[ "$(metric redis_up)" = 1 ]'
  check "redis_exporter sees both replicas" eval '[ "$(metric redis_connected_slaves)" = 2 ]'
else
  echo "SKIP exporter: prometheus-redis-exporter or curl not installed"
fi

# 4b. A backup over TLS, as the chart's CronJob takes it: user backup, and the client's directory
# (the CA and a client certificate, as tally's pods mount them).
if command -v redis-check-rdb >/dev/null; then
  mkdir -p "$T/backups"
  acli "$MP" SET count:before-backup 1 >/dev/null
  acli "$MP" WAIT 2 2000 >/dev/null
  backup_file=$(BACKUP_DIR=$T/backups RUN_TLS_DIR=$T/tls/client run_script 0 backup-redis.sh 2>>"$T/backup.log" || true)
  if [ -s "$backup_file" ] && redis-check-rdb "$backup_file" >/dev/null 2>&1; then
    ok "backup-redis.sh takes a verified RDB over TLS as user backup"
  else
    bad "backup-redis.sh takes no verified RDB over TLS ($(tail -n 3 "$T/backup.log"))"
  fi
else
  echo "SKIP backup: redis-check-rdb not installed"
fi

# 5. A SIGKILLed master fails over over TLS and comes back as a replica; then the preStop handover.
acli "$MP" SET count:tls 1 >/dev/null
acli "$MP" WAIT 2 2000 >/dev/null
kill_node "$M"
wait_for 30 "failover over TLS: the sentinels name another master" eval 'n=$(master_node); [ -n "$n" ] && [ "$n" != "$M" ]'
start_redis "$M"
N=$(master_node)
wait_for 40 "the old master rejoins as a replica over TLS" replica_of "$M" "$N"
check "the write before the failover survived" eval '[ "$(acli "$(rport "$N")" GET count:tls)" = 1 ]'
wait_for 30 "every sentinel knows both replicas" eval 'knows_replicas 0 && knows_replicas 1 && knows_replicas 2'
if run_script "$N" prestop-redis.sh >"$T/prestop.log" 2>&1 && grep -q 'master moved to' "$T/prestop.log"; then
  ok "preStop hands the master over over TLS ($(grep -o 'after [0-9.]*s' "$T/prestop.log"))"
else
  bad "preStop handover over TLS"
  cat "$T/prestop.log"
fi
M=$(master_node)
wait_for 40 "the old master replicates the new one" replica_of "$N" "$M"
wait_for 30 "every sentinel knows both replicas again" eval 'knows_replicas 0 && knows_replicas 1 && knows_replicas 2'
MP=$(rport "$M")

# 6. Every certificate rotates to a new CA under load, in three steps (docs/tls.md).
declare -A PID0
for i in 0 1 2; do PID0[$i]=$(server_pid "$(rport "$i")"); done
# shellcheck disable=SC2034 # read in an eval string below
epoch0=$(acli "$(sport 0)" SENTINEL master mymaster | awk 'p { print; exit } $0 == "config-epoch" { p = 1 }')
reloads() { grep -c 'reloaded in place' "$T/n$1/redis.log" || true; }
restarts() { grep -c 'sentinel restarted with them' "$T/n$1/sentinel.log" || true; }
applied() { # applied N: every redis reloaded and every sentinel restarted N times
  local i
  for i in 0 1 2; do [ "$(reloads "$i")" -ge "$1" ] && [ "$(restarts "$i")" -ge "$1" ] || return 1; done
}
# INCRs as user tally, each on a new TLS connection with the client's files of the moment. The
# bound is 10 s, not the scripts' 3: a call killed by its bound is ambiguous (its INCR may have
# run), and on a loaded CI machine, with the sentinels restarting, calls took 0.3 s on average;
# the one failure CI saw also failed the count check, which is what a killed call whose INCR
# ran produces (a refused one leaves the count equal to the successes).
load() {
  local out rc
  while [ ! -e "$T/stop-load" ]; do
    rc=0
    out=$(CLI_TIMEOUT=10 cli tally "$(pw tally)" "localhost:$MP" INCR count:rotation 2>&1) || rc=$?
    case "$out" in
      '' | *[!0-9]*) echo "fail (exit $rc) $out" ;;
      *) echo ok ;;
    esac
  done >"$T/load.out"
}
load &
LOAD=$!
PIDS+=("$LOAD")
t_rot=$(date +%s)
sleep 1
tls_publish "$T/bundle.crt" old
wait_for 60 "step 1 (CA bundle: old + new) applied: every redis reloaded, every sentinel restarted" applied 1
tls_publish "$T/bundle.crt" new
wait_for 60 "step 2 (certificates of the new CA) applied everywhere" applied 2
for i in 0 1 2; do
  check "node $i serves a certificate of the new CA (Redis and Sentinel)" \
    eval 'issuer_ok "$(rport "$i")" "$T/ca2/ca.crt" && issuer_ok "$(sport "$i")" "$T/ca2/ca.crt"'
done
tls_publish "$T/ca2/ca.crt" new
wait_for 60 "step 3 (the new CA alone) applied everywhere" applied 3
sleep 1
: >"$T/stop-load"
wait "$LOAD" || true
t_rot=$(($(date +%s) - t_rot))
n_ok=$(grep -c '^ok' "$T/load.out" || true)
n_fail=$(grep -c '^fail' "$T/load.out" || true)
check "rotation under load: $n_ok INCRs, $n_fail failed, in ${t_rot}s" [ "$n_fail" = 0 ] && [ "$n_ok" -gt 0 ]
[ "$n_fail" = 0 ] || grep '^fail' "$T/load.out" | sort | uniq -c | head -n 5
check "every INCR counted" eval '[ "$(acli "$MP" GET count:rotation)" = "$n_ok" ]'
for i in 0 1 2; do
  check "node $i: redis-server not restarted (pid ${PID0[$i]})" eval '[ "$(server_pid "$(rport "$i")")" = "${PID0[$i]}" ]'
done
check "the sentinels kept their state (same epoch, both replicas, two other sentinels)" eval \
  '[ "$(acli "$(sport 0)" SENTINEL master mymaster | awk "p { print; exit } \$0 == \"config-epoch\" { p = 1 }")" = "$epoch0" ] \
   && knows_replicas 0 && knows_replicas 1 && knows_replicas 2 \
   && acli "$(sport 0)" SENTINEL CKQUORUM mymaster | grep -q "^OK 3 usable"'
check "replication up after the rotation" \
  eval 'replica_of $(((M + 1) % 3)) "$M" && replica_of $(((M + 2) % 3)) "$M"'
check "the old CA is no longer trusted by the servers (a client certificate of it refused)" \
  eval 'mkdir -p "$T/oldclient" && cp "$T/ca2/ca.crt" "$T/oldclient/ca.crt" && cp "$CERTS/old-client.crt" "$T/oldclient/tls.crt" \
    && cp "$CERTS/old-client.key" "$T/oldclient/tls.key" && [ "$(tls_as "$T/oldclient" "$MP" PING)" != PONG ]'
check "a client that trusts only the old CA cannot connect" \
  eval '[ "$(REDIS_TLS_CA_FILE=$T/ca1/ca.crt acli "$MP" PING)" != PONG ]'
if [ "$EXPORTER" = yes ]; then
  sleep 2
  check "redis_exporter still scrapes with the new files (redis_up 1)" eval '[ "$(metric redis_up)" = 1 ]'
fi

# 7. The group fails over with the new certificates only.
kill_node "$M"
wait_for 30 "failover after the rotation" eval 'n=$(master_node); [ -n "$n" ] && [ "$n" != "$M" ]'
start_redis "$M"
wait_for 40 "the old master rejoins as a replica" replica_of "$M" "$(master_node)"
check "every INCR survived the failover" eval '[ "$(acli "$(rport "$(master_node)")" GET count:rotation)" = "$n_ok" ]'

# 8. Redis Cluster over TLS only (tls-cluster: the bus too), client certificates required: the
# Cluster test (creation, redirections, preStop, a password rotation under load, a failover) with
# one certificate for every node (Redis checks a peer's chain, not its name).
if [ "${TLS_CLUSTER:-yes}" = yes ]; then
  mkdir -p "$T/cluster-tls"
  bash "$SCRIPT_CERTS" issue "$T/ca2" cluster localhost
  cp "$T/ca2/ca.crt" "$T/cluster-tls/ca.crt"
  cp "$T/ca2/cluster.crt" "$T/cluster-tls/tls.crt"
  cp "$T/ca2/cluster.key" "$T/cluster-tls/tls.key"
  if out=$(REDIS_TLS=yes REDIS_TLS_DIR=$T/cluster-tls REDIS_TLS_AUTH_CLIENTS=yes TEST_BASE_PORT='' \
    timeout 300 bash "$ROOT/scripts/test-redis-cluster-acl.sh" 2>&1); then
    ok "Redis Cluster over TLS: $(printf '%s\n' "$out" | tail -n 1)"
  else
    bad "Redis Cluster over TLS"
    printf '%s\n' "$out" | grep -E '^(FAIL|ok)' | head -n 40
  fi
fi

echo "$PASS passed, $FAIL failed in $(elapsed)s"
[ "$FAIL" -eq 0 ]
