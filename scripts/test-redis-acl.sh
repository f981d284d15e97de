#!/usr/bin/env bash
# Tests the ACL users of the chart's Redis group (deploy/helm/tally/files/auth-lib.sh) against
# real redis-server and redis-sentinel processes started by the chart's scripts: the default user
# is refused; user tally may run every command on its list (scripts included, through EVALSHA)
# and is refused everything else (FLUSHALL, FLUSHDB, CONFIG, KEYS, DEBUG, SCRIPT FLUSH,
# SHUTDOWN, ACL, keys outside its patterns...), on Redis and on Sentinel; the other users are
# refused the data by command (user backup gets a copy through SYNC only); redis_exporter
# (Debian's prometheus-redis-exporter) scrapes as user exporter; then every password rotates
# (next, current + previous, current only) while INCRs run as user tally, with 0 failures, no
# authentication failure anywhere, and the group replicates and fails over with the new passwords
# only; last, a cold start keeps every write of a Lua script (the AOF replays them as the default
# user).
#
# Needs redis-server, redis-sentinel, redis-cli; prometheus-redis-exporter and curl for the
# exporter part (skipped without them). Bounded; everything started is stopped on exit.
#   TEST_SHELL, TEST_BASE_PORT, KEEP_TMP   as scripts/test-redis-scripts.sh
# shellcheck disable=SC2016 # conditions are passed to wait_for/check as eval strings on purpose
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/redis-test-lib.sh
. "$ROOT/scripts/redis-test-lib.sh"
echo "testing the ACL users of $FILES with $SH on 127.0.0.1 ports $BASE-$((BASE + 20)), temp dir $T"

# 0. Key patterns follow the chart's prefix and namespace; other characters are refused.
check "tally's key patterns follow TALLY_KEY_PREFIX and TALLY_KEY_NAMESPACE" \
  [ "$(TALLY_KEY_PREFIX=blue:count: TALLY_KEY_NAMESPACE=blue acl_key_patterns)" = '~blue:count:* ~blue:* ~{blue:*' ]
check "a prefix with glob characters is refused" \
  eval '! (TALLY_KEY_PREFIX="a*" acl_key_patterns) 2>/dev/null'
check "the ACL file is written with mode 600" \
  eval 'acl_write redis "$T/probe.acl" && [ "$(stat -c %a "$T/probe.acl")" = 600 ]'

start_group
M=$(master_node)
MP=$(rport "$M")
SP=$(sport "$M")

# 1. The default user is off on Redis and on Sentinel.
for p in "$MP" "$SP"; do
  check "port $p: no command without authentication" eval 'redis-cli -p "$p" PING 2>&1 | grep >/dev/null NOAUTH'
  check "port $p: user default refused" \
    eval 'REDISCLI_AUTH=x redis-cli --user default -p "$p" PING 2>&1 | grep >/dev/null WRONGPASS'
done

# 2. User tally runs each command of its list on the master, as tally does (real arguments).
SCRIPT="local a = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[2], '1', 'EX', 60)
redis.call('INCR', KEYS[1]); redis.call('INCRBY', KEYS[1], 2); redis.call('EXISTS', KEYS[1])
redis.call('HSETNX', KEYS[3], 'i', '1'); redis.call('HSET', KEYS[3], 'i', '2'); redis.call('HDEL', KEYS[3], 'i')
redis.call('ZADD', KEYS[4], 1, 'a')
local id = redis.call('XADD', KEYS[5], 'MAXLEN', '~', 100, '*', 'a', 'b')
redis.call('XACK', KEYS[5], 'workers', id)
return 1"
allowed=(
  "PING" "INFO memory" "ROLE" "WAIT 1 500"
  "GET count:acl" "SET tally:idem:counter:k 1:a EX 60" "SET tally:idem:counter-id:k a NX EX 60 GET"
  "INCR count:acl" "INCRBY count:acl 2" "EXISTS count:acl" "GET count:{a}"
  "XADD tally:messages MAXLEN ~ 100 * text hi" "XRANGE tally:messages - + COUNT 1"
  "XREVRANGE tally:messages + - COUNT 1" "XGROUP CREATE tally:fib:jobs workers 0 MKSTREAM"
  "XADD tally:fib:jobs MAXLEN ~ 100 * index 5"
  "XREADGROUP GROUP workers c1 COUNT 1 BLOCK 10 STREAMS tally:fib:jobs >"
  "XPENDING tally:fib:jobs workers - + 1" "XAUTOCLAIM tally:fib:jobs workers c2 0 0-0 COUNT 1"
  "XINFO GROUPS tally:fib:jobs" "XACK tally:fib:jobs workers 0-1"
  "ZADD tally:fib:done 5 5" "ZRANGE tally:fib:done 0 -1" "HSET tally:fib:values 5 5"
  "HSETNX tally:fib:requested 5 1" "HGET tally:fib:values 5" "HEXISTS tally:fib:requested 5"
  "HMGET tally:fib:values 5 6" "HDEL tally:fib:requested 5" "XADD {tally:fib}:jobs * index 1"
)
if [ "$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\.\([0-9]*\).*/\1\2/p')" -ge 72 ]; then
  allowed+=("CLIENT SETINFO LIB-NAME acl-test")
