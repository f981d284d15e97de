#!/bin/sh
# Takes an RDB snapshot of tally's Redis + Sentinel group into BACKUP_DIR, by the replication
# protocol (`redis-cli --rdb`: REPLCONF rdb-only + SYNC), from a replica in sync with the master the
# sentinels name; from the master only when no replica is in sync (BACKUP_FALLBACK_TO_MASTER).
# The file is verified (size, magic, redis-check-rdb), written under a temporary name, fsynced and
# renamed to <prefix>-<UTC time>.rdb beside its <name>.sha256; then retention deletes the oldest.
# Prints the new file's path on stdout; logs on stderr. Runs in the chart's CronJob, by hand and in
# scripts/test-backup-restore.sh. docs/backup.md has the whole procedure.
#
# The nodes are named as for the Redis pods (redis-lib.sh): POD_NAME of any Redis pod (the chart
# gives <statefulset>-0) with REDIS_NODE_COUNT and HEADLESS_DOMAIN, or REDIS_NODES / SENTINEL_NODES.
#   BACKUP_DIR                  where the backups are kept                        default: /backup
#   BACKUP_PREFIX               file name prefix ([A-Za-z0-9._-])                 default: redis
#   BACKUP_KEEP_COUNT           keep this many newest backups (0: no limit)       default: 7
#   BACKUP_KEEP_DAYS            delete backups older than this (0: no limit); the newest is kept
#                               whatever its age                                  default: 0
#   REDIS_AUTH_DIR              the password files (auth-lib.sh); the backup reads only its
#                               user's, <user>-password, at every call  default: /etc/redis-auth
#   BACKUP_USER                 the ACL user it connects as, on the Redis nodes and on the
#                               sentinels (auth-lib.sh's `backup` has what it needs and no
#                               more: docs/security.md)                     default: backup
#   BACKUP_MAX_LAG_SECONDS      a replica is in sync when its link is up, no sync runs and it
#                               heard from the master within this long            default: 10
#   BACKUP_FALLBACK_TO_MASTER   yes: with no replica in sync, take it from the master; no: fail
#                                                                                 default: yes
#   BACKUP_TRANSFER_TIMEOUT     seconds allowed for the transfer                  default: 3600
#   REDIS_CHECK_RDB             the checker     default: redis-check-rdb, else valkey-check-rdb
set -eu
SCRIPT_NAME=backup-redis
FILES_DIR=${FILES_DIR:-$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)}
# shellcheck source-path=SCRIPTDIR source=redis-lib.sh
. "$FILES_DIR/redis-lib.sh"

# lib_init names "this node"; a backup is none: node 0 stands in, only for lib_init's checks.
NODE_INDEX=${NODE_INDEX:-0}
lib_init
NODE_INDEX=-
BACKUP_USER=${BACKUP_USER:-backup}
case "$BACKUP_USER" in '' | *[!A-Za-z0-9_-]*) die "BACKUP_USER=$BACKUP_USER: letters, digits, '_' and '-' only" ;; esac
[ -n "$(auth_password "$BACKUP_USER")" ] \
  || die "no password for user $BACKUP_USER: $(auth_dir)/$BACKUP_USER-password is missing or empty (the Secret lacks key $BACKUP_USER-password)"

BACKUP_DIR=${BACKUP_DIR:-/backup}
BACKUP_PREFIX=${BACKUP_PREFIX:-redis}
BACKUP_KEEP_COUNT=${BACKUP_KEEP_COUNT:-7}
BACKUP_KEEP_DAYS=${BACKUP_KEEP_DAYS:-0}
BACKUP_MAX_LAG_SECONDS=${BACKUP_MAX_LAG_SECONDS:-10}
BACKUP_FALLBACK_TO_MASTER=${BACKUP_FALLBACK_TO_MASTER:-yes}
BACKUP_TRANSFER_TIMEOUT=${BACKUP_TRANSFER_TIMEOUT:-3600}
REDIS_CHECK_RDB=${REDIS_CHECK_RDB:-$(first_command redis-check-rdb valkey-check-rdb)}

case "$BACKUP_PREFIX" in
  '' | *[!A-Za-z0-9._-]*) die "BACKUP_PREFIX=$BACKUP_PREFIX: use letters, digits, '.', '_' and '-' only" ;;
