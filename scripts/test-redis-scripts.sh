#!/usr/bin/env bash
# Tests the chart's Redis/Sentinel scripts (deploy/helm/tally/files/) against real redis-server and
# redis-sentinel processes: three "nodes" on 127.0.0.1 (own ports, temp dirs, the chart's ACL
# users with passwords of awkward characters), started at once as a StatefulSet with parallel pod
# management would.
# Checks bootstrap of node 0 as master, a killed master rejoining as a replica, the preStop
# handover (a write fence, WAIT, SENTINEL FAILOVER), a restarted sentinel following the current
# master without being counted twice, the probes, a master that returns with an empty data
# directory, cold starts of the whole group (one node behind; the master never back), a hung
# master that steps down by itself, and a master that fences itself without its sentinels; and
# that through all of it no process refused the scripts, sentinels or replicas a command (ACL LOG).
# scripts/test-redis-acl.sh tests the users themselves and password rotation.
#
# Needs redis-server, redis-sentinel and redis-cli (apt-get install redis-server redis-sentinel
# redis-tools). Bounded: every wait has a deadline; everything started is stopped on exit.
#   TEST_SHELL=dash|sh|bash   shell that runs the scripts (default: sh)
#   TEST_BASE_PORT            first of the ports used (default: random, below the ephemeral range)
# shellcheck disable=SC2016 # conditions are passed to wait_for/check as eval strings on purpose
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TEST_NAME=tally-redis-test
# shellcheck source=scripts/redis-test-lib.sh
. "$ROOT/scripts/redis-test-lib.sh"
echo "testing $FILES with $SH on 127.0.0.1 ports $BASE-$((BASE + 12)), temp dir $T"

# 0. Node names as the chart computes them: from POD_NAME, REDIS_NODE_COUNT and HEADLESS_DOMAIN.
names=$(env -i PATH="$PATH" POD_NAME=tally-redis-1 REDIS_NODE_COUNT=3 FILES_DIR="$FILES" \
  HEADLESS_DOMAIN=tally-redis-headless.ns.svc.cluster.local "$SH" -c \
  '. "$1/redis-lib.sh"; lib_init; printf "%s|%s|%s|%s" "$NODE_INDEX" "$MY_REDIS" "$SENTINEL_NODES" "$FIRST_REDIS"' \
  sh "$FILES")
