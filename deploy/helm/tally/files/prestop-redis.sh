#!/bin/sh
# preStop hook of the redis container: when this node is the master, hand the role to a replica
# before the process gets SIGTERM, so a rolling update or a drain does not wait for Sentinel's
# down-after-milliseconds. Steps: CLIENT PAUSE WRITE (writes wait, the replicas catch up),
# SENTINEL FAILOVER on a sentinel, wait until the sentinels name another master, REPLICAOF it,
# CLIENT UNPAUSE (paused writers then get READONLY and go to the new master). On a replica: nothing
# to do.
# Always exits 0: a failed handover must not block the pod's termination.
#
#   PRESTOP_PAUSE_MS        how long writes are paused at most            default: 15000
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

log "master with $replicas replica(s): pausing writes for at most ${PRESTOP_PAUSE_MS}ms"
redis_cli "$MY_REDIS" CLIENT PAUSE "$PRESTOP_PAUSE_MS" WRITE >/dev/null 2>&1 \
  || log "CLIENT PAUSE failed; failing over anyway"

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
  # Poll 5 times a second: writes stay paused until the switch is seen, and a writer's request
  # deadline (tally: 2 s) must outlast the pause. `sleep 0.2` is not POSIX; where it fails, 1 s.
  ticks=0
  while [ "$ticks" -lt $((PRESTOP_TIMEOUT_SECONDS * 5)) ]; do
    now=$(sentinel_master_of "$asked")
    if [ -n "$now" ] && ! same_node "$now" "$MY_REDIS"; then
      log "master moved to $now after $((ticks / 5)).$((ticks % 5 * 2))s"
      switched=1
      # Become its replica now rather than when the sentinels get to it (seconds later), so the
      # writers paused here get READONLY instead of writing to a master that has been replaced.
      redis_cli "$MY_REDIS" REPLICAOF "$(host_of "$now")" "$(port_of "$now")" >/dev/null 2>&1 || true
      break
    fi
    if sleep 0.2 2>/dev/null; then ticks=$((ticks + 1)); else sleep 1 && ticks=$((ticks + 5)); fi
  done
  [ "$switched" -eq 1 ] || log "the sentinels did not switch within ${PRESTOP_TIMEOUT_SECONDS}s"
else
  log "no sentinel accepted SENTINEL FAILOVER"
fi

redis_cli "$MY_REDIS" CLIENT UNPAUSE >/dev/null 2>&1 || true
exit 0
