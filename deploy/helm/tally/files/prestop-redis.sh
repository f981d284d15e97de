#!/bin/sh
# preStop hook of the redis container: when this node is the master, hand the role to a replica
# before the process gets SIGTERM, so a rolling update or a drain does not wait for Sentinel's
# down-after-milliseconds. Steps:
#   1. fence: min-replicas-to-write above the replica count, so every new write is refused at
#      once (NOREPLICAS: it did not run, writers try again) while the writes already taken still
#      get their WAIT answered;
#   2. PUBLISH + WAIT on the replicas: they have every write taken before the fence, and every
#      writer's WAIT has its answer;
#   3. SENTINEL FAILOVER on a sentinel, wait until the sentinels name another master, REPLICAOF
#      it (writers then get READONLY and go to the new master);
#   4. lift the fence.
# Not CLIENT PAUSE WRITE: it holds WAIT back too, so a write taken just before the pause had its
# WAIT run only after the demotion, which fails it ("WAIT cannot be used with replica
# instances") although the write was kept: a 503 in a planned handover (TLS harness scenario 8).
# On a replica: nothing to do. Always exits 0: a failed handover must not block the pod's
# termination.
#
#   PRESTOP_PAUSE_MS        how long writes are refused at most            default: 15000
#   PRESTOP_TIMEOUT_SECONDS how long to wait for the sentinels to switch  default: 30
set -u
SCRIPT_NAME=prestop-redis
FILES_DIR=${FILES_DIR:-$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)}
# shellcheck source-path=SCRIPTDIR source=redis-lib.sh
. "$FILES_DIR/redis-lib.sh"
lib_init

PRESTOP_PAUSE_MS=${PRESTOP_PAUSE_MS:-15000}
PRESTOP_TIMEOUT_SECONDS=${PRESTOP_TIMEOUT_SECONDS:-30}

role=$(role_of "$MY_REDIS")
if [ "$role" != master ]; then
  log "role is '${role:-unknown}': no failover needed"
  exit 0
fi
replicas=$(info_field "$(redis_cli "$MY_REDIS" INFO replication 2>/dev/null)" connected_slaves)
if [ "${replicas:-0}" -eq 0 ]; then
  log "master without connected replicas: nothing to fail over to"
  exit 0
fi

# 1. The fence, as start-redis.sh's clock loop fences a master no sentinel majority confirms:
# min-replicas-to-write at the node count, more than a master can have. It counts only replicas
# within min-replicas-max-lag, which must not be 0. Both are put back however this script ends.
fence_to=$(redis_cli "$MY_REDIS" CONFIG GET min-replicas-to-write 2>/dev/null | sed -n 2p)
fence_lag=$(redis_cli "$MY_REDIS" CONFIG GET min-replicas-max-lag 2>/dev/null | sed -n 2p)
fenced=no
lift_fence() {
  [ "$fenced" = yes ] || return 0
  redis_cli "$MY_REDIS" CONFIG SET min-replicas-to-write "${fence_to:-0}" >/dev/null 2>&1
  [ "${fence_lag:-0}" -gt 0 ] || redis_cli "$MY_REDIS" CONFIG SET min-replicas-max-lag "${fence_lag:-0}" >/dev/null 2>&1
  fenced=no
}
trap lift_fence EXIT
trap 'exit 0' INT TERM
if [ -n "$fence_to" ] && [ -n "$fence_lag" ] \
  && redis_cli "$MY_REDIS" CONFIG SET min-replicas-to-write "$REDIS_NODE_COUNT" >/dev/null 2>&1; then
  fenced=yes
  [ "$fence_lag" -gt 0 ] || redis_cli "$MY_REDIS" CONFIG SET min-replicas-max-lag 10 >/dev/null 2>&1
  log "master with $replicas replica(s): refusing writes for at most ${PRESTOP_PAUSE_MS}ms"
fi
[ "$fenced" = yes ] || log "could not fence writes; failing over anyway"

# 2. PUBLISH is replicated and not a write (the fence lets it through), so the WAIT after it on
# the same connection returns once the online replicas have acknowledged every earlier write.
online=$(printf '%s\n' "$(redis_cli "$MY_REDIS" INFO replication 2>/dev/null)" | grep -c '^slave[0-9]*:.*state=online')
acked=$(printf 'PUBLISH tally:redis:prestop fenced\nWAIT %s 1000\n' "$online" \
  | redis_cli "$MY_REDIS" 2>/dev/null | tail -n 1 | tr -d '\r')
log "$acked of $online online replica(s) acknowledged every write taken"

# Ask this node's own sentinel first, then the others, until one starts the failover.
asked=''
for s in "$MY_SENTINEL" $SENTINEL_NODES; do
  reply=$(sentinel_cli "$s" SENTINEL FAILOVER "$MASTER_NAME" 2>&1) || continue
  case "$reply" in
    OK* | *INPROG*)
      log "sentinel $s: $reply"
      asked=$s
      break
      ;;
    *) log "sentinel $s refused the failover: $reply" ;;
  esac
done

switched=0
if [ -n "$asked" ]; then
  # Poll 5 times a second: writes stay refused until the switch is seen, and a writer's request
  # deadline (tally: 2 s, retrying) must outlast the fence. `sleep 0.2` is not POSIX; where it
  # fails, 1 s.
  ticks=0
  while [ "$ticks" -lt $((PRESTOP_TIMEOUT_SECONDS * 5)) ]; do
    if [ "$fenced" = yes ] && [ $((ticks * 200)) -ge "$PRESTOP_PAUSE_MS" ]; then
      log "no switch after ${PRESTOP_PAUSE_MS}ms: taking writes again"
      lift_fence
    fi
    now=$(sentinel_master_of "$asked")
    if [ -n "$now" ] && ! same_node "$now" "$MY_REDIS"; then
      log "master moved to $now after $((ticks / 5)).$((ticks % 5 * 2))s"
      switched=1
      # Become its replica now rather than when the sentinels get to it (seconds later), so the
      # writers refused here get READONLY and look for the new master.
      redis_cli "$MY_REDIS" REPLICAOF "$(host_of "$now")" "$(port_of "$now")" >/dev/null 2>&1 || true
      break
    fi
    if sleep 0.2 2>/dev/null; then ticks=$((ticks + 1)); else sleep 1 && ticks=$((ticks + 5)); fi
  done
  [ "$switched" -eq 1 ] || log "the sentinels did not switch within ${PRESTOP_TIMEOUT_SECONDS}s"
else
  log "no sentinel accepted SENTINEL FAILOVER"
fi

lift_fence
exit 0
