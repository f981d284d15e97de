#!/bin/sh
# Creates tally's Redis Cluster once: waits until every node answers, then, only when no node has
# a slot assigned, runs `redis-cli --cluster create` over all of them with CLUSTER_REPLICAS
# replicas per master, and waits until every node reports cluster_state:ok. When any node already
# has slots (the cluster exists: an upgrade, a rerun) it changes nothing. The chart runs it as a
# post-install/post-upgrade hook Job, compose as a one-shot container; both are safe to rerun.
#
#   CLUSTER_INIT_WAIT_SECONDS  how long to wait for the nodes, then for state ok   default: 600
set -eu
SCRIPT_NAME=cluster-init
FILES_DIR=${FILES_DIR:-$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)}
# shellcheck source-path=SCRIPTDIR source=cluster-lib.sh
. "$FILES_DIR/cluster-lib.sh"
NODE_INDEX=${NODE_INDEX:-0} # the Job is no node; it needs lib_init's node lists only
cluster_lib_init
WAIT=${CLUSTER_INIT_WAIT_SECONDS:-600}

masters=$((REDIS_NODE_COUNT / (CLUSTER_REPLICAS + 1)))
if [ $((masters * (CLUSTER_REPLICAS + 1))) -ne "$REDIS_NODE_COUNT" ] || [ "$masters" -lt 3 ]; then
  die "$REDIS_NODE_COUNT nodes cannot form 3 or more masters with $CLUSTER_REPLICAS replicas each"
fi

waited=0
until all_nodes_answer; do
  [ "$waited" -lt "$WAIT" ] || die "not every node answered within ${WAIT}s: $REDIS_NODES"
  sleep 2
  waited=$((waited + 2))
done

existing=$(cluster_exists)
if [ -n "$existing" ]; then
  log "the cluster exists ($existing has $(cluster_field "$existing" cluster_slots_assigned) slots, state $(cluster_field "$existing" cluster_state)): nothing to do"
  exit 0
fi

# CLUSTER MEET takes addresses, not names: the nodes are created by IP; each announces its name.
addrs=''
for n in $REDIS_NODES; do
  ip=$(resolve "$(host_of "$n")")
  [ -n "$ip" ] || die "$(host_of "$n") does not resolve"
  addrs="$addrs $ip:$(port_of "$n")"
done
log "creating the cluster: $masters masters, $CLUSTER_REPLICAS replica(s) each, from$addrs"
# shellcheck disable=SC2086,SC2046 # one argument per node; tls_cli_opts prints options to split
REDISCLI_AUTH=$(auth_password operator) "$REDIS_CLI" $(tls_cli_opts) --user operator --cluster create $addrs \
  --cluster-replicas "$CLUSTER_REPLICAS" --cluster-yes

waited=0
for n in $REDIS_NODES; do
  until [ "$(cluster_field "$n" cluster_state)" = ok ]; do
    [ "$waited" -lt "$WAIT" ] || die "$n is not in state ok after ${WAIT}s"
    sleep 1
    waited=$((waited + 1))
  done
done
log "cluster created: every node reports cluster_state:ok"
