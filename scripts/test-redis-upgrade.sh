#!/usr/bin/env bash
# Tests the upgrade from the chart's scripts of before the ACL users (one password for Redis,
# replication and Sentinel, through user default) to these, against real processes: a group
# started by the old scripts (taken from git: the parent of the commit that added auth-lib.sh) is
# rolled pod by pod as the StatefulSet does (highest ordinal first; each pod's preStop first) to
# the new scripts, with the Secret the chart's hook Job leaves (the old password plus each
# user's key). INCRs run throughout as the old app (user default, the old password) and, from
# the first new pod on, as the new app (user tally); none may be refused for its credentials.
# Then the old password's key goes, and every process turns user default off, in place.
#
# Needs git and the repository's history (SKIP without), redis-server, redis-sentinel, redis-cli.
#   TEST_SHELL, TEST_BASE_PORT, KEEP_TMP   as scripts/test-redis-scripts.sh
# shellcheck disable=SC2016 # conditions are passed to wait_for/check as eval strings on purpose
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/redis-test-lib.sh
. "$ROOT/scripts/redis-test-lib.sh"

added=$(git -C "$ROOT" log --format=%H --diff-filter=A -- deploy/helm/tally/files/auth-lib.sh 2>/dev/null | tail -n 1 || true)
OLD_FILES=$T/old/deploy/helm/tally/files
mkdir -p "$T/old"
if [ -z "$added" ] || ! git -C "$ROOT" archive "$added^" deploy/helm/tally/files 2>/dev/null | tar -x -C "$T/old"; then
  echo "SKIP: no git history with the scripts before the ACL users"
  exit 0
fi
echo "testing the upgrade from $(git -C "$ROOT" rev-parse --short "$added^")'s scripts to $FILES with $SH, ports $BASE-$((BASE + 12)), temp dir $T"

# The old single password, as the hook Job leaves the Secret: kept, beside the users' keys.
new_password legacy >"$AUTH/password"
LEGACY=$(cat "$AUTH/password")
# During the upgrade the test looks at the group as user default, which old and new nodes accept.
# shellcheck disable=SC2317 # called by redis-lib.sh's functions
redis_cli() { cli '' "$LEGACY" "$@"; }
sentinel_cli() { cli '' "$LEGACY" "$@"; }
# shellcheck disable=SC2317 # called by redis-test-lib.sh's functions
acli() { local p=$1; shift; cli '' "$LEGACY" "127.0.0.1:$p" "$@" 2>/dev/null; }

RUN_FILES=$OLD_FILES start_group
M=$(master_node)
check "the old scripts' group uses user default only (node $M has no user operator)" \
  eval '[ -z "$(acli "$(rport "$M")" ACL GETUSER operator | tr -d "[:space:]")" ]'

# app_load NAME USER PASSWORD-FILE: INCRs until the stop file, each on new connections: the master
# from a sentinel, then INCR, as USER (empty: default) with the password the file holds; one line
# per try in $T/NAME.out: ok, auth (refused for its credentials: never allowed), or other
app_load() {
  local out m pw
  while [ ! -e "$T/stop-load" ]; do
    pw=$(cat "$3")
    out=$(cli "$2" "$pw" "$(snode $((RANDOM % 3)))" SENTINEL get-master-addr-by-name mymaster 2>&1) || true
    m=$(printf '%s\n' "$out" | sed -n 2p)
    case "$m" in
      '' | *[!0-9]*) ;;
      *) out=$(cli "$2" "$pw" "127.0.0.1:$m" INCR count:upgrade 2>&1) || true ;;
    esac
    case "$out" in
      *WRONGPASS* | *NOAUTH* | *NOPERM*) echo "auth $out" ;;
      '' | *[!0-9]*) echo "other $(printf '%s' "$out" | head -c 60)" ;;
      *) echo ok ;;
    esac
    sleep 0.02
  done >"$T/$1.out"
}
app_load old-app '' "$AUTH/password" &
LOADS=("$!")
PIDS+=("$!")

# replace_pod I: pod I's preStop (its own version's), then its containers go and the new
# version's start, as the StatefulSet controller replaces a pod; waits until it is ready
replace_pod() {
  local files=$1 i=$2
  RUN_FILES=$files run_script "$i" prestop-redis.sh >>"$T/n$i/prestop.log" 2>&1 || true
  kill_node "$i"
  kill_sentinel "$i"
  start_redis "$i"
  start_sentinel "$i"
  wait_for 60 "pod $i replaced by the new version and ready" \
    eval 'run_script "$i" probe.sh redis-ready >/dev/null 2>&1 && run_script "$i" probe.sh sentinel-ready >/dev/null 2>&1'
}
sleep 2
replace_pod "$OLD_FILES" 2
# How far each load got at the marks below: the checks ask for INCRs in each phase, not for a
# total, which depends on the machine's speed (a loaded CI machine managed 45 in the roll).
oks() { grep -c '^ok' "$T/$1.out" || true; }
old_at_first_new=$(oks old-app)
O=$(master_node)
check "the first new pod gave the old master (node $O) the users" \
  eval '[ -n "$(acli "$(rport "$O")" ACL GETUSER operator | tr -d "[:space:]")" ]'