fi
for c in "${allowed[@]}"; do
  read -ra argv <<<"$c"
  out=$(as tally "$MP" "${argv[@]}" 2>&1)
  case "$out" in
    *NOPERM* | *ERR* | *WRONGPASS*) bad "tally: $c -> $out" ;;
    *) ok "tally may run: $c" ;;
  esac
done
sha=$(as tally "$MP" SCRIPT LOAD "$SCRIPT")
check "tally: SCRIPT LOAD" [ "${#sha}" = 40 ]
check "tally: EVALSHA of a script that calls GET SET INCR INCRBY EXISTS HSETNX HSET HDEL ZADD XADD XACK" \
  eval '[ "$(as tally "$MP" EVALSHA "$sha" 5 count:lua tally:idem:lua "{tally:fib}:values" "{tally:fib}:done" "{tally:fib}:jobs")" = 1 ]'
check "tally: a script that touches a key outside its patterns is refused" \
  eval 'as tally "$MP" EVALSHA "$sha" 5 other count:x tally:h tally:z tally:s | grep >/dev/null "NOPERM\|permission\|can.t access"'
for c in "CLUSTER SLOTS" "ASKING"; do
  check "tally: $c is allowed (refused only because this is not a cluster)" \
    eval 'as tally "$MP" $c | grep >/dev/null "cluster support disabled"'
done

# 3. Refused: ACL DRYRUN asks whether a user may run a command without running it, so even
# SHUTDOWN can be asked; a few are also run, to see NOPERM itself.
dryrun() { acli "$1" ACL DRYRUN "${@:2}" 2>&1; } # dryrun PORT USER COMMAND...
refused_of_tally=(
  "FLUSHALL" "FLUSHDB" "CONFIG GET maxmemory" "CONFIG SET maxmemory 1" "KEYS *" "DEBUG SLEEP 0"
  "SCRIPT FLUSH" "SCRIPT KILL" "SHUTDOWN" "ACL LIST" "ACL SETUSER tally +@all" "ACL LOAD" "SELECT 15"
  "EVAL return 1 0" "FUNCTION FLUSH" "MONITOR" "REPLICAOF NO ONE" "SLAVEOF NO ONE" "CLIENT LIST"
  "CLIENT KILL TYPE normal" "CLIENT PAUSE 100" "SUBSCRIBE ch" "PUBLISH ch x" "SAVE" "BGSAVE"
  "BGREWRITEAOF" "SCAN 0" "RANDOMKEY" "DBSIZE" "DEL count:acl" "RENAME count:acl count:b"
  "DUMP count:acl" "MIGRATE 127.0.0.1 1 count:acl 0 10" "GET other" "SET other 1" "INCR x:count"
  "XADD other * a b" "HSET other a b" "GET tally" "CLUSTER NODES" "CLUSTER FAILOVER" "MODULE LIST"
)
# A refusal says "no permissions"; any other answer (OK, a wrong number of arguments) is not one.
denied() { case "$1" in *"no permissions"*) return 0 ;; *) return 1 ;; esac; }
for c in "${refused_of_tally[@]}"; do
  read -ra argv <<<"$c"
  out=$(dryrun "$MP" tally "${argv[@]}")
  if denied "$out"; then ok "tally refused: $c"; else bad "tally not refused: $c -> $out"; fi
