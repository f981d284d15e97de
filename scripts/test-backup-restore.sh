#!/usr/bin/env bash
# The backup and restore drill, against real processes: a 3-node Redis + 3-Sentinel group on
# 127.0.0.1 started by the chart's scripts (deploy/helm/tally/files/), as scripts/test-redis-scripts.sh
# starts it, with the chart's ACL users (files/auth-lib.sh; default off). It loads counters
# (count:<id>, INCRBY) and stream entries (tally:fib:jobs), takes a backup with
# files/backup-redis.sh as ACL user backup, given its own password file only (as the CronJob's
# pod), uploads it to an S3 server with files/upload-backup.sh and fetches it back (when rclone and
# moto_server are installed), rotates user backup's password in three steps with a backup after
# each, loads more, kills every node and deletes every data directory, restores with
# files/restore-redis.sh (verify as user operator, given its password file only), and asserts that
# the key count, the sum of all counters and the stream's length equal the backup's exactly, not
# the later load's. Then a second restore onto node 0 alone, with node 1 keeping newer data and
# node 2 wiped: the restored data must win. Also: the fallback to the master when no replica is in
# sync, a backup with no sentinel answering, retention by count and age, and that no process
# refused the backup, the restore or the group anything (ACL LOG).
# Prints the measured backup and restore times and "N passed, N failed".
#
# Needs redis-server, redis-sentinel, redis-cli and redis-check-rdb (Debian: redis-server
# redis-sentinel redis-tools). The S3 step needs rclone (Debian's package) and an S3 server,
# moto_server (PyPI's moto[server], in the git-ignored .tools/s3-venv): both are installed when
# missing; if that fails the step is skipped, and says so.
#   TEST_KEYS   counters loaded before the backup (default 3000)
# shellcheck disable=SC2016 # conditions are passed to wait_for as eval strings on purpose
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TEST_NAME=tally-backup-test
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
# shellcheck source=scripts/redis-test-lib.sh
. "$ROOT/scripts/redis-test-lib.sh"
command -v redis-check-rdb >/dev/null || { echo "SKIP: redis-check-rdb not installed"; exit 0; }
N_KEYS=${TEST_KEYS:-3000}
echo "backup/restore drill: $FILES with $SH on 127.0.0.1 ports $BASE-$((BASE + 12)), temp dir $T"

mkdir -p "$T/backups" "$T/scratch" "$T/no-sentinel" "$T/rotation" "$T/backup-auth" "$T/operator-auth"
# Each script gets its own user's password file only, as in the chart: a link into AUTH, so that
# a rotation (auth_update) shows through as a Secret's update does.
ln -s "$AUTH/backup-password" "$T/backup-auth/backup-password"
ln -s "$AUTH/operator-password" "$T/operator-auth/operator-password"
# backup DIR [VAR=VALUE...]: backup-redis.sh with node 0's environment (the chart's CronJob gives
# the same names) as ACL user backup; prints the new file's path; its log goes to backup.log
backup() {
  local dir=$1 a
  shift
  (
    AUTH=$T/backup-auth
    export BACKUP_DIR="$dir"
    for a in "$@"; do export "${a?}"; done
    run_script 0 backup-redis.sh
  ) 2>>"$T/backup.log"
}
# restore_verify KEYS: restore-redis.sh verify with node 0's environment, as user operator
restore_verify() {
  (
    AUTH=$T/operator-auth
    RESTORE_VERIFY_TIMEOUT=90 run_script 0 restore-redis.sh verify "$1"
  ) 2>>"$T/restore.log"
}
# no_denials WHEN: checks that no Redis or Sentinel process refused anything (ACL LOG)
no_denials() {
  local i p
  for i in 0 1 2; do
    for p in "$(rport "$i")" "$(sport "$i")"; do
      check "$1: nothing refused on port $p (ACL LOG: $(acl_denials "$p" | sort -u | paste -sd';'))" \
        eval '[ -z "$(acl_denials "$p")" ]'
    done
  done
}
# as_admin_cli PORT ARGS...: redis-cli as user admin, stdin passed on (the drill's own load and
# sums), bounded by 300 s
as_admin_cli() { local p=$1; shift; REDISCLI_AUTH=$(pw admin) timeout 300 redis-cli --user admin -p "$p" "$@"; }
# restore_prepare I FILE: restore-redis.sh prepare on node I's data directory; prints the key count
restore_prepare() {
  REDIS_DATA_DIR="$T/n$1/data" TMPDIR="$T/n$1" "$SH" "$FILES/restore-redis.sh" prepare "$2" 2>>"$T/restore.log"
}
master_port() { rport "$(master_node)"; }
# The sums the drill compares, on node I: keys outside the clock's database, the sum of every
# counter (SCAN and MGET: no command blocks the node, whatever TEST_KEYS is), the stream's length.
state_of() {
  local p sum
  p=$(rport "$1")
  sum=$(as_admin_cli "$p" --scan --pattern 'count:*' \
    | xargs -r -n 500 echo MGET | as_admin_cli "$p" | awk '{ s += $1 } END { print s + 0 }')
  printf 'keys=%s sum=%s xlen=%s' "$(node_keys "$(rnode "$1")")" "$sum" "$(rcli "$p" XLEN tally:fib:jobs)"
}
# load FROM TO STREAM: INCRBY count:<id> for ids FROM..TO (amounts 1..97), STREAM entries into
# tally:fib:jobs, on the master; then WAIT for both replicas. Fails on any error reply.
load() {
  local p out
  p=$(master_port)
  out=$( {
    for ((i = $1; i <= $2; i++)); do
      printf 'INCRBY count:%d %d\r\n' "$i" $(((i * 7919) % 97 + 1))
      if ((i % 3 == 0)); then printf 'INCR count:%d\r\n' "$i"; fi
    done
    for ((i = 1; i <= $3; i++)); do printf 'XADD tally:fib:jobs * n %d\r\n' "$i"; done
  } | as_admin_cli "$p" --pipe 2>&1 | tail -n 1)
  case "$out" in
    "errors: 0, replies: "*) ;;
    *) bad "load $1..$2: $out"; return 1 ;;
  esac
  [ "$(rcli "$p" WAIT 2 5000)" = 2 ] || { bad "load $1..$2: not on both replicas within 5 s"; return 1; }
}
kill_all() {
  local i
  for i in 0 1 2; do
    kill -9 "${REDIS_PID[$i]}" "${SENTINEL_PID[$i]}" 2>/dev/null || true
    wait "${REDIS_PID[$i]}" "${SENTINEL_PID[$i]}" 2>/dev/null || true
  done
}
now_ms() { date +%s%3N; }
secs_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