d=tally-redis-headless.ns.svc.cluster.local
check "node names from POD_NAME and HEADLESS_DOMAIN" [ "$names" = "1|tally-redis-1.$d:6379|tally-redis-0.$d:26379 tally-redis-1.$d:26379 tally-redis-2.$d:26379|tally-redis-0.$d:6379" ]
check "conf_quote escapes quotes and backslashes" \
  [ "$(FILES_DIR=$FILES "$SH" -c '. "$1/redis-lib.sh"; conf_quote "a\"b\\c"' sh "$FILES")" = '"a\"b\\c"' ]
check "same_node ignores case and a trailing dot" \
  env FILES_DIR="$FILES" "$SH" -c '. "$1/redis-lib.sh"; same_node "Tally-Redis-0.X.:6379" "tally-redis-0.x:6379"' sh "$FILES"

# 1. Bootstrap: all six processes start at once; node 0 must become master.
for i in 0 1 2; do start_redis "$i"; start_sentinel "$i"; done
wait_for 30 "bootstrap: node 0 is master" eval '[ "$(role 0)" = master ]'
wait_for 30 "bootstrap: nodes 1 and 2 replicate node 0" eval 'replica_of 1 0 && replica_of 2 0'
wait_for 30 "bootstrap: all sentinels name node 0" eval '[ "$(master_node)" = 0 ]'
wait_for 30 "bootstrap: sentinels see each other (CKQUORUM)" \
  eval 'rcli "$(sport 0)" SENTINEL CKQUORUM mymaster | grep -q "^OK 3 usable"'
# A sentinel learns of replicas from the master's INFO, which it reads every 10 s; one that wins
# the election before it knows any replica aborts (-failover-abort-no-good-slave) and the next try
# comes 2 x failover-timeout later. start-sentinel.sh waits for the replicas to attach so that the
# sentinel's first INFO lists them; the failover below needs it either way.
check "every sentinel started after both replicas attached" \
  every_sentinel_logged "2 of 2 replicas attached to 127.0.0.1:$BASE"
wait_for 30 "bootstrap: every sentinel knows both replicas" \
  eval 'knows_replicas 0 && knows_replicas 1 && knows_replicas 2'
# With all nodes starting at once, node 0 cannot yet see that the others are empty: they all hold
# and the sentinels' scripts elect, every clock being 0, node 0.
check "node 0 bootstrapped or was elected" eval 'grep -q "bootstrapping a new group" "$T/n0/redis.log" \
  || grep -q "election: .* 127.0.0.1:$BASE has the newest data" "$T"/n*/sentinel.log'
check "the master ticks the group's clock (db 15)" eval 'sleep 1.5; [ "$(rcli "$(rport 0)" -n 15 GET tally:redis:clock)" -ge 1 ]'
check "replica-announce-ip written" grep -q '^replica-announce-ip 127.0.0.1' "$T/n1/redis-run/redis.conf"

for _ in 1 2 3; do rcli "$(rport 0)" INCR count:test >/dev/null; done
check "INCR on the master (min-replicas-to-write met)" eval '[ "$(rcli "$(rport 0)" GET count:test)" = 3 ]'
check "replicas are read-only" eval '[ "$(rcli "$(rport 1)" INCR count:test | head -c 8)" = READONLY ]'
check "a wrong password is refused" \
  eval '[ "$(REDISCLI_AUTH=wrong redis-cli --user tally -p "$(rport 0)" GET count:test 2>&1 | grep -c WRONGPASS)" = 1 ]'

for i in 0 1 2; do
  if run_script "$i" probe.sh redis-ready >/dev/null && run_script "$i" probe.sh redis-alive >/dev/null \
    && run_script "$i" probe.sh sentinel-ready >/dev/null && run_script "$i" probe.sh sentinel-alive >/dev/null; then
    ok "probes pass on node $i"
  else
    bad "probes fail on node $i"
  fi
done

# 2. SIGKILL the master's redis: the sentinels fail over; restarted, node 0 rejoins as a replica.
kill -9 "${REDIS_PID[0]}"
wait "${REDIS_PID[0]}" 2>/dev/null || true
check "liveness probe fails on a dead redis" eval '! run_script 0 probe.sh redis-alive >/dev/null 2>&1'
wait_for 30 "kill -9 of the master: sentinels promote a replica" \
  eval 'm=$(master_node); [ -n "$m" ] && [ "$m" != 0 ]'
M=$(master_node)
wait_for 15 "new master node $M accepts writes" eval '[ "$(rcli "$(rport "$M")" INCR count:test)" = 4 ]'
start_redis 0
wait_for 30 "restarted old master rejoins as a replica of node $M" replica_of 0 "$M"
check "node 0 asked the sentinels and started as a replica" \
  grep -q "starting as replica of 127.0.0.1:$(rport "$M")" "$T/n0/redis.log"
wait_for 10 "node 0 has the data written after the failover" eval '[ "$(rcli "$(rport 0)" GET count:test)" = 4 ]'

# 3. preStop on the master: writes fenced (NOREPLICAS), the replicas confirm every write taken,
# SENTINEL FAILOVER, wait for the switch, the fence lifted.
t0=$(date +%s)
if run_script "$M" prestop-redis.sh >"$T/prestop.log" 2>&1; then ok "preStop exits 0"; else bad "preStop exit code"; fi
dt=$(($(date +%s) - t0))
if grep -q 'master moved to' "$T/prestop.log"; then
  ok "preStop handed the master role over in ${dt}s"
else
  bad "preStop did not hand over"
  cat "$T/prestop.log"
fi
check "preStop: both replicas confirmed every write before the failover ($(grep -o '[0-9]* of [0-9]* online' "$T/prestop.log"))" \
  grep -q '2 of 2 online replica(s) acknowledged' "$T/prestop.log"
# The clock loop may fence the demoted node for a tick of its own (no sentinel majority names it
# master mid-failover) and lifts that once it sees the node a replica.
wait_for 10 "preStop lifted its fence: min-replicas-to-write is 1 again on node $M" \
  eval '[ "$(rcli "$(rport "$M")" CONFIG GET min-replicas-to-write | sed -n 2p)" = 1 ]'
wait_for 15 "after preStop all sentinels name a new master" \
  eval 'm=$(master_node); [ -n "$m" ] && [ "$m" != "$M" ]'
M2=$(master_node)
wait_for 20 "old master node $M is now a replica of node $M2" replica_of "$M" "$M2"
wait_for 15 "no write lost across the handover" eval '[ "$(rcli "$(rport "$M2")" INCR count:test)" = 5 ]'
out=$(run_script "$M" prestop-redis.sh 2>&1)
case "$out" in
  *"no failover needed"*) ok "preStop on a replica does nothing" ;;
  *) bad "preStop on a replica: $out" ;;
