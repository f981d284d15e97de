#!/bin/sh
# Copies the backups of BACKUP_DIR (backup-redis.sh's <prefix>-<time>.rdb and .sha256 files) to
# S3-compatible storage with rclone, then checks that every local backup is there with the same
# checksum. Files already uploaded are skipped, so a run after a failed upload catches up. Runs
# in the chart's backup CronJob after backup-redis.sh (in the rclone image), by hand and in
# scripts/test-backup-restore.sh.
#
#   BACKUP_DIR                  the local backups                                 default: /backup
#   BACKUP_PREFIX               their file name prefix                            default: redis
#   BACKUP_S3_REMOTE            rclone destination, e.g. ":s3:my-bucket/tally/redis"   required
#   BACKUP_S3_ACCESS_KEY_ID_FILE, BACKUP_S3_SECRET_ACCESS_KEY_FILE   files holding the keys; unset:
#                               rclone's env_auth (instance role, IRSA, AWS_* variables)
#   BACKUP_S3_KEEP_DAYS         delete remote backups older than this (0: never; a bucket
#                               lifecycle rule is the usual way)                  default: 0
#   BACKUP_UPLOAD_TIMEOUT       seconds allowed for the whole upload              default: 3600
#   RCLONE                      the rclone binary                                 default: rclone
#   RCLONE_S3_PROVIDER, RCLONE_S3_ENDPOINT, RCLONE_S3_REGION, ...: rclone reads these itself.
# The keys reach rclone through its environment (RCLONE_S3_ACCESS_KEY_ID, ...), never its
# command line.
set -eu
SCRIPT_NAME=upload-backup
FILES_DIR=${FILES_DIR:-$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)}
# shellcheck source-path=SCRIPTDIR source=redis-lib.sh
. "$FILES_DIR/redis-lib.sh"

BACKUP_DIR=${BACKUP_DIR:-/backup}
BACKUP_PREFIX=${BACKUP_PREFIX:-redis}
BACKUP_S3_REMOTE=${BACKUP_S3_REMOTE:-}
BACKUP_S3_KEEP_DAYS=${BACKUP_S3_KEEP_DAYS:-0}
BACKUP_UPLOAD_TIMEOUT=${BACKUP_UPLOAD_TIMEOUT:-3600}
RCLONE=${RCLONE:-rclone}

[ -n "$BACKUP_S3_REMOTE" ] || die "BACKUP_S3_REMOTE is not set"
case "$BACKUP_PREFIX" in
  '' | *[!A-Za-z0-9._-]*) die "BACKUP_PREFIX=$BACKUP_PREFIX: use letters, digits, '.', '_' and '-' only" ;;
esac
case "$BACKUP_S3_KEEP_DAYS" in '' | *[!0-9]*) die "BACKUP_S3_KEEP_DAYS=$BACKUP_S3_KEEP_DAYS is not a whole number" ;; esac
[ -d "$BACKUP_DIR" ] || die "BACKUP_DIR=$BACKUP_DIR is not a directory"

if [ -n "${BACKUP_S3_ACCESS_KEY_ID_FILE:-}" ]; then
  RCLONE_S3_ACCESS_KEY_ID=$(read_secret "$BACKUP_S3_ACCESS_KEY_ID_FILE")
  RCLONE_S3_SECRET_ACCESS_KEY=$(read_secret "${BACKUP_S3_SECRET_ACCESS_KEY_FILE:-}")
  if [ -z "$RCLONE_S3_ACCESS_KEY_ID" ] || [ -z "$RCLONE_S3_SECRET_ACCESS_KEY" ]; then
    die "the S3 key files ($BACKUP_S3_ACCESS_KEY_ID_FILE, ${BACKUP_S3_SECRET_ACCESS_KEY_FILE:-unset}) are missing or empty"
  fi
  export RCLONE_S3_ACCESS_KEY_ID RCLONE_S3_SECRET_ACCESS_KEY
else
  export RCLONE_S3_ENV_AUTH=true
fi
# The bucket exists: never try to create it (that needs a permission an upload should not have).
export RCLONE_S3_NO_CHECK_BUCKET=true
# No configuration file: the remote is given on the command line, its settings by environment.
export RCLONE_CONFIG=/dev/null

# rc ARGS...: rclone on the backup files only, bounded in time (the whole call and each
# connection); the patterns are quoted here, never expanded by the shell
rc() {
  if command -v timeout >/dev/null 2>&1; then set -- timeout "$BACKUP_UPLOAD_TIMEOUT" "$RCLONE" "$@"; else set -- "$RCLONE" "$@"; fi
  "$@" --include "$BACKUP_PREFIX-*.rdb" --include "$BACKUP_PREFIX-*.rdb.sha256" --contimeout 30s --timeout 5m
}

t0=$(date +%s)
n=$(find "$BACKUP_DIR" -maxdepth 1 -name "$BACKUP_PREFIX-*.rdb" | wc -l | tr -d ' ')
[ "$n" -gt 0 ] || die "no backup in $BACKUP_DIR to upload"
# --immutable: a backup never changes once written; a remote file of the same name that differs
# is an error, not something to overwrite. The pipe hides rclone's status: `check` decides.
rc copy "$BACKUP_DIR" "$BACKUP_S3_REMOTE" --immutable --retries 3 --stats 0 -v 2>&1 \
  | while IFS= read -r _l; do log "rclone: $_l"; done
if ! out=$(rc check "$BACKUP_DIR" "$BACKUP_S3_REMOTE" --one-way 2>&1); then
  printf '%s\n' "$out" | tail -n 20 | while IFS= read -r _l; do log "rclone check: $_l"; done
  die "the remote $BACKUP_S3_REMOTE lacks some of the $n local backups, or holds different bytes"
fi
log "all $n local backups are in $BACKUP_S3_REMOTE with the same checksums ($(($(date +%s) - t0))s)"

if [ "$BACKUP_S3_KEEP_DAYS" -gt 0 ]; then
  rc delete "$BACKUP_S3_REMOTE" --min-age "${BACKUP_S3_KEEP_DAYS}d" -v 2>&1 | while IFS= read -r _l; do log "rclone: $_l"; done
fi