done
for c in "FLUSHALL" "FLUSHDB" "CONFIG GET maxmemory" "KEYS x*" "SCRIPT FLUSH" "GET other" "SHUTDOWN"; do
  read -ra argv <<<"$c"
  check "tally gets NOPERM for: $c" eval 'as tally "$MP" "${argv[@]}" 2>&1 | grep >/dev/null NOPERM'
done
check "DEBUG is refused to tally (Redis refuses DEBUG itself first: enable-debug-command no)" \
  eval 'as tally "$MP" DEBUG SLEEP 0 2>&1 | grep >/dev/null "NOPERM\|not allowed"'
check "the refusals are in the ACL LOG (so the empty logs checked below mean something)" \
  eval 'acl_denials "$MP" | grep >/dev/null "^tally command flushall"'

# 4. User tally on Sentinel: find the master and follow +switch-master, nothing else.
check "tally on Sentinel: SENTINEL get-master-addr-by-name" \
  eval '[ "$(as tally "$SP" SENTINEL get-master-addr-by-name mymaster | sed -n 2p)" = "$MP" ]'
check "tally on Sentinel: SUBSCRIBE +switch-master" [ "$(dryrun "$SP" tally SUBSCRIBE +switch-master)" = OK ]
for c in "SENTINEL FAILOVER mymaster" "SENTINEL SET mymaster quorum 1" "SENTINEL MASTERS" \
  "SENTINEL RESET *" "SENTINEL REMOVE mymaster" "SENTINEL CONFIG SET resolve-hostnames no" \
  "SENTINEL MONITOR x 127.0.0.1 1 1" "ACL LIST" "SUBSCRIBE __sentinel__:hello" "PSUBSCRIBE *" \
  "SHUTDOWN" "INFO" "CLIENT LIST"; do
  read -ra argv <<<"$c"
  out=$(dryrun "$SP" tally "${argv[@]}")
  if denied "$out"; then ok "tally on Sentinel refused: $c"; else bad "tally on Sentinel not refused: $c -> $out"; fi
done
check "tally on Sentinel gets NOPERM for SENTINEL FAILOVER" \
  eval 'as tally "$SP" SENTINEL FAILOVER mymaster 2>&1 | grep >/dev/null NOPERM'

# 5. The other users: what each needs, and never the data.
expect() { # expect PORT USER OK|refused COMMAND...
  local out
  out=$(dryrun "$1" "$2" "${@:4}")
  if { [ "$3" = OK ] && [ "$out" = OK ]; } || { [ "$3" = refused ] && denied "$out"; }; then
    ok "$2: ${*:4} -> $3"
  else
    bad "$2: ${*:4} -> $out (expected $3)"
  fi
}
for u in replication sentinel operator exporter backup; do
  for c in "GET count:acl" "SET count:acl 1" "FLUSHALL" "KEYS *" "ACL SETUSER $u +@all" "SHUTDOWN" "MODULE LOAD x"; do
    read -ra argv <<<"$c"
    expect "$MP" "$u" refused "${argv[@]}"
  done
