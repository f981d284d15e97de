#!/bin/sh
# Starts redis-sentinel for one node of tally's Redis + Sentinel group (see redis-lib.sh for the
# environment that names the nodes). The monitored master is the one the other sentinels name; if
# none knows one, a Redis node that is master; else the nodes are holding (a cold start or a new
# group, see start-redis.sh) and this script elects the one with the newest data (elect_master).
# The configuration is written anew at every start; the sentinel's id is derived from its name,
# so a restarted sentinel is not counted twice by the others.
#
#   SENTINEL_RUN_DIR             writable directory for sentinel.conf  default: /tmp/sentinel
#   SENTINEL_BIND                addresses to listen on                default: * -::*
#   SENTINEL_QUORUM              sentinels that must agree a master is down      default: 2
#   SENTINEL_DOWN_AFTER_MS       no reply for this long = down         default: 5000
#   SENTINEL_FAILOVER_TIMEOUT_MS                                       default: 60000
#   SENTINEL_WAIT_MASTER_SECONDS wait this long for the master's name to answer  default: 120
#   SENTINEL_WAIT_REPLICAS_SECONDS  then this long for the other nodes to replicate it  default: 10
#   ELECTION_WAIT_SECONDS        with no master, elect when every node answers, or a majority
#                                after this long                       default: 60
#   REDIS_AUTH_INTERVAL          seconds between two looks at the password files  default: 5
#   SENTINEL_SERVER              the binary        default: redis-sentinel, else valkey-sentinel
#   FILES_DIR                    where sentinel.conf and redis-lib.sh are  default: this script's dir
set -eu
SCRIPT_NAME=start-sentinel
FILES_DIR=${FILES_DIR:-$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)}
# shellcheck source-path=SCRIPTDIR source=redis-lib.sh
. "$FILES_DIR/redis-lib.sh"
lib_init
acl_check sentinel "operator sentinel"
auth_seen=$(auth_fingerprint)
tls_init
BRIDGE_SENTINELS=$SENTINEL_NODES
auth_bridge sentinel "$BRIDGE_SENTINELS" "$MY_SENTINEL"

SENTINEL_RUN_DIR=${SENTINEL_RUN_DIR:-/tmp/sentinel}
SENTINEL_BIND=${SENTINEL_BIND:-* -::*}
SENTINEL_QUORUM=${SENTINEL_QUORUM:-2}
SENTINEL_DOWN_AFTER_MS=${SENTINEL_DOWN_AFTER_MS:-5000}
SENTINEL_FAILOVER_TIMEOUT_MS=${SENTINEL_FAILOVER_TIMEOUT_MS:-60000}
SENTINEL_WAIT_MASTER_SECONDS=${SENTINEL_WAIT_MASTER_SECONDS:-120}
SENTINEL_WAIT_REPLICAS_SECONDS=${SENTINEL_WAIT_REPLICAS_SECONDS:-10}
SENTINEL_SERVER=${SENTINEL_SERVER:-$(first_command redis-sentinel valkey-sentinel)}
mkdir -p "$SENTINEL_RUN_DIR"

# No master known: the Redis nodes hold (start-redis.sh) until the newest data is elected. The
# sentinel starts only once there is a master to monitor.
master=$(discover_master)
since=$(date +%s)
waited=0
while [ -z "$master" ]; do
  master=$(elect_master "$waited")
  [ -n "$master" ] && break
  sleep 2
  waited=$(($(date +%s) - since))
  master=$(discover_master 2>/dev/null)
  if [ -z "$master" ] && [ $((waited % 30)) -lt 2 ] && [ "$waited" -ge 2 ]; then
    log "no master yet after ${waited}s: waiting for the Redis nodes to answer and elect one"
  fi
done

# Sentinel refuses to start when the master's name does not resolve yet (a pod that is still
# being created): wait until the master answers, bounded; then start anyway and let a failed
# start restart the container.
waited=0
master_answers=1
while ! redis_cli "$master" PING >/dev/null 2>&1; do
  if [ "$waited" -ge "$SENTINEL_WAIT_MASTER_SECONDS" ]; then
    log "master $master does not answer after ${waited}s; starting anyway"
    master_answers=0
    break
  fi
  sleep 1
  waited=$((waited + 1))
done