check "and the old sentinels" eval '[ -n "$(acli "$(sport 0)" ACL GETUSER tally | tr -d "[:space:]")" ]'
app_load new-app tally "$AUTH/tally-password" &
LOADS+=("$!")
PIDS+=("$!")
sleep 3
replace_pod "$OLD_FILES" 1
sleep 3
replace_pod "$OLD_FILES" 0
wait_for 30 "after the roll: all three sentinels agree on a master with two replicas" \
  eval 'm=$(master_node); [ -n "$m" ] && replica_of $(((m + 1) % 3)) "$m" && replica_of $(((m + 2) % 3)) "$m"'
old_after_roll=$(oks old-app)
new_after_roll=$(oks new-app)
sleep 3

# The old password's key goes: user default turns off everywhere, in place.
auth_update 'rm -f password'
default_off() { # user default is off on every process (asked as admin: default is gone)
  local i p
  for i in 0 1 2; do
    for p in "$(rport "$i")" "$(sport "$i")"; do
      as admin "$p" ACL GETUSER default | grep -x off >/dev/null \
        || { echo "port $p: user default: $(as admin "$p" ACL GETUSER default | sed -n 2p)" >"$T/why"; return 1; }
    done
  done
}
wait_for 30 "the old password removed: user default is off on every process" default_off
sleep 2
: >"$T/stop-load"
wait "${LOADS[@]}" 2>/dev/null || true
for a in old-app new-app; do
  echo "upgrade-figures: $a: $(grep -c '^ok' "$T/$a.out" || true) INCRs, $(grep -c '^auth' "$T/$a.out" || true) refused for credentials, $(grep -c '^other' "$T/$a.out" || true) failed otherwise ($(grep '^other' "$T/$a.out" | sort | uniq -c | sort -rn | head -n 2 | paste -sd';'))"
done
# In the check's line, so a failure says what was refused (check-chart shows a test's FAIL lines).
refusals() {
  echo "$(grep -c '^ok' "$T/$1.out" || true) INCRs; refused: $(grep '^auth' "$T/$1.out" | sort | uniq -c | sort -rn | head -n 2 | paste -sd';')"
}
check "the old app (user default) was never refused for its credentials, and counted while old and new pods mixed [$(refusals old-app); $old_at_first_new before, $old_after_roll after the roll]" \
  eval '! grep "^auth" "$T/old-app.out" >/dev/null && [ "$old_after_roll" -gt "$old_at_first_new" ] && [ "$old_at_first_new" -gt 0 ]'
check "the new app (user tally) was never refused for its credentials, and counted in the roll and after the old password went [$(refusals new-app); $new_after_roll in the roll]" \
  eval '! grep "^auth" "$T/new-app.out" >/dev/null && [ "$new_after_roll" -gt 0 ] && [ "$(oks new-app)" -gt "$new_after_roll" ]'

# After: the old password is refused, the users work, the group fails over.
acli() { as admin "$@"; }
redis_cli() { cli operator "$(pw operator)" "$@"; }
sentinel_cli() { cli operator "$(pw operator)" "$@"; }
M=$(master_node)
for i in 0 1 2; do
  for p in "$(rport "$i")" "$(sport "$i")"; do
    check "nothing refused on port $p during and after the upgrade (ACL LOG: $(acl_denials "$p" | sort -u | paste -sd';'))" \
      eval '[ -z "$(acl_denials "$p")" ]'
  done
done
check "the old password is refused now" \
  eval 'cli "" "$LEGACY" "127.0.0.1:$(rport "$M")" PING 2>&1 | grep "WRONGPASS\|NOAUTH" >/dev/null'
check "user tally works" eval '[ "$(as tally "$(rport "$M")" INCR count:after)" = 1 ]'
kill_node "$M"
wait_for 30 "with the users only, the sentinels fail over a SIGKILLed master" eval 'n=$(master_node); [ -n "$n" ] && [ "$n" != "$M" ]'

if [ "$FAIL" -gt 0 ]; then dump_logs; fi
echo "redis upgrade: $(elapsed)s"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