done
expect "$MP" replication OK PSYNC '?' -1
expect "$MP" replication OK REPLCONF listening-port 1
expect "$MP" replication refused INFO
expect "$MP" sentinel OK SLAVEOF NO ONE
expect "$MP" sentinel OK CONFIG REWRITE
expect "$MP" sentinel OK CLIENT KILL TYPE normal
expect "$MP" sentinel refused CONFIG SET maxmemory 1
expect "$MP" operator OK REPLICAOF NO ONE
expect "$MP" operator OK CONFIG SET replica-priority 0
expect "$MP" operator OK PUBLISH tally:redis:prestop fenced
expect "$MP" operator OK WAIT 0 0
expect "$MP" operator refused PUBLISH other x
expect "$MP" operator refused CLIENT PAUSE 10 WRITE
expect "$MP" operator OK GET tally:redis:clock
expect "$MP" operator refused ACL LOAD
expect "$MP" operator refused CONFIG REWRITE
expect "$MP" exporter OK INFO ALL
expect "$MP" exporter OK SLOWLOG GET 1
expect "$MP" exporter OK LATENCY LATEST
expect "$MP" exporter refused CONFIG GET '*'
expect "$MP" exporter refused CLIENT KILL TYPE normal
expect "$MP" backup OK REPLCONF rdb-only 1
expect "$MP" backup OK SYNC
expect "$MP" backup OK INFO replication
expect "$MP" backup OK SELECT 15
expect "$MP" backup OK GET tally:redis:clock
expect "$MP" backup refused SET tally:redis:clock 1
expect "$MP" backup refused PSYNC '?' -1
expect "$MP" backup refused CONFIG GET '*'
expect "$MP" backup refused CLIENT LIST
expect "$MP" backup refused SCAN 0
expect "$MP" admin OK FLUSHALL
expect "$SP" sentinel OK SENTINEL is-master-down-by-addr 127.0.0.1 1 0 '*'
expect "$SP" sentinel refused SENTINEL FAILOVER mymaster
expect "$SP" operator OK SENTINEL FAILOVER mymaster
expect "$SP" operator refused SENTINEL SET mymaster quorum 1
expect "$SP" operator refused ACL SETUSER operator +@all
expect "$SP" backup OK SENTINEL get-master-addr-by-name mymaster
expect "$SP" backup refused SENTINEL master mymaster
expect "$SP" backup refused SENTINEL FAILOVER mymaster
expect "$SP" backup refused SUBSCRIBE +switch-master

# 6. redis_exporter as user exporter, with the password file exporter-auth.sh writes.
EXPORTER_PORT=$((BASE + 20))
EXPORTER_PID=''
start_exporter() {
  prometheus-redis-exporter -redis.addr "redis://127.0.0.1:$MP" -redis.user exporter \
    -redis.password-file "$T/exporter.json" -web.listen-address "127.0.0.1:$EXPORTER_PORT" \
    -config-command=- >>"$T/exporter.log" 2>&1 &
  EXPORTER_PID=$!
  PIDS+=("$EXPORTER_PID")
}
stop_exporter() { kill "$EXPORTER_PID" 2>/dev/null || true; wait "$EXPORTER_PID" 2>/dev/null || true; }
metric() { curl -s --max-time 5 "http://127.0.0.1:$EXPORTER_PORT/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
if command -v prometheus-redis-exporter >/dev/null && command -v curl >/dev/null; then
  REDIS_AUTH_DIR=$AUTH EXPORTER_REDIS_ADDR="redis://127.0.0.1:$MP" EXPORTER_AUTH_FILE="$T/exporter.json" \
    "$SH" "$FILES/exporter-auth.sh" 2>/dev/null
  check "exporter-auth.sh writes its file with mode 600" [ "$(stat -c %a "$T/exporter.json")" = 600 ]
  start_exporter
  wait_for 15 "redis_exporter as user exporter: redis_up 1" eval '[ "$(metric redis_up)" = 1 ]'
  check "maxmemory is exported (redis_memory_max_bytes = 64 MiB)" \
    eval '[ "$(metric redis_memory_max_bytes | awk "{ printf \"%d\", \$1 }")" = 67108864 ]'
  check "replication is exported (redis_connected_slaves 2)" eval '[ "$(metric redis_connected_slaves)" = 2 ]'
  check "the exporter was refused nothing (ACL LOG)" eval '! acl_denials "$MP" | grep >/dev/null "^exporter"'
  stop_exporter
else
  echo "SKIP exporter: prometheus-redis-exporter or curl not installed"
fi
acli "$MP" FLUSHALL >/dev/null
acli "$MP" WAIT 2 2000 >/dev/null

# 7. Rotation of every password under load. Kubernetes replaces a mounted Secret's files at once
# (auth_update); each step waits until every process accepts exactly the passwords the files
# list. The load: INCRs as user tally, each on a new connection with the password the file
# holds at that moment (as tally's pods will), and one connection kept open throughout.
acl_log_reset
load() {
  local out
  while [ ! -e "$T/stop-load" ]; do
    out=$(REDISCLI_AUTH=$(cat "$AUTH/tally-password") redis-cli --user tally -p "$MP" INCR count:rotation 2>&1)
    case "$out" in
      '' | *[!0-9]*) echo "fail $out" ;;
      *) echo ok ;;
    esac
  done >"$T/load.out"
}
REDISCLI_AUTH=$(pw tally) redis-cli --user tally -p "$MP" -r -1 -i 0.1 INCR count:held >"$T/held.out" 2>&1 &
HELD=$!
PIDS+=("$HELD")
load &
LOAD=$!
PIDS+=("$LOAD")
# The exporter's sidecar rewrites its file and asks the exporter to reload; a stand-in answers
# the reload here (Debian's redis_exporter 1.45 predates /-/reload, which 1.50 added).
python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        open(sys.argv[2], "a").write(self.path + "\n")
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()' "$EXPORTER_PORT" "$T/reloads" &
STANDIN=$!
PIDS+=("$STANDIN")
REDIS_AUTH_DIR=$AUTH EXPORTER_REDIS_ADDR="redis://127.0.0.1:$MP" EXPORTER_AUTH_FILE="$T/exporter.json" \
  EXPORTER_PORT=$EXPORTER_PORT REDIS_AUTH_INTERVAL=1 "$SH" "$FILES/exporter-auth.sh" --watch >>"$T/exporter-auth.log" 2>&1 &
