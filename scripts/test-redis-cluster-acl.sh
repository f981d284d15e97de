#!/usr/bin/env bash
# Tests the ACL users in Redis Cluster mode against real processes: six nodes started by the
# chart's start-cluster-node.sh and created by cluster-init.sh (redis-cli --cluster create as user
# operator); user tally follows the cluster's redirections on its hash-tagged keys and is refused
# the rest; the preStop handover (CLUSTER FAILOVER as operator); every password rotated in three
# steps while INCRs run as tally (0 failures); then a SIGKILLed master is failed over and rejoins
# with the new passwords; no process refused anything (ACL LOG).
#
# Needs redis-server and redis-cli. Bounded; everything started is stopped on exit.
#   TEST_SHELL, TEST_BASE_PORT, KEEP_TMP   as scripts/test-redis-scripts.sh
#   REDIS_TLS=yes, REDIS_TLS_DIR, REDIS_TLS_AUTH_CLIENTS   the same over TLS only (files/tls-lib.sh;
#                  scripts/test-redis-tls.sh runs it so)
# shellcheck disable=SC2016 # conditions are passed to wait_for/check as eval strings on purpose
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The cluster bus ports (each port + 10000) below the ephemeral range as well: an outgoing
# connection may take a port inside it at any moment ("Address already in use").
PORT_SPAN=10010
# shellcheck source=scripts/redis-test-lib.sh
. "$ROOT/scripts/redis-test-lib.sh"
# No sentinels in Cluster mode, so no sentinel password, and no backup (the chart backs up the
# Sentinel group only): as the chart's Cluster pods, which mount neither key, both users are off.
rm -f "$AUTH"/sentinel-password "$AUTH"/backup-password
NODES="0 1 2 3 4 5"
REDIS_NODES=$(for i in $NODES; do printf '127.0.0.1:%s ' "$(rport "$i")"; done | sed 's/ $//')
SENTINEL_NODES=$REDIS_NODES # lib_init wants one per node; Cluster mode has none
for i in $NODES; do port_free $(($(rport "$i") + 10000)) || { echo "SKIP: cluster bus port $(($(rport "$i") + 10000)) in use"; exit 0; }; done
echo "testing Cluster mode's ACL users with $SH on 127.0.0.1 ports $BASE-$((BASE + 5)) (+10000), temp dir $T"

start_node() {
  mkdir -p "$T/n$1"
  CLUSTER_NODE_TIMEOUT_MS=2000 RUN_EXEC='exec' run_script "$1" start-cluster-node.sh >>"$T/n$1/redis.log" 2>&1 &
  REDIS_PID[$1]=$!
  PIDS+=("$!")
}
for i in $NODES; do start_node "$i"; done
CLUSTER_INIT_WAIT_SECONDS=60 run_script 0 cluster-init.sh >"$T/init.log" 2>&1 || { cat "$T/init.log"; bad "cluster-init.sh as user operator"; }
cluster_ok() { local i; for i in $NODES; do [ "$(info_field "$(acli "$(rport "$i")" CLUSTER INFO)" cluster_state)" = ok ] || return 1; done; }
wait_for 30 "cluster-init.sh created the cluster as user operator: every node in state ok" cluster_ok
masters() { local i; for i in $NODES; do [ "$(role "$i")" != master ] || echo "$i"; done; }
check "three masters" eval '[ "$(masters | wc -l)" = 3 ]'

# User tally: its keys through the redirections (-c), CLUSTER SLOTS; nothing else.
tally_incr() { # tally_incr KEY: INCR as tally on any node, following MOVED
  # shellcheck disable=SC2046 # tls_cli_opts prints options to split (none without TLS)
  REDISCLI_AUTH=$(pw tally) redis-cli $(tls_cli_opts) --user tally -c -p "$BASE" INCR "$1" 2>&1
}
for k in 'count:{a}' 'count:{b}' 'count:{c}' '{tally:fib}:n'; do
  check "tally: INCR $k on its slot's master" eval '[ "$(tally_incr "$k")" = 1 ]'
done
check "tally: CLUSTER SLOTS" eval 'as tally "$BASE" CLUSTER SLOTS | head -n 1 | grep -x "[0-9]*" >/dev/null'
for c in "CLUSTER NODES" "CLUSTER FAILOVER" "CLUSTER RESET" "FLUSHALL" "KEYS *" "CONFIG GET *"; do
  # shellcheck disable=SC2034 # argv is used in the eval string
  read -ra argv <<<"$c"
  check "tally refused: $c" eval 'acli "$BASE" ACL DRYRUN tally "${argv[@]}" | grep "no permissions" >/dev/null'
