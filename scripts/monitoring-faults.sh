# shellcheck shell=bash
# The faults of scripts/test-monitoring.sh beyond a killed master: each makes one or more of the
# chart's alerts fire against the real Sentinel group, serve, web and worker, and puts the group
# back as it was. Sourced after monitoring-lib.sh; defines functions only. The alerts not seen
# firing here are listed, with the reason, in docs/monitoring.md (they are unit-tested).

# index_of PORT: the node (0-2) whose Redis listens on PORT
index_of() {
  local i
  for i in 0 1 2; do [ "${REDIS_PORT[$i]}" != "$1" ] || { echo "$i"; return; }; done
}
signal() { kill "-$2" "${PID[$1]}"; } # signal NAME SIGNAL: no wait (SIGSTOP, SIGCONT)
master_moved_from() { local now; now=$(sentinel_master_port); [ -n "$now" ] && [ "$now" != "$1" ]; }
no_alert() { ! active_alerts | grep -q "^$1@"; } # no_alert NAME: NAME neither pending nor firing
bgsave_ok() { rcli "$1" INFO persistence | grep -q '^rdb_last_bgsave_status:ok'; }
# Background helpers of a fault are waited for by pid: a bare `wait` would wait for the servers.

# Redis full (maxmemory 1 byte on the master): new ids get 507, existing ones count on.
fault_full() {
  local m=$1 t i
  t=$(now)
  rcli "$m" CONFIG SET maxmemory 1 >/dev/null
  log "the master (:$m) at maxmemory: new ids get 507"
  for i in $(seq 1 40); do
    curl -s -o /dev/null "http://127.0.0.1:$SERVE_PORT/brand-new-$i-$RANDOM"
    sleep 0.2
  done &
  local writer=$!
  watch_alerts "Redis full (maxmemory)" "$t" 30 TallyStoreFull TallyRedisMemoryNearFull
  wait "$writer"
  rcli "$m" CONFIG SET maxmemory 64mb >/dev/null
}

# Slow writes: CLIENT PAUSE WRITE on the master, 1.5 s at a time (below the 2 s deadline).
fault_slow() {
  local m=$1 t
  t=$(now)
  log "writes paused 1.5 s at a time on the master (:$m)"
  (for _ in 1 2 3 4 5 6 7 8 9 10; do rcli "$m" CLIENT PAUSE 1500 WRITE >/dev/null; sleep 1.6; done) &
  local pauser=$!
  watch_alerts "slow writes (CLIENT PAUSE)" "$t" 40 TallyHighLatencyP99
  wait "$pauser"
}

# Frozen replicas: both for 8 s (WAIT cannot be satisfied: 503s), one of them for 25 s (a lag
# above 10 s for long enough to fire and reach the webhook before it resolves).
fault_frozen_replicas() {
  local a=$1 b=$2 t
  t=$(now)
  signal "redis-$a" STOP
  signal "redis-$b" STOP
  log "replicas $a and $b frozen (SIGSTOP); $b thaws after 8 s, $a after 25 s"
  (sleep 8; signal "redis-$b" CONT) &
  local thaw_b=$!
  (sleep 25; signal "redis-$a" CONT) &
  local thaw_a=$!
  watch_alerts "replicas frozen" "$t" 40 TallyReplicationWaitTimeouts TallyRedisReplicaLag
  wait "$thaw_b" "$thaw_a"
}

# A replica killed: the master has one replica left.
fault_replica_gone() {
  local a=$1 m=$2 t
  # The freeze made this pod's TallyRedisDown fire: it must be over before the kill is judged.
  wait_until 60 "TallyRedisDown resolved after the freeze" no_alert TallyRedisDown
  t=$(now)
  halt "redis-$a" KILL
  log "replica $a SIGKILLed"
  watch_alerts "a replica killed" "$t" 30 TallyRedisReplicasMissing "TallyRedisDown@$RELEASE-redis-$a"
  redis_node "$a" "$m"
  wait_until 30 "node $a back in sync" replicas_in_sync "$m" 2
}

# A replica whose snapshot fails: a directory where the RDB file goes makes the rename fail.
fault_disk() {
  local a=$1 t
  t=$(now)
  rm -f "$WORK/redis-$a/dump.rdb"
  mkdir -p "$WORK/redis-$a/dump.rdb/in-the-way"
  rcli "${REDIS_PORT[$a]}" BGSAVE >/dev/null
  log "replica $a cannot write its snapshot (BGSAVE fails)"
  watch_alerts "a failing snapshot" "$t" 30 "TallyRedisDiskErrors@$RELEASE-redis-$a"
  rm -rf "$WORK/redis-$a/dump.rdb"
  rcli "${REDIS_PORT[$a]}" BGSAVE >/dev/null
  wait_until 20 "the snapshot works again" bgsave_ok "${REDIS_PORT[$a]}"
}

# More connections than serve's cap (TALLY_MAX_CONNECTIONS=32), held for 6 s.
fault_connections() {
  local t
  t=$(now)
  python3 - "$SERVE_PORT" <<'EOF' &
import socket, sys, time
held = []
for _ in range(48):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    held.append(s)
time.sleep(6)
EOF
  local flood=$!
  log "48 idle connections to serve (cap 32)"
  watch_alerts "connection flood" "$t" 30 TallyConnectionCapReached
  wait "$flood"
}

# No master anywhere: every sentinel and the master killed, so nobody can name or be a master;
# then the master comes back on its data and the sentinels are started anew, monitoring it.
fault_no_master() {
  local m=$1 mi t i
  mi=$(index_of "$m")
  t=$(now)
  for i in 0 1 2; do halt "sentinel-$i" KILL; done
  halt "redis-$mi" KILL
  log "every sentinel and the master (node $mi) SIGKILLed: no master to be found"
  watch_alerts "no master at all" "$t" 40 TallyNoRedisMaster TallyWorkerRedisUnreachable \
    TallyRedisNoMaster
  redis_node "$mi"
  for i in 0 1 2; do sentinel_node "$i" "$m"; done
  wait_until 40 "the group back with its master" replicas_in_sync "$m" 2
  wait_until 30 "serve and worker reach Redis again" no_alert TallyNoRedisMaster
}

# Three more handovers (SENTINEL FAILOVER): four master changes within the hour.
fault_flapping() {
  local t i m
  t=$(now)
  for i in 1 2 3; do
    m=$(sentinel_master_port)
    REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -p "${SENTINEL_PORT[0]}" SENTINEL FAILOVER mymaster >/dev/null
    wait_until 30 "handover $i" master_moved_from "$m"
    wait_until 30 "replicas in sync after handover $i" replicas_in_sync "$(sentinel_master_port)" 2
  done
  log "three handovers (SENTINEL FAILOVER): four master changes in the hour; serve counted" \
    "$(prom query --data-urlencode 'query=tally_master_changes_total' | jq -c '[.data.result[] | [.metric.service, .value[1]]]')"
  watch_alerts "four failovers in an hour" "$t" 30 TallyRedisFailoverFlapping
}

# more_faults MASTER-PORT: the faults above in an order that leaves the group healthy after each.
more_faults() {
  local m=$1 mi a b
  mi=$(index_of "$m")
  a=$(((mi + 1) % 3))
  b=$(((mi + 2) % 3))
  fault_full "$m"
  fault_slow "$m"
  fault_frozen_replicas "$a" "$b"
  wait_until 30 "replicas in sync after the freeze" replicas_in_sync "$m" 2
  fault_replica_gone "$a" "$m"
  fault_disk "$b"
  fault_no_master "$m"
  fault_connections
  fault_flapping
}
