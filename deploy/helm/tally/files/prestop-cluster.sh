#!/bin/sh
# preStop hook of a Redis Cluster node: when this node is a master that owns slots, hand them to
# an in-sync replica with a manual failover (CLUSTER FAILOVER, sent to the replica: the master
# pauses its clients until the replica has caught up, then the replica takes over; nothing
# acknowledged is lost) and wait until this node is a replica. A rolling update or a drain then
# does not wait for cluster-node-timeout. On a replica, or a master without an in-sync replica:
# nothing to do. Always exits 0: a failed handover must not block the pod's termination.
#
#   PRESTOP_TIMEOUT_SECONDS  how long to wait for the roles to switch   default: 30
set -u
SCRIPT_NAME=prestop-cluster
FILES_DIR=${FILES_DIR:-$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)}
# shellcheck source-path=SCRIPTDIR source=cluster-lib.sh
. "$FILES_DIR/cluster-lib.sh"
cluster_lib_init
PRESTOP_TIMEOUT_SECONDS=${PRESTOP_TIMEOUT_SECONDS:-30}

if [ "$(role_of "$MY_REDIS")" != master ] || [ -z "$(cluster_nodes "$MY_REDIS" | awk '$3 ~ /myself/ && NF > 8')" ]; then
  log "not a master with slots: no failover needed"
  exit 0
fi
replica=$(master_in_sync_replica)
if [ -z "$replica" ]; then
  log "no replica in sync: nothing to fail over to"
  exit 0
fi
log "handing this master's slots to $replica (CLUSTER FAILOVER)"
redis_cli "$replica" CLUSTER FAILOVER >/dev/null 2>&1 || { log "CLUSTER FAILOVER refused"; exit 0; }
waited=0
while [ "$(role_of "$MY_REDIS")" = master ]; do
  if [ "$waited" -ge "$PRESTOP_TIMEOUT_SECONDS" ]; then
    log "still master after ${waited}s; stopping anyway"
    exit 0
  fi
  sleep 1
  waited=$((waited + 1))
done
log "now a replica of $replica"
exit 0
