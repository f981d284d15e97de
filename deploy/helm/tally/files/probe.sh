#!/bin/sh
# Kubernetes probes of the redis and sentinel containers (the images have a shell; the app's
# image does not and uses HTTP probes).
#
#   probe.sh redis-alive      Redis answers at all (PONG, LOADING, MASTERDOWN... all count)
#   probe.sh redis-ready      Redis is master, or a replica whose link to the master is up and
#                             that has finished its sync: a rolling update moves on only then
#   probe.sh sentinel-alive   Sentinel answers
#   probe.sh sentinel-ready   Sentinel knows the master of the group
#   probe.sh cluster-ready    Redis Cluster node: cluster_state ok and, on a replica, in sync as
#                             above; a lone node of a cluster not yet created is ready too
#                             (start-cluster-node.sh flags it), so cluster-init.sh can run
set -u
SCRIPT_NAME=probe
FILES_DIR=${FILES_DIR:-$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)}
# shellcheck source-path=SCRIPTDIR source=redis-lib.sh
. "$FILES_DIR/redis-lib.sh"
lib_init

case "${1:-}" in
  redis-alive)
    out=$(redis_cli "$MY_REDIS" PING 2>&1) || { echo "no answer: $out"; exit 1; }
    case "$out" in
      PONG | *LOADING* | *MASTERDOWN* | *BUSY*) exit 0 ;;
      *) echo "unexpected reply: $out"; exit 1 ;;
    esac
    ;;
  redis-ready)
    info=$(redis_cli "$MY_REDIS" INFO replication 2>&1) || { echo "no answer: $info"; exit 1; }
    role=$(info_field "$info" role)
    case "$role" in
      master) exit 0 ;;
      slave)
        link=$(info_field "$info" master_link_status)
        syncing=$(info_field "$info" master_sync_in_progress)
        if [ "$link" = up ] && [ "$syncing" = 0 ]; then exit 0; fi
        echo "replica not in sync: link=$link sync_in_progress=$syncing"
        exit 1
        ;;
      *) echo "unexpected reply: $info"; exit 1 ;;
    esac
    ;;
  cluster-ready)
    if [ "$(info_field "$(redis_cli "$MY_REDIS" CLUSTER INFO 2>/dev/null)" cluster_state)" != ok ]; then
      [ -e "${REDIS_RUN_DIR:-/tmp/redis}/new-cluster" ] && exit 0
      echo "cluster_state is not ok"
      exit 1
    fi
    exec sh "$0" redis-ready
    ;;
  sentinel-alive)
    out=$(sentinel_cli "$MY_SENTINEL" PING 2>&1) || { echo "no answer: $out"; exit 1; }
    [ "$out" = PONG ] || { echo "unexpected reply: $out"; exit 1; }
    ;;
  sentinel-ready)
    master=$(sentinel_master_of "$MY_SENTINEL")
    [ -n "$master" ] || { echo "sentinel knows no master"; exit 1; }
    ;;
  *)
    echo "usage: $0 redis-alive|redis-ready|cluster-ready|sentinel-alive|sentinel-ready" >&2
    exit 2
    ;;
esac
exit 0