# 1. The group, as in test-redis-scripts.sh, with the chart's users: backup among them.
for i in 0 1 2; do start_redis "$i"; start_sentinel "$i"; done
wait_for 40 "the group is up: all sentinels name node 0" eval '[ "$(master_node)" = 0 ]'
wait_for 30 "both replicas in sync" eval 'replica_of 1 0 && replica_of 2 0'
acli "$(rport 0)" SET count:1 1 >/dev/null
# as_backup PORT ARGS...: as user backup, the reply (or the error) on stdout
as_backup() { local p=$1; shift; cli backup "$(pw backup)" "127.0.0.1:$p" "$@" 2>&1; }
for c in "GET count:1" "SET count:1 2" "FLUSHALL" "CONFIG GET masterauth" "KEYS *" "ACL WHOAMI" "CLIENT LIST"; do
  # shellcheck disable=SC2034 # argv is used in the eval string
  read -ra argv <<<"$c"
  check "user backup may not $c" eval 'as_backup "$(rport 1)" "${argv[@]}" | grep >/dev/null NOPERM'
done
for c in "SENTINEL master mymaster" "SENTINEL FAILOVER mymaster" "INFO"; do
  # shellcheck disable=SC2034 # argv is used in the eval string
  read -ra argv <<<"$c"
  check "user backup may not $c on a sentinel" eval 'as_backup "$(sport 1)" "${argv[@]}" | grep >/dev/null NOPERM'
done
check "user default is off (no command without a user)" eval 'redis-cli -p "$(rport 0)" PING 2>&1 | grep >/dev/null NOAUTH'
acli "$(rport 0)" DEL count:1 >/dev/null
acli "$(rport 0)" WAIT 2 5000 >/dev/null
acl_log_reset # the refusals above are logged; from here on nothing may be

# 2. Load, then the backup.
t=$(now_ms)
load 1 "$N_KEYS" 300 && ok "loaded $N_KEYS counters and 300 stream entries in $(secs_since "$t")s"
WANT=$(state_of 0)
echo "     state at the backup: $WANT"
: >"$T/backup.log"
t=$(now_ms)
if FILE=$(backup "$T/backups"); then
  BACKUP_SECS=$(secs_since "$t")
  ok "backup-redis.sh wrote ${FILE#"$T"/} ($(wc -c <"$FILE") bytes) in ${BACKUP_SECS}s"
else
  bad "backup-redis.sh failed"
  cat "$T/backup.log"
  exit 1
