#!/bin/sh
# Starts redis-server for one node of tally's Redis + Sentinel group (see redis-lib.sh for the
# environment that names the nodes). The role comes from the sentinels, else from a Redis node
# that is master; so a restarted old master rejoins as a replica. Two guards keep a node without
# the newest data from ever becoming the source the others sync from:
# - Empty data directory (a new volume, persistence off) while the sentinels still name this
#   node master and another node holds data: Redis stays down until the sentinels fail over
#   (they will: the master does not answer), then starts as a replica. Starting as master would
#   hand every replica an empty dataset.
# - No master known anywhere (a cold start of the whole group): the node starts holding, a
#   replica of an address where nothing listens, so it loads its data, takes no writes and
#   syncs from no one; start-sentinel.sh elects the node with the newest data (elect_master).
#   Only a node 0 that finds no data anywhere, its own and every other node's, starts a new
#   group as master at once.
# A node that starts empty, or holding, is a replica with replica-priority 0 (never promoted)
# until it has synced; the clock loop then restores the priority.
#
#   REDIS_DATA_DIR          data directory (AOF, RDB)                  default: /data
#   REDIS_RUN_DIR           writable directory for the generated redis.conf  default: /tmp/redis
#   REDIS_BIND              addresses to listen on                     default: * -::*
#   REDIS_EXTRA_CONFIG_FILE optional file of extra directives, included last
#   REDIS_MAXMEMORY, REDIS_MAXMEMORY_PERCENT, REDIS_MEMORY_LIMIT: the memory bound (see
#                           maxmemory_setting in redis-lib.sh)    default: 75 % of the limit
#   REDIS_EMPTY_WAIT_SECONDS  how long an empty node named master waits for the failover before
#                           it exits (to be restarted and look again)  default: 300
#   REDIS_REPLICA_PRIORITY  replica-priority once in sync          default: 100
#   REDIS_CLOCK_INTERVAL    seconds between two ticks of the clock     default: 1
#   REDIS_STEPDOWN_GRACE    a master for less than this does not step down when the sentinels
#                           name another (a failover in progress)   default: 10
#   REDIS_FENCE_GRACE       nor refuse writes when no majority of them confirms it yet   default: 3
#   REDIS_AUTH_INTERVAL     seconds between two looks at the password files  default: 5
#   REDIS_SERVER            the server binary         default: redis-server, else valkey-server
#   FILES_DIR               where redis.conf and redis-lib.sh are      default: this script's dir
set -eu
SCRIPT_NAME=start-redis
FILES_DIR=${FILES_DIR:-$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)}
# shellcheck source-path=SCRIPTDIR source=redis-lib.sh
. "$FILES_DIR/redis-lib.sh"
lib_init
acl_check redis "operator replication sentinel"
auth_seen=$(auth_fingerprint)
tls_init
# An upgrade from a chart version before ACL users: the old pods learn the users first.
BRIDGE_REDIS=$REDIS_NODES
BRIDGE_SENTINELS=$SENTINEL_NODES
auth_bridge redis "$BRIDGE_REDIS" "$MY_REDIS"
auth_bridge sentinel "$BRIDGE_SENTINELS"

REDIS_DATA_DIR=${REDIS_DATA_DIR:-/data}
REDIS_RUN_DIR=${REDIS_RUN_DIR:-/tmp/redis}
REDIS_BIND=${REDIS_BIND:-* -::*}
REDIS_SERVER=${REDIS_SERVER:-$(first_command redis-server valkey-server)}
mkdir -p "$REDIS_RUN_DIR" "$REDIS_DATA_DIR"

REDIS_EMPTY_WAIT_SECONDS=${REDIS_EMPTY_WAIT_SECONDS:-300}
REDIS_REPLICA_PRIORITY=${REDIS_REPLICA_PRIORITY:-100}
REDIS_CLOCK_INTERVAL=${REDIS_CLOCK_INTERVAL:-1}
REDIS_STEPDOWN_GRACE=${REDIS_STEPDOWN_GRACE:-10}
REDIS_FENCE_GRACE=${REDIS_FENCE_GRACE:-3}

if local_data_present "$REDIS_DATA_DIR"; then has_data=yes; else has_data=no; fi
waited=0
while :; do
  master=$(discover_master)
  if [ -z "$master" ] || ! same_node "$master" "$MY_REDIS" || [ "$has_data" = yes ]; then break; fi
  others=$(others_hold_data)
  if [ "$others" = no ]; then
    log "named master with an empty data directory; no other node holds data: starting as master"
    break
  fi
  if [ "$waited" -ge "$REDIS_EMPTY_WAIT_SECONDS" ]; then
    die "named master with an empty data directory for ${waited}s while other nodes may hold data ($others); not starting as master"
  fi
  [ "$waited" -gt 0 ] || log "the sentinels name this node master, but its data directory is empty and other nodes may hold data ($others): waiting for the sentinels to fail over"
  sleep 2
  waited=$((waited + 2))