PIDS+=("$!")
sleep 2
declare -A OLD # read in the eval strings below
# shellcheck disable=SC2034
for u in $USERS; do OLD[$u]=$(pw "$u"); done
t_rot=$(date +%s)
# Step 1: a next password for every user, accepted everywhere; clients still send the current.
auth_update 'for u in '"$USERS"'; do new_password "$u" >"$u-password-next"; done'
wait_for 30 "rotation 1/3: every process accepts each user's next password too" applied_everywhere
# Step 2: the next password becomes the current one; the old one stays accepted as previous.
auth_update 'for u in '"$USERS"'; do mv "$u-password" "$u-password-previous"; mv "$u-password-next" "$u-password"; done'
wait_for 30 "rotation 2/3: clients send the new passwords, the old ones still accepted" applied_everywhere
sleep 3 # the load runs a while on the new password, the sidecar reloads the exporter
# Step 3: the previous passwords go.
auth_update 'rm -f ./*-password-previous'
wait_for 30 "rotation 3/3: every process accepts the new passwords only" applied_everywhere
sleep 2
: >"$T/stop-load"
wait "$LOAD" 2>/dev/null || true
kill "$HELD" 2>/dev/null || true
wait "$HELD" 2>/dev/null || true
n_ok=$(grep -c '^ok' "$T/load.out" || true)
n_fail=$(grep -c '^fail' "$T/load.out" || true)
echo "rotation-figures: every password of $(wc -w <<<"$USERS") users rotated in $(($(date +%s) - t_rot)) s under load: $n_ok INCRs on new connections, $n_fail failed; $(grep -c '^[0-9]' "$T/held.out" || true) INCRs on one connection held throughout"
check "rotation: no failed INCR ($n_ok succeeded, $n_fail failed: $(grep '^fail' "$T/load.out" | sort | uniq -c | head -n 3 | paste -sd';'))" \
  eval '[ "$n_fail" = 0 ] && [ "$n_ok" -gt 100 ]'
check "rotation: every INCR counted" eval '[ "$(acli "$MP" GET count:rotation)" = "$n_ok" ]'
check "rotation: the connection held throughout was never refused" \
  eval '! grep -qv "^[0-9][0-9]*$" "$T/held.out" && [ "$(wc -l <"$T/held.out")" -gt 10 ]'
for i in 0 1 2; do
  for p in "$(rport "$i")" "$(sport "$i")"; do
    check "rotation: no client of port $p failed to authenticate or was refused (ACL LOG: $(acl_denials "$p" | sort -u | paste -sd';'))" \
      eval '[ -z "$(acl_denials "$p")" ]'
  done
