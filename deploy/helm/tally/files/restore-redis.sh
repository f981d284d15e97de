#!/bin/sh
# Restores tally's Redis + Sentinel group from an RDB backup (backup-redis.sh's files), in two
# steps; docs/backup.md has the runbook for Kubernetes and compose.
#
#   restore-redis.sh prepare FILE   With the node's Redis stopped: makes its data directory hold
#       FILE's data, as an AOF. Prints the number of keys (outside the clock's database).
#   restore-redis.sh verify KEYS    Once the group runs again (from a Redis pod: it reads the
#       pods' environment, see redis-lib.sh): waits until a majority of sentinels agree on a
#       master that holds KEYS keys and every other node replicates it with as many.
#
# Why prepare is more than a copy of dump.rdb: with `appendonly yes` (redis.conf) Redis loads the
# AOF and ignores dump.rdb; with no AOF it starts EMPTY and writes an empty AOF. So prepare moves
# the old data aside, starts a private redis-server (a unix socket, no TCP port) with appendonly
# no on FILE, and turns the AOF on (CONFIG SET appendonly yes: Redis rewrites the AOF from the
# loaded data). Then it loads that AOF once more, as the node will, and compares the key count.
# It also sets the group's recency clock (redis-lib.sh, db 15) to twice the Unix time: a group's
# clock starts at 0 (or at such a value, set by an earlier restore) and grows at most once a
# second, so no node's clock can reach it. At the cold start the election (elect_master) then
# picks a restored node over any node whose old data was not wiped, and that node resyncs from it
# instead of replacing the restore with its newer data.
#
# prepare's environment:
#   REDIS_DATA_DIR       the node's data directory                             default: /data
#   RESTORE_OLD_DATA     move: old AOF/RDB go to REDIS_DATA_DIR/pre-restore-<time>/; delete
#                                                                              default: move
#   RESTORE_CLOCK        the clock to set                    default: twice the Unix time,
#                        and more than the backup's
#   RESTORE_LOAD_TIMEOUT seconds allowed for each load and the AOF rewrite     default: 3600
#   RESTORE_VERIFY_AOF   yes: load the new AOF once more and compare           default: yes
#   RESTORE_RUN_DIR      private directory of the temporary server's socket
#                                                  default: $TMPDIR/redis-restore.<pid>
#   REDIS_SERVER, REDIS_CLI, REDIS_CHECK_RDB   binaries; default the redis-*, else valkey-* ones
# verify's: the Redis pods' (POD_NAME, REDIS_NODE_COUNT, HEADLESS_DOMAIN or REDIS_NODES /
# SENTINEL_NODES, REDIS_AUTH_DIR with operator-password), and RESTORE_VERIFY_TIMEOUT (seconds,
# default 300). verify connects as user operator, as the chart's other scripts do (redis-lib.sh):
# it reads only (SENTINEL get-master-addr-by-name, INFO keyspace/persistence/replication), which
# operator may; admin, which may change users, is never needed. The temporary server of prepare
# has no users and no TCP port: only this process reaches its socket (a directory of mode 700).
set -eu
SCRIPT_NAME=restore-redis
FILES_DIR=${FILES_DIR:-$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)}
# shellcheck source-path=SCRIPTDIR source=redis-lib.sh
. "$FILES_DIR/redis-lib.sh"

# nap: a short pause between two polls (whole seconds where sleep takes no fraction)
nap() {
  sleep 0.2 2>/dev/null || sleep 1
}

usage() {
  echo "usage: $0 prepare RDB-FILE | verify KEYS" >&2
  exit 2
}

# --------------------------------------------------------------------------------- prepare
# start_temp APPENDONLY: starts redis-server on REDIS_DATA_DIR, waits until it has loaded its data
start_temp() {
  {
    printf 'port 0\nunixsocket %s\nunixsocketperm 700\n' "$(conf_quote "$SOCK")"
    printf 'dir %s\ndbfilename dump.rdb\nsave ""\n' "$(conf_quote "$REDIS_DATA_DIR")"
    printf 'appendonly %s\nappendfsync everysec\naof-use-rdb-preamble yes\n' "$1"
    printf 'logfile %s\n' "$(conf_quote "$RESTORE_RUN_DIR/redis.log")"
  } >"$RESTORE_RUN_DIR/redis.conf"
  "$REDIS_SERVER" "$RESTORE_RUN_DIR/redis.conf" </dev/null >/dev/null 2>&1 &
  SERVER_PID=$!
  _since=$(date +%s)
  while :; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      tail -n 20 "$RESTORE_RUN_DIR/redis.log" >&2 || true
      die "the temporary redis-server exited (its log is above)"
    fi
    _pi=$(redis_cli - INFO persistence 2>/dev/null) || _pi=''
    [ "$(info_field "$_pi" loading)" = 0 ] && break
    [ $(($(date +%s) - _since)) -lt "$RESTORE_LOAD_TIMEOUT" ] || die "the temporary redis-server did not load the data in ${RESTORE_LOAD_TIMEOUT}s"
    nap
  done
}