done

held=no # replica-priority 0 until synced
if [ -z "$master" ]; then
  if [ "$NODE_INDEX" -eq 0 ] && [ "$has_data" = no ] && [ "$(others_hold_data)" = no ]; then
    master=$FIRST_REDIS
    log "no master known and no data on any node: bootstrapping a new group, node 0 as master"
  else
    master=$HOLD_HOST:$HOLD_PORT
    held=yes
    publish_tail=$(aof_tail "$REDIS_DATA_DIR")
    publish_tail=${publish_tail:--1}
    log "no master known (data here: $has_data, AOF tail $publish_tail): holding, a replica of no one, until the newest data is elected"
  fi
elif ! same_node "$master" "$MY_REDIS" && [ "$has_data" = no ]; then
  held=yes
fi

maxmemory=$(maxmemory_setting)
if [ -n "$maxmemory" ]; then
  log "maxmemory $maxmemory (policy noeviction: a full Redis refuses writes)"
else
  log "WARNING: no memory limit known and REDIS_MAXMEMORY unset: Redis may grow until it is killed"
fi

conf=$REDIS_RUN_DIR/redis.conf
umask 077
{
  printf '# generated by start-redis.sh at start; do not edit\n'
  printf 'include %s\n' "$FILES_DIR/redis.conf"
  listen_conf "$(port_of "$MY_REDIS")"
  printf 'bind %s\n' "$REDIS_BIND"
  printf 'dir %s\n' "$REDIS_DATA_DIR"
  printf 'replica-announce-ip %s\n' "$MY_HOST"
  printf 'replica-announce-port %s\n' "$(port_of "$MY_REDIS")"
  if [ -n "$maxmemory" ]; then
    printf 'maxmemory %s\n' "$maxmemory"
  fi
  # The users (auth-lib.sh); a replica authenticates to its master as user replication.
  printf 'aclfile %s\n' "$REDIS_RUN_DIR/users.acl"
  printf 'masteruser replication\n'
  printf 'masterauth %s\n' "$(conf_quote "$(auth_password replication)")"
  if same_node "$master" "$MY_REDIS"; then
    log "starting as master ($MY_REDIS)"
  else
    log "starting as replica of $master"
    printf 'replicaof %s %s\n' "$(host_of "$master")" "$(port_of "$master")"
    if [ "$held" = yes ]; then
      printf 'replica-priority 0\n'
    fi
  fi
  if [ -n "${REDIS_EXTRA_CONFIG_FILE:-}" ] && [ -r "$REDIS_EXTRA_CONFIG_FILE" ]; then
    printf 'include %s\n' "$REDIS_EXTRA_CONFIG_FILE"
  fi
} >"$conf.tmp"
mv "$conf.tmp" "$conf"
acl_write redis "$REDIS_RUN_DIR/users.acl"
if [ "$held" = yes ]; then : >"$REDIS_RUN_DIR/priority-held"; else rm -f "$REDIS_RUN_DIR/priority-held"; fi