esac

# 4. A restarted sentinel follows the current master and is not counted twice.
S=$(((M2 + 1) % 3))
kill -9 "${SENTINEL_PID[$S]}"
wait "${SENTINEL_PID[$S]}" 2>/dev/null || true
start_sentinel "$S"
wait_for 20 "restarted sentinel $S names the current master" eval '[ "$(sentinel_master_of "$(snode "$S")")" = "$(rnode "$M2")" ]'
check "restarted sentinel asked the others" \
  grep -q "sentinels name master 127.0.0.1:$(rport "$M2")" "$T/n$S/sentinel.log"
O=$(((S + 1) % 3))
wait_for 10 "sentinel $O still counts 2 other sentinels (stable myid)" \
  eval '[ "$(rcli "$(sport "$O")" SENTINEL sentinels mymaster | grep -cx name)" = 2 ]'
wait_for 20 "CKQUORUM after the sentinel restart" \
  eval 'rcli "$(sport "$S")" SENTINEL CKQUORUM mymaster | grep -q "^OK 3 usable"'

# 5. The master loses its volume and comes back at once, before the sentinels see it down: it
# must not start as an empty master (the replicas would sync an empty dataset).
kill_node() { # kill_node I: SIGKILL node I's redis
  kill -9 "${REDIS_PID[$1]}" 2>/dev/null || true
  wait "${REDIS_PID[$1]}" 2>/dev/null || true
}
M=$(master_node)
V=$(rcli "$(rport "$M")" INCR count:test)
rcli "$(rport "$M")" WAIT 2 2000 >/dev/null
kill_node "$M"
rm -rf "$T/n$M/data"
start_redis "$M"
wait_for 30 "empty master: the sentinels fail over to a replica with the data" \
  eval 'm=$(master_node); [ -n "$m" ] && [ "$m" != "$M" ]'
check "the empty node waited instead of starting as master" grep -q 'data directory is empty' "$T/n$M/redis.log"
N=$(master_node)
wait_for 20 "no write lost: the new master has count $V" eval '[ "$(rcli "$(rport "$N")" GET count:test)" = "$V" ]'
wait_for 30 "the empty node rejoins as a replica of node $N" replica_of "$M" "$N"
wait_for 10 "the empty node has the data again" eval '[ "$(rcli "$(rport "$M")" GET count:test)" = "$V" ]'
wait_for 10 "the empty node may be promoted again once in sync (replica-priority 100)" \
  eval '[ "$(rcli "$(rport "$M")" CONFIG GET replica-priority | sed -n 2p)" = 100 ]'

# 6. Cold start with one node behind: a replica dies, writes go on (acknowledged by the other
# replica), then every redis and sentinel dies and all start again at once. The node that was
# behind must not become master, whatever its ordinal.
M=$(master_node)
B=$(((M + 1) % 3))
C=$(((M + 2) % 3))
kill_node "$B"
for _ in $(seq 1 20); do rcli "$(rport "$M")" INCR count:test >/dev/null; done
V=$(rcli "$(rport "$M")" GET count:test)
wait_for 10 "writes reached node $C while node $B was down" eval '[ "$(rcli "$(rport "$C")" GET count:test)" = "$V" ]'
sleep 2 # the clock moves on without node $B
for i in 0 1 2; do
  kill -9 "${REDIS_PID[$i]}" "${SENTINEL_PID[$i]}" 2>/dev/null || true
  wait "${REDIS_PID[$i]}" "${SENTINEL_PID[$i]}" 2>/dev/null || true
done
for i in 0 1 2; do start_redis "$i"; start_sentinel "$i"; done
wait_for 40 "cold start: the sentinels agree on a master" eval '[ -n "$(master_node)" ]'
N=$(master_node)
check "cold start: node $B, which was behind, is not the master (node $N is)" [ "$N" != "$B" ]
wait_for 20 "cold start: no write lost (count $V)" eval '[ "$(rcli "$(rport "$N")" GET count:test)" = "$V" ]'
wait_for 30 "cold start: node $B caught up as a replica" eval 'replica_of "$B" "$N" && [ "$(rcli "$(rport "$B")" GET count:test)" = "$V" ]'