fi
check "the backup came from a replica" grep -q 'source: replica 127.0.0.1:' "$T/backup.log"
check "its checksum file matches" eval '(cd "$T/backups" && sha256sum -c --quiet "${FILE##*/}.sha256")'
check "redis-check-rdb accepts it" eval 'redis-check-rdb "$FILE" >/dev/null 2>&1'
check "no temporary file is left" eval '[ -z "$(find "$T/backups" -name ".*" -type f)" ]'
check "the group still has exactly 2 replicas (sentinel 0)" knows_replicas 0
grep -v 'redis-cli:' "$T/backup.log" | sed 's/^/     | /'

# 3. The upload to S3-compatible storage and back.
S3_DONE=0
MOTO=${TALLY_TOOLS_DIR:-$ROOT/.tools}/s3-venv/bin/moto_server
MOTO_PKG='moto[server]==5.1.*'
command -v rclone >/dev/null 2>&1 || need_packages rclone:rclone >/dev/null 2>&1 || true
# A cached venv that no longer runs (moved, or its Python gone) is made again.
if ! "$MOTO" --help >/dev/null 2>&1; then
  rm -rf "${MOTO%/bin/*}"
  { python3 -m venv "${MOTO%/bin/*}" && "${MOTO%/*}/pip" install --quiet --disable-pip-version-check "$MOTO_PKG"; } \
    >"$T/moto-install.log" 2>&1 || tail -n 5 "$T/moto-install.log"