done
json_password() { python3 -c 'import json, sys; print(list(json.load(open(sys.argv[1])).values())[0], end="")' "$1"; }
check "rotation: the exporter's file holds the new password" eval '[ "$(json_password "$T/exporter.json")" = "$(pw exporter)" ]'
check "rotation: the exporter was asked to reload" grep -qx '/-/reload' "$T/reloads"
for u in $USERS; do
  check "rotation: $u's old password is refused" \
    eval '[ "$(cli "$u" "${OLD[$u]}" "127.0.0.1:$MP" PING 2>&1 | grep -c WRONGPASS)" = 1 ]'
done
check "rotation: tally's old password is refused by the sentinels" \
  eval 'cli tally "${OLD[tally]}" "127.0.0.1:$SP" SENTINEL get-master-addr-by-name mymaster 2>&1 | grep >/dev/null WRONGPASS'
kill "$STANDIN" 2>/dev/null || true
wait "$STANDIN" 2>/dev/null || true
if command -v prometheus-redis-exporter >/dev/null && command -v curl >/dev/null; then
  start_exporter
  wait_for 15 "rotation: redis_exporter with the rewritten file: redis_up 1" eval '[ "$(metric redis_up)" = 1 ]'
  stop_exporter
fi

# 8. With the new passwords only: replicas reconnect (masterauth), the sentinels detect a dead
# master together (sentinel-pass) and fail over (auth-pass), the old master rejoins. (The old
# passwords tried above are in the ACL LOGs: cleared first.)
acl_log_reset
acli "$MP" CLIENT KILL TYPE replica >/dev/null
wait_for 20 "new passwords: both replicas reconnect to the master" \
  eval 'replica_of $(((M + 1) % 3)) "$M" && replica_of $(((M + 2) % 3)) "$M"'
kill_node "$M"
wait_for 30 "new passwords: the sentinels fail over a SIGKILLed master" eval 'n=$(master_node); [ -n "$n" ] && [ "$n" != "$M" ]'
N=$(master_node)
check "new passwords: the new master takes writes as tally" eval '[ "$(as tally "$(rport "$N")" INCR count:after)" = 1 ]'
start_redis "$M"
wait_for 30 "new passwords: the old master rejoins as a replica" replica_of "$M" "$N"
for i in 0 1 2; do
  for p in "$(rport "$i")" "$(sport "$i")"; do
    check "after the failover: nothing refused on port $p (ACL LOG: $(acl_denials "$p" | sort -u | paste -sd';'))" \
      eval '[ -z "$(acl_denials "$p")" ]'
  done
done

# 9. A cold start keeps every write a script made: Redis replays each script's writes from the
# AOF as a transaction, checked against the default user's rights (which is why user default,
# off and without a password, keeps them: auth-lib.sh's acl_line).
N=$(master_node)
sha=$(as tally "$(rport "$N")" SCRIPT LOAD "$SCRIPT")
for _ in 1 2 3; do as tally "$(rport "$N")" EVALSHA "$sha" 5 count:aof tally:idem:aof "{tally:fib}:v" "{tally:fib}:d" "{tally:fib}:j" >/dev/null; done
acli "$(rport "$N")" WAIT 2 2000 >/dev/null
want=$(acli "$(rport "$N")" GET count:aof)
for i in 0 1 2; do kill_node "$i"; kill_sentinel "$i"; done
for i in 0 1 2; do start_redis "$i"; start_sentinel "$i"; done
wait_for 60 "cold start: the group forms again" eval '[ -n "$(master_node)" ]'
N=$(master_node)
check "cold start: the scripts' writes came back from the AOF (count:aof = $want)" \
  eval '[ "$want" = 9 ] && [ "$(acli "$(rport "$N")" GET count:aof)" = 9 ] && [ "$(acli "$(rport "$N")" ZCARD "{tally:fib}:d")" = 1 ]'
for i in 0 1 2; do
  check "cold start: no transaction refused while node $i loaded its AOF (ACL LOG: $(acl_denials "$(rport "$i")" | sort -u | paste -sd';'))" \
    eval '[ -z "$(acl_denials "$(rport "$i")")" ]'
done

if [ "$FAIL" -gt 0 ]; then dump_logs; fi
echo "redis acl: $(elapsed)s"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