done

# preStop on a master: CLUSTER FAILOVER on its replica, as operator.
M=$(masters | sed -n 1p)
run_script "$M" prestop-cluster.sh >"$T/prestop.log" 2>&1 || true
check "preStop as operator: master $M handed its slots over ($(tail -n 1 "$T/prestop.log"))" eval '[ "$(role "$M")" = slave ]'
# The demoted master resyncs with its successor; until it acknowledges, min-replicas-to-write 1
# refuses that shard's writes (NOREPLICAS), which the load below would count against the rotation.
masters_acknowledged() {
  local m good
  for m in $(masters); do
    good=$(acli "$(rport "$m")" INFO replication | tr -d '\r' | sed -n 's/^min_slaves_good_slaves://p')
    [ "${good:-0}" -ge 1 ] || return 1
  done
}
wait_for 30 "every master has an acknowledging replica again" masters_acknowledged

# Every password rotates in three steps while tally INCRs on new connections.
load() {
  local out
  while [ ! -e "$T/stop-load" ]; do
    # shellcheck disable=SC2046 # tls_cli_opts prints options to split (none without TLS)
    out=$(REDISCLI_AUTH=$(cat "$AUTH/tally-password") redis-cli $(tls_cli_opts) --user tally -c -p "$(rport $((RANDOM % 6)))" INCR 'count:{rotation}' 2>&1) || true
    case "$out" in '' | *[!0-9]*) echo "fail $out" ;; *) echo ok ;; esac
  done >"$T/load.out"
}
load &
LOAD=$!
PIDS+=("$LOAD")
applied_everywhere() { # the lib's, for six nodes without sentinels
  local i u want
  for i in $NODES; do
    for u in tally replication operator exporter admin; do
      want=$(auth_hashes "$u" | tr ' ' '\n' | tr -d '#' | sed '/^$/d' | sort)
      [ "$(user_hashes "$(rport "$i")" "$u")" = "$want" ] || return 1
    done
  done
}
sleep 1
auth_update 'for u in tally replication operator exporter admin; do new_password "$u" >"$u-password-next"; done'
wait_for 30 "rotation 1/3: every node accepts the next passwords" applied_everywhere
auth_update 'for u in tally replication operator exporter admin; do mv "$u-password" "$u-password-previous"; mv "$u-password-next" "$u-password"; done'
wait_for 30 "rotation 2/3: the new passwords sent, the old ones still accepted" applied_everywhere
sleep 2
auth_update 'rm -f ./*-password-previous'
wait_for 30 "rotation 3/3: the new passwords only" applied_everywhere
sleep 1
: >"$T/stop-load"
wait "$LOAD" 2>/dev/null || true
n_ok=$(grep -c '^ok' "$T/load.out" || true)
n_fail=$(grep -c '^fail' "$T/load.out" || true)
echo "cluster-rotation-figures: $n_ok INCRs, $n_fail failed"
check "rotation in Cluster mode: no failed INCR ($n_ok ok, $n_fail failed: $(grep '^fail' "$T/load.out" | sort | uniq -c | head -n 2 | paste -sd';'))" \
  eval '[ "$n_fail" = 0 ] && [ "$n_ok" -gt 50 ]'

# With the new passwords only: a SIGKILLed master is failed over; back, it rejoins as a replica.
M=$(masters | sed -n 1p)
kill_node "$M"
wait_for 30 "new passwords: the cluster fails over a SIGKILLed master" eval '[ "$(masters | wc -l)" = 3 ]'
start_node "$M"
# Until then the new master has no replica, and min-replicas-to-write 1 refuses its writes.
wait_for 40 "new passwords: the old master rejoins as a replica in sync" eval 'replica_link_up "$(rnode "$M")"'
every_shard_writes() { local k; for k in a b c; do tally_incr "count:{$k}" | grep -x "[0-9]*" >/dev/null || return 1; done; }
wait_for 20 "new passwords: tally writes to every shard" every_shard_writes
for i in $NODES; do
  check "nothing refused on node $i (ACL LOG: $(acl_denials "$(rport "$i")" | sort -u | paste -sd';'))" \
    eval '[ -z "$(acl_denials "$(rport "$i")")" ]'
done

if [ "$FAIL" -gt 0 ]; then dump_logs; fi
echo "redis cluster acl: $(elapsed)s"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