fi
if command -v rclone >/dev/null && [ -x "$MOTO" ]; then
  S3_PORT=$((BASE + 20))
  "$MOTO" -H 127.0.0.1 -p "$S3_PORT" >"$T/moto.log" 2>&1 &
  PIDS+=("$!")
  printf 'test-key-id' >"$T/s3-key-id"
  printf 'test-secret "key"' >"$T/s3-secret"
  # rclone 1.60 refuses to start with AWS_CA_BUNDLE set ("unsupported transport"), as it is on
  # some machines; the test's S3 is plain HTTP on 127.0.0.1 and needs no CA.
  unset AWS_CA_BUNDLE
  export RCLONE_S3_PROVIDER=Other RCLONE_S3_ENDPOINT="http://127.0.0.1:$S3_PORT" RCLONE_S3_REGION=us-east-1
  s3() { RCLONE_CONFIG=/dev/null RCLONE_S3_ACCESS_KEY_ID=test-key-id RCLONE_S3_SECRET_ACCESS_KEY='test-secret "key"' rclone "$@"; }
  wait_for 20 "moto_server answers on 127.0.0.1:$S3_PORT" eval 's3 mkdir :s3:tally-backups >/dev/null 2>&1'
  upload() {
    BACKUP_DIR="$T/backups" BACKUP_S3_REMOTE=:s3:tally-backups/prod/redis \
      BACKUP_S3_ACCESS_KEY_ID_FILE="$T/s3-key-id" BACKUP_S3_SECRET_ACCESS_KEY_FILE="$T/s3-secret" \
      "$SH" "$FILES/upload-backup.sh" 2>>"$T/upload.log"
  }
  t=$(now_ms)
  if upload; then ok "upload-backup.sh uploaded and checked the backup in $(secs_since "$t")s"; else bad "upload-backup.sh failed"; cat "$T/upload.log"; fi
  check "the bucket lists the backup and its checksum" eval \
    '[ "$(s3 lsf :s3:tally-backups/prod/redis | sort | tr "\n" " ")" = "${FILE##*/} ${FILE##*/}.sha256 " ]'
  check "a second upload copies nothing and passes its check" upload
  mkdir -p "$T/from-s3"
  s3 copy :s3:tally-backups/prod/redis "$T/from-s3" >/dev/null 2>&1 || true
  check "the copy fetched back from the bucket matches the checksum" eval \
    '(cd "$T/from-s3" && sha256sum -c --quiet "${FILE##*/}.sha256")'
  check "no S3 key in the upload log" eval '! grep -q "test-secret" "$T/upload.log"'
  if [ -s "$T/from-s3/${FILE##*/}" ]; then FILE=$T/from-s3/${FILE##*/}; S3_DONE=1; fi
else
  echo "SKIP the S3 upload: rclone or moto_server could not be installed"
fi

# 3b. User backup's password rotates as docs/security.md's runbook says (next, current + previous,
# current); each step is applied by every node and sentinel, then a backup is taken with the
# password file as it is then. Backup names are to the second: one second between two.
# shellcheck disable=SC2034 # used in the eval strings below
OLD_BACKUP=$(pw backup)
t=$(now_ms)
auth_update 'new_password backup >backup-password-next'
wait_for 20 "rotation 1/3: every node and sentinel accepts backup's next password too" applied_everywhere
sleep 1
check "a backup after rotation step 1 (the current password)" eval 'backup "$T/rotation" >/dev/null'
auth_update 'mv backup-password backup-password-previous; mv backup-password-next backup-password'
wait_for 20 "rotation 2/3: the new password current, the old one still accepted" applied_everywhere
sleep 1
check "a backup after rotation step 2 (the new password)" eval 'backup "$T/rotation" >/dev/null'
auth_update 'rm -f backup-password-previous'
wait_for 20 "rotation 3/3: the new password only" applied_everywhere
sleep 1
check "a backup after rotation step 3 (the new password only)" eval 'backup "$T/rotation" >/dev/null'
ok "user backup's password rotated with a backup after each step in $(secs_since "$t")s"
check "three backups were written during the rotation" eval '[ "$(ls "$T/rotation" | grep -c "\.rdb$")" = 3 ]'
no_denials "during the backups and the rotation"
check "backup's old password is refused by Redis" eval 'cli backup "$OLD_BACKUP" "$(rnode 1)" INFO 2>&1 | grep >/dev/null WRONGPASS'
check "backup's old password is refused by Sentinel" \
  eval 'cli backup "$OLD_BACKUP" "$(snode 1)" SENTINEL get-master-addr-by-name mymaster 2>&1 | grep >/dev/null WRONGPASS'
acl_log_reset # those two refusals are logged

# 4. No replica in sync: the backup comes from the master only when allowed, and says so.
kill -STOP "${REDIS_PID[1]}" "${REDIS_PID[2]}"
: >"$T/backup.log"
if backup "$T/scratch" BACKUP_FALLBACK_TO_MASTER=no >/dev/null; then
  bad "with no replica in sync and BACKUP_FALLBACK_TO_MASTER=no the backup should fail"
else
  ok "with no replica in sync and BACKUP_FALLBACK_TO_MASTER=no the backup fails"
fi
check "and its log says why" grep -q "no replica of 127.0.0.1:$BASE is in sync" "$T/backup.log"
if backup "$T/scratch" >/dev/null; then ok "with the fallback the backup is taken from the master"; else bad "fallback backup failed"; fi
check "and its log warns" grep -q 'WARNING: no replica of .* taking the backup from the master' "$T/backup.log"
kill -CONT "${REDIS_PID[1]}" "${REDIS_PID[2]}"
wait_for 30 "the replicas are back in sync" eval 'replica_of 1 0 && replica_of 2 0'

# 4b. No sentinel answers (as if the backup pod could not reach them): the backup finds the master
# among the Redis nodes (INFO replication and the group's clock, as user backup) and still copies
# from a replica.
: >"$T/backup.log"
if backup "$T/no-sentinel" SENTINEL_NODES="127.0.0.1:1 127.0.0.1:1 127.0.0.1:1" >/dev/null; then
  ok "with no sentinel answering the backup is taken"
else
  bad "with no sentinel answering the backup failed"
  cat "$T/backup.log"
fi
check "its log says the master came from the Redis nodes" grep -q "no sentinel names a master; Redis node 127.0.0.1:$BASE says it is master" "$T/backup.log"
check "and it copied from a replica" grep -q 'source: replica 127.0.0.1:' "$T/backup.log"

# 5. Retention: by count, and by age (the age from the name), never the newest.
for ts in 20200101T000000Z 20200102T000000Z 20990101T000000Z-bad; do
  : >"$T/scratch/redis-$ts.rdb"
done
sleep 1 # a backup's name is its second: two in one second are refused
backup "$T/scratch" BACKUP_KEEP_COUNT=0 BACKUP_KEEP_DAYS=30 >/dev/null
check "retention by age deletes the 2020 backups and keeps the rest" eval \
  '[ "$(ls "$T/scratch" | grep -c "^redis-2020")" = 0 ] && [ "$(ls "$T/scratch" | grep -c "\.rdb$")" = 3 ]'
check "a file not named like a backup is never touched" test -e "$T/scratch/redis-20990101T000000Z-bad.rdb"
sleep 1
# shellcheck disable=SC2034 # used in the eval string below
NEWEST=$(backup "$T/scratch" BACKUP_KEEP_COUNT=1)
check "retention by count keeps only the newest" eval \
  '[ "$(ls "$T/scratch" | grep -E "^redis-[0-9]{8}T[0-9]{6}Z\.rdb(\.sha256)?$" | tr "\n" " ")" = "${NEWEST##*/} ${NEWEST##*/}.sha256 " ]'

# 6. More load after the backup: the restore must not bring it back.
load $((N_KEYS / 2)) $((N_KEYS + 500)) 100 && ok "loaded more after the backup"
LATER=$(state_of 0)
echo "     state after the backup: $LATER"
check "the later load changed the state" [ "$LATER" != "$WANT" ]
no_denials "before the disaster (fallback, no sentinel, retention, load)"

# 7. Disaster: every node killed, every data directory deleted.
kill_all
for i in 0 1 2; do rm -rf "$T/n$i/data" "$T/n$i/redis-run" "$T/n$i/sentinel-run"; mkdir -p "$T/n$i/data"; done
ok "killed every redis and sentinel and deleted every data directory"

# 8. Restore: prepare every node's data directory from the backup, start the group, verify.
t=$(now_ms)
WANT_KEYS=${WANT#keys=}
WANT_KEYS=${WANT_KEYS%% *}
for i in 0 1 2; do
  t1=$(now_ms)
  k=$(restore_prepare "$i" "$FILE") || { bad "prepare node $i"; tail -n 20 "$T/restore.log"; exit 1; }
  check "node $i prepared from the ${S3_DONE/1/S3 copy of the }backup: $k keys ($(secs_since "$t1")s)" [ "$k" = "$WANT_KEYS" ]
done
PREPARE_SECS=$(secs_since "$t")
t2=$(now_ms)
for i in 0 1 2; do start_redis "$i"; start_sentinel "$i"; done
if restore_verify "$WANT_KEYS"; then
  ok "restore-redis.sh verify (as operator): the group runs with $WANT_KEYS keys on every node"
else
  bad "restore-redis.sh verify failed"
  tail -n 5 "$T/restore.log"
fi
START_SECS=$(secs_since "$t2")
RESTORE_SECS=$(secs_since "$t")
# verify asks a majority of the sentinels; the checks below want the master all three name.
wait_for 20 "every sentinel names the restored master" eval '[ -n "$(master_node)" ]'
M=$(master_node)
check "restored master (node $M): $(state_of "$M")" [ "$(state_of "$M")" = "$WANT" ]
for i in 0 1 2; do
  [ "$i" = "$M" ] || check "restored replica node $i has the same data" [ "$(state_of "$i")" = "$WANT" ]
done
check "a counter written only after the backup is absent" eval '[ -z "$(rcli "$(rport "$M")" GET "count:$((N_KEYS + 400))")" ]'
wait_for 15 "the restored group takes writes" eval '[ "$(rcli "$(rport "$(master_node)")" INCR count:new)" = 1 ]'
grep -E 'moved|loaded|clock|new AOF|prepared|restored' "$T/restore.log" | sed 's/^/     | /' | head -n 12

# 9. A second restore onto node 0 alone; node 1 keeps newer data (it was not wiped), node 2 is
# wiped. The restored clock beats node 1's: node 0 is elected and node 1 resyncs from it.
load 1 200 10 && ok "loaded more after the restore (node 1 will keep it)"
wait_for 20 "node 1 has it" eval '[ "$(rcli "$(rport 1)" XLEN tally:fib:jobs)" = "$(rcli "$(rport "$(master_node)")" XLEN tally:fib:jobs)" ]'
kill_all
rm -rf "$T/n2/data" "$T/n0/data"
mkdir -p "$T/n2/data" "$T/n0/data"
for i in 0 1 2; do
  rm -rf "$T/n$i/redis-run" "$T/n$i/sentinel-run"
  mv "$T/n$i/sentinel.log" "$T/n$i/sentinel-before.log" # the election below is judged on new lines only
done
t=$(now_ms)
k=$(restore_prepare 0 "$FILE") || { bad "prepare node 0"; exit 1; }
for i in 0 1 2; do start_redis "$i"; start_sentinel "$i"; done
if restore_verify "$k"; then
  ok "restore onto node 0 alone with node 1 holding newer data: verified in $(secs_since "$t")s"
else
  bad "restore onto node 0 alone: verify failed"
  tail -n 5 "$T/restore.log"
fi
check "node 0 was elected (its clock is the highest)" eval 'grep -q "election: .*127.0.0.1:$BASE has the newest data" "$T"/n*/sentinel.log'
for i in 0 1 2; do check "node $i holds the backup's data" [ "$(state_of "$i")" = "$WANT" ]; done
no_denials "after the restores"

echo "measured: backup ${BACKUP_SECS}s ($N_KEYS counters, $(wc -c <"$FILE") bytes); restore ${RESTORE_SECS}s" \
  "= prepare of 3 nodes ${PREPARE_SECS}s + group start to verified ${START_SECS}s"
if [ "$FAIL" -gt 0 ]; then dump_logs; fi
echo "backup/restore drill: $(elapsed)s"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