# A sentinel learns of the replicas from the master's INFO: once when it connects, then every
# 10 s. Replicas that attach just after that (a new group, or this pod's own Redis restarting
# beside this sentinel) stay unknown to it for up to 10 s; if the master failed then and this
# sentinel won the election, it would find no replica to promote, abort, and the next attempt
# would come only after twice the failover timeout. So start once every other node replicates
# the master, or after a bounded wait (a node that is down must not keep the sentinel down).
replicas_attached() {
  info_field "$(redis_cli "$master" INFO replication 2>/dev/null)" connected_slaves
}
# A node that is down will attach when it is back; only the nodes that answer are waited for.
others_up() {
  _up=0
  for _r in $REDIS_NODES; do
    same_node "$_r" "$master" && continue
    if redis_cli "$_r" PING >/dev/null 2>&1; then _up=$((_up + 1)); fi
  done
  echo "$_up"
}
waited=0
while [ "$master_answers" = 1 ]; do
  have=$(replicas_attached)
  case "$have" in '' | *[!0-9]*) have=0 ;; esac
  want=$(others_up)
  if [ "$have" -ge "$want" ]; then
    log "$have of $want replicas attached to $master"
    break
  fi
  if [ "$waited" -ge "$SENTINEL_WAIT_REPLICAS_SECONDS" ]; then
    log "$have of $want replicas attached to $master after ${waited}s; starting anyway"
    break
  fi
  sleep 1
  waited=$((waited + 1))
done

myid=''
if command -v sha1sum >/dev/null 2>&1; then
  myid=$(printf 'tally-sentinel %s' "$MY_SENTINEL" | sha1sum | cut -c1-40)
fi

conf=$SENTINEL_RUN_DIR/sentinel.conf
umask 077
{
  cat "$FILES_DIR/sentinel.conf"
  printf '\n# generated by start-sentinel.sh at start\n'
  listen_conf "$(port_of "$MY_SENTINEL")"
  printf 'bind %s\n' "$SENTINEL_BIND"
  printf 'dir %s\n' "$SENTINEL_RUN_DIR"
  if [ -n "$myid" ]; then printf 'sentinel myid %s\n' "$myid"; fi
  printf 'sentinel announce-ip %s\n' "$(host_of "$MY_SENTINEL")"
  printf 'sentinel announce-port %s\n' "$(port_of "$MY_SENTINEL")"
  # The users (auth-lib.sh). This sentinel reaches the Redis nodes and the other sentinels as
  # user sentinel.
  printf 'aclfile %s\n' "$SENTINEL_RUN_DIR/users.acl"
  printf 'sentinel sentinel-user sentinel\n'
  printf 'sentinel sentinel-pass %s\n' "$(conf_quote "$(auth_password sentinel)")"
  printf 'sentinel monitor %s %s %s %s\n' "$MASTER_NAME" "$(host_of "$master")" "$(port_of "$master")" "$SENTINEL_QUORUM"
  printf 'sentinel auth-user %s sentinel\n' "$MASTER_NAME"
  printf 'sentinel auth-pass %s %s\n' "$MASTER_NAME" "$(conf_quote "$(auth_password sentinel)")"
  printf 'sentinel down-after-milliseconds %s %s\n' "$MASTER_NAME" "$SENTINEL_DOWN_AFTER_MS"
  printf 'sentinel failover-timeout %s %s\n' "$MASTER_NAME" "$SENTINEL_FAILOVER_TIMEOUT_MS"
  printf 'sentinel parallel-syncs %s 1\n' "$MASTER_NAME"
} >"$conf.tmp"
mv "$conf.tmp" "$conf"
acl_write sentinel "$SENTINEL_RUN_DIR/users.acl"
auth_note_sentinel_pass "$SENTINEL_RUN_DIR"

log "monitoring $MASTER_NAME at $master (quorum $SENTINEL_QUORUM, down after ${SENTINEL_DOWN_AFTER_MS}ms)"
# Beside the sentinel (the shell's pid once exec'd), a changed password file is applied without
# a restart (auth-lib.sh); with TLS, changed certificate files restart it in place (tls_run).
auth_loop sentinel "$MY_SENTINEL" "$$" "$SENTINEL_RUN_DIR/users.acl" "$SENTINEL_RUN_DIR" "$auth_seen" </dev/null >/dev/null &
tls_run "$SENTINEL_SERVER" "$conf"