# stop_temp HOW: SHUTDOWN HOW (SAVE or NOSAVE), then waits for the process to end
stop_temp() {
  redis_cli - SHUTDOWN "$1" >/dev/null 2>&1 || true
  _since=$(date +%s)
  while kill -0 "$SERVER_PID" 2>/dev/null; do
    [ $(($(date +%s) - _since)) -lt "$RESTORE_LOAD_TIMEOUT" ] || die "the temporary redis-server did not stop"
    nap
  done
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=''
}

prepare() {
  file=$1
  NODE_INDEX=-
  REDIS_DATA_DIR=${REDIS_DATA_DIR:-/data}
  RESTORE_OLD_DATA=${RESTORE_OLD_DATA:-move}
  RESTORE_CLOCK=${RESTORE_CLOCK:-$((2 * $(date +%s)))}
  RESTORE_LOAD_TIMEOUT=${RESTORE_LOAD_TIMEOUT:-3600}
  RESTORE_VERIFY_AOF=${RESTORE_VERIFY_AOF:-yes}
  RESTORE_RUN_DIR=${RESTORE_RUN_DIR:-${TMPDIR:-/tmp}/redis-restore.$$}
  REDIS_SERVER=${REDIS_SERVER:-$(first_command redis-server valkey-server)}
  REDIS_CLI=${REDIS_CLI:-$(first_command redis-cli valkey-cli)}
  REDIS_CHECK_RDB=${REDIS_CHECK_RDB:-$(first_command redis-check-rdb valkey-check-rdb)}
  REDIS_CLOCK_DB=${REDIS_CLOCK_DB:-15}
  CLI_TIMEOUT=${CLI_TIMEOUT:-10}
  SOCK=$RESTORE_RUN_DIR/redis.sock
  SERVER_PID=''
  # The temporary server, reached through redis-lib.sh's seam (the node argument is ignored), so
  # that node_keys and node_clock read it as they read any node.
  redis_cli() {
    shift
    with_timeout "$REDIS_CLI" -s "$SOCK" "$@"
  }
  case "$RESTORE_CLOCK" in '' | *[!0-9]*) die "RESTORE_CLOCK=$RESTORE_CLOCK is not a whole number" ;; esac
  case "$RESTORE_OLD_DATA" in move | delete) ;; *) die "RESTORE_OLD_DATA=$RESTORE_OLD_DATA: move or delete" ;; esac

  if [ ! -f "$file" ] || [ ! -s "$file" ]; then die "$file is not a non-empty file"; fi
  [ -d "$REDIS_DATA_DIR" ] || die "REDIS_DATA_DIR=$REDIS_DATA_DIR is not a directory"
  t0=$(date +%s)
  if [ -f "$file.sha256" ]; then
    _want=$(cut -d' ' -f1 "$file.sha256")
    [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$_want" ] || die "$file does not match $file.sha256"
    log "$file matches its checksum file"
  else
    log "no $file.sha256 beside $file: its checksum is not checked"
  fi
  if command -v "$REDIS_CHECK_RDB" >/dev/null 2>&1; then
    if ! _check=$("$REDIS_CHECK_RDB" "$file" 2>&1); then
      printf '%s\n' "$_check" | tail -n 5 >&2
      die "$REDIS_CHECK_RDB rejects $file"
    fi
  fi

  # Nothing of the old data may stay where Redis looks: the AOF directory, the RDB, an old AOF.
  _old=''
  for _f in appendonlydir dump.rdb appendonly.aof; do
    [ -e "$REDIS_DATA_DIR/$_f" ] && _old="$_old $_f"
  done
  if [ -n "$_old" ]; then
    if [ "$RESTORE_OLD_DATA" = delete ]; then
      log "deleting the old data:$_old"
      for _f in $_old; do rm -rf "${REDIS_DATA_DIR:?}/$_f"; done
    else
      _aside=$REDIS_DATA_DIR/pre-restore-$(date -u '+%Y%m%dT%H%M%SZ')
      mkdir "$_aside"
      for _f in $_old; do mv "$REDIS_DATA_DIR/$_f" "$_aside/"; done
      log "moved the old data (${_old# }) to $_aside; delete it once the restore is verified"
    fi
  fi
  cp "$file" "$REDIS_DATA_DIR/.restore.rdb.tmp"
  mv "$REDIS_DATA_DIR/.restore.rdb.tmp" "$REDIS_DATA_DIR/dump.rdb"

  mkdir -p "$RESTORE_RUN_DIR"
  chmod 700 "$RESTORE_RUN_DIR"
  trap 'if [ -n "$SERVER_PID" ]; then kill -9 "$SERVER_PID" 2>/dev/null || true; fi; rm -rf "$RESTORE_RUN_DIR"' EXIT
  start_temp no
  keys=$(node_keys -)
  clock=$(node_clock -)
  if [ -z "$keys" ] || [ -z "$clock" ]; then die "the temporary redis-server does not answer"; fi
  log "loaded $file: $keys keys ($(redis_cli - INFO keyspace | tr -d '\r' | grep '^db' | tr '\n' ' '))"
  new_clock=$RESTORE_CLOCK
  [ "$new_clock" -gt "$clock" ] || new_clock=$((clock + 1))
  redis_cli - -n "$REDIS_CLOCK_DB" SET "$CLOCK_KEY" "$new_clock" >/dev/null
  log "group clock $clock -> $new_clock"

  _before=$(info_field "$(redis_cli - INFO persistence)" aof_rewrites)
  redis_cli - CONFIG SET appendonly yes >/dev/null
  _since=$(date +%s)
  while :; do
    _pi=$(redis_cli - INFO persistence)
    if [ "$(info_field "$_pi" aof_rewrites)" -gt "$_before" ] && [ "$(info_field "$_pi" aof_rewrite_in_progress)" = 0 ] \
      && [ "$(info_field "$_pi" aof_rewrite_scheduled)" = 0 ]; then
      break
    fi
    [ $(($(date +%s) - _since)) -lt "$RESTORE_LOAD_TIMEOUT" ] || die "the AOF rewrite did not finish in ${RESTORE_LOAD_TIMEOUT}s"
    nap
  done
  [ "$(info_field "$_pi" aof_last_bgrewrite_status)" = ok ] || die "the AOF rewrite failed (see $RESTORE_RUN_DIR/redis.log)"
  # SAVE: dump.rdb then holds the same data as the AOF (with the raised clock).
  stop_temp SAVE
  ls "$REDIS_DATA_DIR"/appendonlydir/*.manifest >/dev/null 2>&1 || die "no AOF manifest in $REDIS_DATA_DIR/appendonlydir"

  if [ "$RESTORE_VERIFY_AOF" = yes ]; then
    start_temp yes
    _k=$(node_keys -)
    _c=$(node_clock -)
    stop_temp NOSAVE
    if [ "$_k" != "$keys" ] || [ "$_c" != "$new_clock" ]; then
      die "the new AOF loads $_k keys and clock $_c, not $keys keys and clock $new_clock"
    fi
    log "the new AOF loads the same $keys keys and clock $new_clock"
  fi
  trap - EXIT
  rm -rf "$RESTORE_RUN_DIR"
  log "prepared $REDIS_DATA_DIR in $(($(date +%s) - t0))s; start the group, then: $0 verify $keys"
  printf '%s\n' "$keys"
}

# --------------------------------------------------------------------------------- verify
verify() {
  want=$1
  case "$want" in '' | *[!0-9]*) usage ;; esac
  lib_init
  NODE_INDEX=-
  RESTORE_VERIFY_TIMEOUT=${RESTORE_VERIFY_TIMEOUT:-300}
  _n=0
  for _s in $SENTINEL_NODES; do _n=$((_n + 1)); done
  t0=$(date +%s)
  _wrong_since=''
  while :; do
    _now=$(date +%s)
    _state=''
    _m=$(sentinels_master $((_n / 2 + 1)))
    if [ -z "$_m" ]; then
      _state="no majority of the $_n sentinels names a master yet"
    else
      _mk=$(node_keys "$_m")
      if [ -z "$_mk" ]; then
        _state="master $_m does not answer or is loading"
      elif [ "$_mk" != "$want" ]; then
        _state="master $_m holds $_mk keys, not $want"
        [ -n "$_wrong_since" ] || _wrong_since=$_now
        # A loaded master with the wrong data does not fix itself: give up after 15 s.
        if [ $((_now - _wrong_since)) -ge 15 ]; then
          die "$_state: the restored data did not win (a node kept its old data while sentinels that knew the old master still ran?)"
        fi
      else
        _wrong_since=''
        for _r in $REDIS_NODES; do
          same_node "$_r" "$_m" && continue
          if ! replica_link_up "$_r"; then
            _state="$_state${_state:+; }$_r does not replicate yet"
          elif [ "$(node_keys "$_r")" != "$want" ]; then
            _state="$_state${_state:+; }$_r holds $(node_keys "$_r") keys"
          fi
        done
      fi
    fi
    if [ -z "$_state" ]; then
      log "restored: master $_m and every replica hold $want keys ($((_now - t0))s)"
      return 0
    fi
    [ $((_now - t0)) -lt "$RESTORE_VERIFY_TIMEOUT" ] || die "not restored after ${RESTORE_VERIFY_TIMEOUT}s: $_state"
    sleep 1
  done
}

case "${1:-}" in
  prepare) [ $# -eq 2 ] || usage; prepare "$2" ;;
  verify) [ $# -eq 2 ] || usage; verify "$2" ;;
  *) usage ;;
esac