esac
for _n in "$BACKUP_KEEP_COUNT" "$BACKUP_KEEP_DAYS" "$BACKUP_MAX_LAG_SECONDS" "$BACKUP_TRANSFER_TIMEOUT"; do
  case "$_n" in '' | *[!0-9]*) die "not a whole number: '$_n' (BACKUP_KEEP_*, BACKUP_*_SECONDS, BACKUP_TRANSFER_TIMEOUT)" ;; esac
done
if [ ! -d "$BACKUP_DIR" ] || [ ! -w "$BACKUP_DIR" ]; then die "BACKUP_DIR=$BACKUP_DIR is not a writable directory"; fi

# The seam of redis-lib.sh: every lib function below reaches the nodes and the sentinels as
# BACKUP_USER (not the scripts' operator), its password read at each call (a rotation applies).
redis_cli() { cli "$BACKUP_USER" "$(auth_password "$BACKUP_USER")" "$@"; }
sentinel_cli() { cli "$BACKUP_USER" "$(auth_password "$BACKUP_USER")" "$@"; }

# pick_source: host:port of the node to copy: the in-sync replica of the master that is furthest
# along (the largest replication offset); the master itself if none is and the fallback allows.
# The replica is preferred because the copy forks the source (its memory's copy-on-write) and
# adds a replica-like client to it: on the master, a sentinel can list that client as a replica
# that it then reports down ("+slave <ip>:0") until the sentinel restarts.
pick_source() {
  _master=$(sentinels_master 1)
  if [ -z "$_master" ]; then
    _master=$(redis_master)
    [ -n "$_master" ] || die "no master: no sentinel of $SENTINEL_NODES names one and no Redis node of $REDIS_NODES is master"
    log "no sentinel names a master; Redis node $_master says it is master"
  fi
  _best=''
  _best_off=-1
  for _r in $REDIS_NODES; do
    same_node "$_r" "$_master" && continue
    if ! _ri=$(redis_cli "$_r" INFO replication 2>/dev/null) || [ -z "$(info_field "$_ri" role)" ]; then
      log "replica $_r: does not answer INFO"
      continue
    fi
    _why=''
    if [ "$(info_field "$_ri" role)" != slave ]; then
      _why="role $(info_field "$_ri" role)"
    elif ! same_node "$(info_field "$_ri" master_host):$(info_field "$_ri" master_port)" "$_master"; then
      _why="replicates $(info_field "$_ri" master_host):$(info_field "$_ri" master_port), not $_master"
    elif [ "$(info_field "$_ri" master_link_status)" != up ]; then
      _why='link to the master down'
    elif [ "$(info_field "$_ri" master_sync_in_progress)" != 0 ]; then
      _why='a sync is in progress'
    else
      _io=$(info_field "$_ri" master_last_io_seconds_ago)
      case "$_io" in '' | *[!0-9]*) _io=999999 ;; esac
      if [ "$_io" -gt "$BACKUP_MAX_LAG_SECONDS" ]; then
        _why="last heard from the master ${_io}s ago"
      fi
    fi
    if [ -n "$_why" ]; then
      log "replica $_r: not in sync ($_why)"
      continue
    fi
    _off=$(info_field "$_ri" slave_repl_offset)
    case "$_off" in '' | *[!0-9]*) _off=0 ;; esac
    if [ "$_off" -gt "$_best_off" ]; then
      _best=$_r
      _best_off=$_off
    fi
  done
  if [ -n "$_best" ]; then
    log "source: replica $_best of master $_master (replication offset $_best_off)"
    printf '%s\n' "$_best"
  elif [ "$BACKUP_FALLBACK_TO_MASTER" = yes ]; then
    log "WARNING: no replica of $_master is in sync: taking the backup from the master itself"
    printf '%s\n' "$_master"
  else
    die "no replica of $_master is in sync and BACKUP_FALLBACK_TO_MASTER=$BACKUP_FALLBACK_TO_MASTER"
  fi
}

# sync_path PATH...: fsync PATH (a file or a directory); the whole file system where `sync`
# takes no operands (old busybox)
sync_path() {
  sync "$@" 2>/dev/null || sync
}