# 7. Cold start where the master never comes back: the other two elect, after the wait, the one
# with the newest data, and nothing acknowledged is lost.
M=$(master_node)
V=$(rcli "$(rport "$M")" INCR count:test)
rcli "$(rport "$M")" WAIT 2 2000 >/dev/null
for i in 0 1 2; do
  kill -9 "${REDIS_PID[$i]}" "${SENTINEL_PID[$i]}" 2>/dev/null || true
  wait "${REDIS_PID[$i]}" "${SENTINEL_PID[$i]}" 2>/dev/null || true
done
for i in 0 1 2; do [ "$i" = "$M" ] || { start_redis "$i"; start_sentinel "$i"; }; done
master_among_others() { # master_among_others M: a node other than M is master
  local i
  for i in 0 1 2; do
    if [ "$i" != "$1" ] && [ "$(role "$i")" = master ]; then return 0; fi
  done
  return 1
}
wait_for 40 "two of three: a master is elected after the wait" master_among_others "$M"
for i in 0 1 2; do if [ "$i" != "$M" ] && [ "$(role "$i")" = master ]; then N=$i; fi; done
check "two of three: the election waited for the missing node" grep -q 'election: 2 of 3' "$T"/n*/sentinel.log
wait_for 10 "two of three: no write lost (count $V)" eval '[ "$(rcli "$(rport "$N")" GET count:test)" = "$V" ]'
start_redis "$M"
start_sentinel "$M"
wait_for 30 "the returning node joins as a replica" replica_of "$M" "$N"

# 8. A master that hangs past down-after and comes back (a healed partition) steps down by
# itself as soon as it sees the sentinels name another, with replica-priority 0 until it has
# synced, so one more failover cannot promote it on its old data.
wait_for 30 "all three sentinels agree again" eval '[ -n "$(master_node)" ] && knows_replicas 0 && knows_replicas 1 && knows_replicas 2'
M=$(master_node)
kill -STOP "${REDIS_PID[$M]}"
wait_for 30 "hung master: the sentinels promote another node" eval 'm=$(master_node); [ -n "$m" ] && [ "$m" != "$M" ]'
N=$(master_node)
V=$(rcli "$(rport "$N")" INCR count:test)
kill -CONT "${REDIS_PID[$M]}"
wait_for 10 "the old master steps down by itself" grep -q 'stepping down to replicate' "$T/n$M/redis.log"
wait_for 20 "the old master replicates node $N with the write made meanwhile" \
  eval 'replica_of "$M" "$N" && [ "$(rcli "$(rport "$M")" GET count:test)" = "$V" ]'
wait_for 10 "and may be promoted again once in sync" \
  eval '[ "$(rcli "$(rport "$M")" CONFIG GET replica-priority | sed -n 2p)" = 100 ]'

# 9. Fencing: a master that no majority of sentinels confirms (cut off from them, or a failover
# under way) refuses writes, so a replica it still reaches cannot confirm writes that a failover
# would throw away; it takes them again once the sentinels are back.
wait_for 30 "the sentinels agree before fencing" eval '[ -n "$(master_node)" ]'
M=$(master_node)
for i in 0 1 2; do [ "$i" = "$M" ] || { kill -9 "${SENTINEL_PID[$i]}"; wait "${SENTINEL_PID[$i]}" 2>/dev/null || true; }; done
wait_for 15 "without a majority of sentinels the master refuses writes" \
  eval 'rcli "$(rport "$M")" INCR count:test | grep -q NOREPLICAS'
check "its log says why" grep -q 'no majority of sentinels confirms this master' "$T/n$M/redis.log"
for i in 0 1 2; do [ "$i" = "$M" ] || start_sentinel "$i"; done
wait_for 30 "with the sentinels back it takes writes again" \
  eval 'rcli "$(rport "$M")" INCR count:test | grep -qx "[0-9]*"'

# 10. Every script ran as user operator, every sentinel and replica as its own user: none was
# refused anything (each process's ACL LOG is empty).
for i in 0 1 2; do
  check "no command of the scripts, sentinels or replicas was refused on node $i (ACL LOG: $(acl_denials "$(rport "$i")" | sort -u | paste -sd';'))" \
    eval '[ -z "$(acl_denials "$(rport "$i")")" ]'
  check "nor on sentinel $i (ACL LOG: $(acl_denials "$(sport "$i")" | sort -u | paste -sd';'))" \
    eval '[ -z "$(acl_denials "$(sport "$i")")" ]'
done

if [ "$FAIL" -gt 0 ]; then dump_logs; fi
echo "redis scripts: $(elapsed)s"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