# Beside redis-server (the shell's pid once exec'd), once a second: on the master, tick the clock,
# step down if most sentinels name another, refuse writes while no majority of them confirms it
# (fencing); holding, announce the AOF tail and follow a master once one is known; held back,
# restore replica-priority once in sync.
clock_loop() {
  _pid=$1
  _announcer=''
  _was=''
  _master_since=0
  _fenced=no
  _min_replicas=''
  while sleep "$REDIS_CLOCK_INTERVAL" && kill -0 "$_pid" 2>/dev/null; do
    _info=$(redis_cli "$MY_REDIS" INFO replication 2>/dev/null) || continue
    # The configured value, read before anything fences (preStop fences too): what unfencing
    # restores.
    if [ -z "$_min_replicas" ]; then
      _min_replicas=$(redis_cli "$MY_REDIS" CONFIG GET min-replicas-to-write | sed -n 2p)
      [ -n "$_min_replicas" ] || continue
    fi
    _role=$(info_field "$_info" role)
    if [ "$_role" = master ] && [ "$_was" != master ]; then _master_since=$(date +%s); fi
    if [ "$_role" = slave ] && [ "$_fenced" = yes ]; then
      # A fenced master that became a replica: its write guard is Redis's again.
      redis_cli "$MY_REDIS" CONFIG SET min-replicas-to-write "$_min_replicas" >/dev/null 2>&1 && _fenced=no
    fi
    if [ "$_role" = slave ] && [ "$_was" = master ]; then
      # Demoted (a failover it missed, a preStop handover): its data is older than the master's
      # until it has synced, and Sentinel must not promote it meanwhile.
      redis_cli "$MY_REDIS" CONFIG SET replica-priority 0 >/dev/null 2>&1 && : >"$REDIS_RUN_DIR/priority-held"
      log "now a replica: replica-priority 0 until in sync"
    fi
    _was=$_role
    _holding=no
    if [ "$(info_field "$_info" master_host)" = "$HOLD_HOST" ] && [ "$(info_field "$_info" master_port)" = "$HOLD_PORT" ]; then
      _holding=yes
    fi
    _flag=$REDIS_RUN_DIR/announce-tail
    if [ "$_holding" = yes ] && [ -n "${publish_tail:-}" ]; then
      if [ -z "$_announcer" ] || ! kill -0 "$_announcer" 2>/dev/null; then
        : >"$_flag"
        announce_tail "$publish_tail" "$_flag" &
        _announcer=$!
      fi
    elif [ -n "$_announcer" ]; then
      rm -f "$_flag"
      _announcer=''
    fi
    case "$_role" in
      master)
        # One look at every sentinel, at most a second each: a master cut off from them must
        # find out before they fail over (down-after 5 s).
        _verdict=$(majority_of "$(sentinel_views)" "$MY_REDIS")
        _age=$(($(date +%s) - _master_since))
        _m=''
        # Not in the first REDIS_STEPDOWN_GRACE seconds as master: a replica just promoted is
        # master before the sentinels announce it.
        if [ "$_age" -ge "$REDIS_STEPDOWN_GRACE" ]; then
          case "$_verdict" in other*) _m=${_verdict#other } ;; esac
        fi
        if [ -n "$_m" ]; then
          # Most sentinels name another master: this node was replaced while cut off (a healed
          # partition, a failover it missed). Step down now, not when a sentinel gets to it
          # (up to 10 s): until then the sentinels list it as a replica, and one more failover
          # could promote it on old data. replica-priority 0 until it has synced.
          log "the sentinels name $_m master: stepping down to replicate it"
          redis_cli "$MY_REDIS" CONFIG SET replica-priority 0 >/dev/null 2>&1 && : >"$REDIS_RUN_DIR/priority-held"
          follow "$MY_REDIS" "$_m"
          _was=slave
        elif [ "$_verdict" = confirmed ]; then
          if [ "$_fenced" = yes ]; then
            redis_cli "$MY_REDIS" CONFIG SET min-replicas-to-write "$_min_replicas" >/dev/null 2>&1 \
              && _fenced=no && log "the sentinels confirm this master again: taking writes"
          fi
          redis_cli "$MY_REDIS" -n "$REDIS_CLOCK_DB" INCR "$CLOCK_KEY" >/dev/null 2>&1 || true
        elif [ "$_fenced" = no ] && [ "$_age" -ge "$REDIS_FENCE_GRACE" ]; then
          # Fenced: no majority of sentinels confirms this node as a healthy master (it is cut
          # off from them, or a failover is under way). A replica it can still reach would
          # confirm writes (WAIT) that the failover then throws away, so it refuses them
          # (NOREPLICAS) until the sentinels confirm it, or name another.
          redis_cli "$MY_REDIS" CONFIG SET min-replicas-to-write "$REDIS_NODE_COUNT" >/dev/null 2>&1 \
            && _fenced=yes && log "no majority of sentinels confirms this master: refusing writes"
        fi
        ;;
      slave)
        if [ "$_holding" = yes ]; then
          _m=$(discover_master)
          if [ -n "$_m" ] && ! same_node "$_m" "$MY_REDIS"; then
            log "holding: $_m is master now; replicating it"
            follow "$MY_REDIS" "$_m"
          fi
        elif [ -e "$REDIS_RUN_DIR/priority-held" ] && [ "$(info_field "$_info" master_link_status)" = up ] \
          && [ "$(info_field "$_info" master_sync_in_progress)" = 0 ]; then
          redis_cli "$MY_REDIS" CONFIG SET replica-priority "$REDIS_REPLICA_PRIORITY" >/dev/null 2>&1 \
            && rm -f "$REDIS_RUN_DIR/priority-held" && log "in sync: replica-priority $REDIS_REPLICA_PRIORITY"
        fi
        ;;
    esac
  done
}
clock_loop "$$" </dev/null >/dev/null &
# Beside it, a changed password file is applied without a restart (auth-lib.sh).
auth_loop redis "$MY_REDIS" "$$" "$REDIS_RUN_DIR/users.acl" "$REDIS_RUN_DIR" "$auth_seen" </dev/null >/dev/null &

exec "$REDIS_SERVER" "$conf"