# backups: the names of complete backups in BACKUP_DIR, oldest first (the time sorts as text)
backups() {
  for _f in "$BACKUP_DIR/$BACKUP_PREFIX"-*.rdb; do
    [ -f "$_f" ] || continue
    _b=${_f##*/}
    case "${_b#"$BACKUP_PREFIX"-}" in
      [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z.rdb) printf '%s\n' "$_b" ;;
    esac
  done | sort
}

remove_backup() {
  log "retention: deleting $1 ($2)"
  rm -f "$BACKUP_DIR/$1" "$BACKUP_DIR/$1.sha256"
}

# retention: at most BACKUP_KEEP_COUNT backups, none older than BACKUP_KEEP_DAYS, never the newest
retention() {
  if [ "$BACKUP_KEEP_COUNT" -gt 0 ]; then
    _excess=$(($(backups | wc -l) - BACKUP_KEEP_COUNT))
    if [ "$_excess" -gt 0 ]; then
      for _b in $(backups | head -n "$_excess"); do remove_backup "$_b" "more than $BACKUP_KEEP_COUNT backups"; done
    fi
  fi
  if [ "$BACKUP_KEEP_DAYS" -gt 0 ]; then
    _cutoff=$(date -u -d "@$(($(date +%s) - BACKUP_KEEP_DAYS * 86400))" '+%Y%m%dT%H%M%SZ')
    for _b in $(backups | sed '$d' | awk -v c="$BACKUP_PREFIX-$_cutoff.rdb" '$0 < c'); do
      remove_backup "$_b" "older than $BACKUP_KEEP_DAYS days"
    done
  fi
}

t0=$(date +%s)
src=$(pick_source)
name=$BACKUP_PREFIX-$(date -u '+%Y%m%dT%H%M%SZ').rdb
final=$BACKUP_DIR/$name
[ ! -e "$final" ] || die "$final exists already"
tmp=$BACKUP_DIR/.$name.tmp
sumtmp=$BACKUP_DIR/.$name.sha256.tmp
# Leftovers of a run killed mid-transfer: older than any run still allowed to go on.
find "$BACKUP_DIR" -maxdepth 1 -name ".$BACKUP_PREFIX-*.tmp" -mmin "+$((BACKUP_TRANSFER_TIMEOUT / 60 + 1))" \
  -exec rm -f {} + 2>/dev/null || true
trap 'rm -f "$tmp" "$sumtmp"' EXIT
rm -f "$tmp" "$sumtmp" # redis-cli opens without O_TRUNC: never write over an older file

# redis-cli reports on stderr (no secret: the password goes by environment) and fsyncs the file.
if ! out=$(CLI_TIMEOUT=$BACKUP_TRANSFER_TIMEOUT redis_cli "$src" --rdb "$tmp" 2>&1); then
  printf '%s\n' "$out" | while IFS= read -r _l; do log "redis-cli: $_l"; done
  die "transfer from $src failed (or exceeded ${BACKUP_TRANSFER_TIMEOUT}s)"
fi
t1=$(date +%s)

size=$(wc -c <"$tmp" | tr -d ' ')
[ "$size" -gt 0 ] || die "transfer from $src gave an empty file"
case "$(head -c 6 "$tmp")" in
  REDIS* | VALKEY) ;;
  *) die "transfer from $src gave a file that is not an RDB (no REDIS/VALKEY header)" ;;
esac
keys=unknown
if command -v "$REDIS_CHECK_RDB" >/dev/null 2>&1; then
  if ! check=$("$REDIS_CHECK_RDB" "$tmp" 2>&1); then
    printf '%s\n' "$check" | tail -n 5 | while IFS= read -r _l; do log "$REDIS_CHECK_RDB: $_l"; done
    die "$REDIS_CHECK_RDB rejects the file from $src"
  fi
  keys=$(printf '%s\n' "$check" | sed -n 's/^\[info\] \([0-9]*\) keys read$/\1/p' | head -n 1)
else
  log "WARNING: $REDIS_CHECK_RDB not found: checked the size and header only"
fi

printf '%s  %s\n' "$(sha256sum "$tmp" | cut -d' ' -f1)" "$name" >"$sumtmp"
sync_path "$sumtmp"
mv "$tmp" "$final"
mv "$sumtmp" "$final.sha256"
sync_path "$BACKUP_DIR"
trap - EXIT
log "wrote $final: $size bytes, $keys keys (all databases), from $src in $((t1 - t0))s"

retention
log "done in $(($(date +%s) - t0))s; $(backups | wc -l | tr -d ' ') backups in $BACKUP_DIR"
printf '%s\n' "$final"
