#!/usr/bin/env bash
# The HA fault harness: brings up deploy/compose/compose.yaml (three Redis + Sentinel "pods" that
# run the chart's files/, two tally in Sentinel mode with replicated durability, HAProxy), and for
# each scenario runs `tally check --json` from the host against HAProxy on 127.0.0.1 while it
# injects the fault. Every scenario must end with lost = 0, duplicated = 0, over-count = 0;
# scenarios 1-5 must have writes back within 10 s of the fault, 6-8 zero failed requests; 9-15
# (the failures users of Sentinel on Kubernetes report: empty volumes, cold starts, node loss,
# two nodes lost, sentinel state lost, a full or failing disk, a flapping partition) state their
# own bounds; 16 (every ACL user's password rotated under load) must fail no request.
# Scenario 17 (the CA and every certificate rotated under load, zero failed requests) runs
# only when named, and on the TLS stack only (TALLY_HA_TLS=1).
#
#   deploy/compose/harness.sh                    all scenarios
#   deploy/compose/harness.sh 3 5                only those
#   deploy/compose/harness.sh --except=10,15     all but those
#   deploy/compose/harness.sh --update-docs      all, then rewrite the results table in docs/ha.md
#
# Needs root (or sudo) for dockerd, which it installs (Debian's docker.io, docker-compose) and
# starts itself (scripts/docker.sh), along with the local stand-in images and the tally image.
# Without root it prints SKIP and exits 0; with CI=true, being unable to run is a failure.
# Everything it creates (containers, the network on TALLY_SUBNET, volumes, the tally image, the
# dockerd it started) is removed on exit, also on failure; per-scenario reports and, on failure,
# container logs stay in target/ha-harness/.
#
#   TALLY_SUBNET      the stack's network            default: 172.31.213.0/24 (TLS: .215.0/24)
#   TALLY_HA_PORT     HAProxy on 127.0.0.1           default: 18080, TLS: 18090 (stats: +324)
#   TALLY_HA_TLS=1    run on the TLS stack (compose.yaml + compose-tls.yaml, certificates of a
#                     throwaway CA made at start by dev-tls.sh): project tallyhatls, its own
#                     subnet, port, image tag and reports (target/ha-harness-tls/), so that it
#                     can run beside the plain stack and harness-cluster.sh (.214.0/24, 18180);
#                     --update-docs is refused
#   TALLY_HA_PROJECT  a second plain stack beside the first (compose project, image tag and
#                     reports in target/ha-harness-PROJECT/); give it its own TALLY_SUBNET and
#                     TALLY_HA_PORT too (docs/ha.md: why CI runs one Sentinel stack at a time).
#   TALLY_HA_RATE     requests per second            default: 300
#   TALLY_HA_KEEP=1   leave the stack (and dockerd) running at the end, for a look around
#   TALLY_BIN         the host `tally` for `tally check` (default: the one in the built image)
set -euo pipefail
# The functions are in harness-lib.sh (the stack, faults) and harness-check.sh (load, verdicts);
# this file holds the scenarios and the run, but for the rotations: 16 in harness-rotation.sh,
# 17 (TLS stack only) in harness-tls.sh.

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=deploy/compose/harness-lib.sh
. "$ROOT/deploy/compose/harness-lib.sh"
# shellcheck source=deploy/compose/harness-check.sh
. "$ROOT/deploy/compose/harness-check.sh"
# shellcheck source=deploy/compose/harness-rotation.sh
. "$ROOT/deploy/compose/harness-rotation.sh"
# shellcheck source=deploy/compose/harness-tls.sh
. "$ROOT/deploy/compose/harness-tls.sh"

# The scenarios: number, seconds of load, how finish_check judges the run, the recovery bound in
# seconds (recover only), the title in the results table. The steps of scenario N are sN below:
# adding a scenario is a row here and a function there.
declare -A LOAD KIND BOUND TITLE
ALL=()
while read -r num load kind bound title; do
  ALL+=("$num") LOAD[$num]=$load KIND[$num]=$kind BOUND[$num]=$bound TITLE[$num]=$title
done <<'EOF_TABLE'
1   32  recover  10  SIGKILL the master's redis, restart after 20 s
2   30  recover  10  Pause the master pod 15 s
3   34  recover  10  Partition the master pod from the others 20 s
4   32  recover  10  SIGKILL the master and another sentinel together
5   40  recover  10  Restart the master pod with a new IP, same name
6   20  nofail   -   Restart one replica under load
7   40  nofail   -   Rolling restart of both tally containers
8   75  nofail   -   Rolling restart of the 3 Redis pods, master last, via preStop
9   55  recover  10  The master returns with an empty volume, at once and after the failover
10  95  recover  30  Cold start of the whole group, one node behind; then without the master
11  40  recover  10  Node loss: a new pod, a new address, an empty disk
12  40  recover  25  Two of three Redis pods lost at once, one back after 15 s
13  25  recover  15  Sentinel state lost: every sentinel restarts at once
14  50  recover  15  A full Redis (existing ids count on), then a failing disk on the master
15  75  refuse   -   A flapping partition of the master: six short cuts, two long ones
16  70  nofail   -   Rotate every ACL user's password under load (next, current + previous, current)
EOF_TABLE
# Only when asked for, and with TALLY_HA_TLS=1 (harness-tls.sh).
LOAD[17]=80 KIND[17]=nofail BOUND[17]=- TITLE[17]="Rotate the CA and every certificate under load over TLS (both CAs, new certificates, new CA)"

parse_scenario_args 37 "$@"

preflight

HA_TLS=${TALLY_HA_TLS:-0}
if [[ " ${SCENARIOS[*]} " == *" 17 "* ]] && [ "$HA_TLS" != 1 ]; then
  echo "scenario 17 rotates TLS certificates: run it with TALLY_HA_TLS=1" >&2
  exit 2
fi
if [ "$HA_TLS" = 1 ]; then
  [ "$UPDATE_DOCS" = 0 ] || { echo "--update-docs: docs/ha.md's table is the plain stack's, not TALLY_HA_TLS=1's" >&2; exit 2; }
  export TALLY_SUBNET=${TALLY_SUBNET:-172.31.215.0/24}
  export TALLY_PORT=${TALLY_HA_PORT:-18090}
  export TALLY_IMAGE_HA=${TALLY_IMAGE_HA:-tally:ha-harness-tls}
  PROJECT=tallyhatls
  # compose() adds it after COMPOSE_FILE (harness-lib.sh).
  COMPOSE_EXTRA=$ROOT/deploy/compose/compose-tls.yaml
  ART=$ROOT/target/ha-harness-tls
else
  export TALLY_SUBNET=${TALLY_SUBNET:-172.31.213.0/24}
  export TALLY_PORT=${TALLY_HA_PORT:-18080}
  PROJECT=${TALLY_HA_PROJECT:-tallyha}
  ART=$ROOT/target/ha-harness
  if [ "$PROJECT" != tallyha ]; then
    [ "$UPDATE_DOCS" = 0 ] || { echo "--update-docs: run it on the default stack" >&2; exit 2; }
    [[ "$PROJECT" =~ ^[a-z0-9]+$ ]] || { echo "TALLY_HA_PROJECT: lower-case letters and digits only" >&2; exit 2; }
    ART=$ROOT/target/ha-harness-$PROJECT
    export TALLY_IMAGE_HA=${TALLY_IMAGE_HA:-tally:ha-harness-$PROJECT}
  fi
fi
export TALLY_LB_STATS_PORT=$((TALLY_PORT + 324))
RATE=${TALLY_HA_RATE:-300}
NET=${PROJECT}_tally
LB=http://127.0.0.1:$TALLY_PORT
STATS=http://127.0.0.1:$TALLY_LB_STATS_PORT
COMPOSE_FILE=$ROOT/deploy/compose/compose.yaml
WORK=$(mktemp -d /tmp/tally-ha.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$ART"
rm -f "$ART"/*.json "$ART"/*.log "$ART"/*.err

STARTED_STACK=0
trap cleanup EXIT
trap 'exit 130' INT TERM

T_START=$SECONDS
if [ "$HA_TLS" = 1 ]; then
  # A new CA and a certificate per pod for its names, for this run only (removed with WORK).
  "$ROOT/deploy/compose/dev-tls.sh" "$WORK/tls"
  export TALLY_TLS_DIR=$WORK/tls
fi
stack_up

# ---------------------------------------------------------------------------------------------
# The scenarios' steps. Each looks at the system, starts the load, and injects its faults at
# offsets from the load's start (T0); fail WHY marks it failed, whatever the counts say.

s1() {
  local m
  m=$(master_index)
  start_load
  step 5 "SIGKILLed redis-$m (the master)" svc kill -s KILL "redis-$m"
  step 25 "started redis-$m again" svc start "redis-$m"
  back_in_sync "$m" "rejoins as a replica" "did not rejoin as a replica"
}

s2() {
  local m
  m=$(master_index)
  start_load
  step 5 "paused pod $m (the master: redis, sentinel, holder)" svc pause "redis-$m" "sentinel-$m" "redis-$m-pod"
  step 20 "unpaused pod $m" svc unpause "redis-$m-pod" "redis-$m" "sentinel-$m"
  back_in_sync "$m" "becomes a replica" "did not become a replica"
}

s3() {
  local m
  m=$(master_index)
  start_load
  step 5 "cut pod $m (the master, its sentinel included) from the other two pods" partition "$m" on
  step 25 "healed the partition" partition "$m" off
  back_in_sync "$m" "becomes a replica" "did not become a replica"
}

s4() {
  local m s
  m=$(master_index)
  s=$(((m + 1) % 3))
  start_load
  step 5 "SIGKILLed redis-$m (the master) and sentinel-$s" svc kill -s KILL "redis-$m" "sentinel-$s"
  step 25 "started redis-$m and sentinel-$s again" svc start "redis-$m" "sentinel-$s"
  back_in_sync "$m" "rejoins as a replica" "did not rejoin as a replica"
}

s5() {
  local m old new
  m=$(master_index)
  old=$(ip_of "redis-$m-pod")
  new=$(new_address "$m")
  start_load
  # The pod's containers die; its holder keeps the old address until the "new pod" replaces it,
  # as a terminating pod keeps its DNS record (publishNotReadyAddresses) until it is gone.
  step 5 "SIGKILLed redis-$m (the master) and sentinel-$m: pod $m is down" svc kill -s KILL "redis-$m" "sentinel-$m"
  step 20 "started pod $m again with a new address $new (was $old)" new_pod "$m" "$new"
  [ "$(ip_of "redis-$m-pod")" = "$new" ] || fail "pod $m did not get $new"
  back_in_sync "$m" "rejoins as a replica" "did not rejoin as a replica"
}

s6() {
  local m r
  m=$(master_index)
  r=$(((m + 1) % 3))
  start_load
  at 5
  event "restart redis-$r (a replica): SIGTERM, start"
  d exec "$(cid "redis-$r")" sh /opt/tally-redis/prestop-redis.sh >/dev/null 2>&1 || true
  svc restart -t 60 "redis-$r"
  back_in_sync "$r" "back in sync" "did not come back in sync"
}

s7() {
  local t
  start_load
  at 3
  for t in tally-1 tally-2; do
    event "SIGTERM $t, wait for it to exit, start it"
    svc stop -t 30 "$t"
    svc start "$t"
    wait_until 30 "$t UP in HAProxy" lb_up "$t" || fail "$t did not come back UP"
    event "$t UP in HAProxy"
  done
}

s8() {
  local m n order=()
  m=$(master_index)
  for n in 2 1 0; do [ "$n" = "$m" ] || order+=("$n"); done
  order+=("$m")
  start_load
  at 3
  # The holder stays: it keeps the pod's name resolvable. In a cluster a name that is gone gets
  # NXDOMAIN at once; Docker's DNS makes such a lookup hang (1 s per query with compose.yaml's
  # dns_opt), and redis-sentinel resolves on its main thread: a few of those lookups in a row put
  # a sentinel in TILT mode for 30 s, and a TILTed sentinel asked to fail over stalls the handover.
  for n in "${order[@]}"; do
    event "restart pod $n$([ "$n" = "$m" ] && echo ' (the master, last)'): preStop hook, SIGTERM, start"
    d exec "$(cid "redis-$n")" sh /opt/tally-redis/prestop-redis.sh >>"$ART/s8-prestop.log" 2>&1 || true
    svc stop -t 60 "redis-$n" "sentinel-$n"
    event "pod $n stopped"
    svc start "redis-$n" "sentinel-$n"
    # As the StatefulSet controller: the next pod only when this one is ready.
    wait_until 60 "pod $n ready" pod_ready "$n" || fail "pod $n not ready"
    event "pod $n ready"
  done
  awk -v a="$(since_t0)" 'BEGIN { exit !(a < 75) }' || fail "the restarts outlasted the 75 s load"
}

s9() {
  local m keys n
  m=$(master_index)
  keys=$(keys_of "$m")
  start_load
  at 5
  svc kill -s KILL "redis-$m"
  mark
  wipe_volume "$m"
  svc start "redis-$m"
  event "redis-$m (the master) SIGKILLed and started at once on an empty volume"
  back_in_sync "$m" "rejoins as a replica" "did not rejoin as a replica"
  at 25
  m=$(master_index)
  svc kill -s KILL "redis-$m"
  mark
  wipe_volume "$m"
  event "redis-$m (the new master) SIGKILLed on an empty volume"
  step 35 "started redis-$m again, after the failover" svc start "redis-$m"
  back_in_sync "$m" "rejoins as a replica" "did not rejoin as a replica"
  n=$(master_index)
  [ "$(keys_of "$n")" -ge "$keys" ] || fail "keys fell from $keys to $(keys_of "$n")"
}

s10() {
  local m b n
  m=$(master_index)
  b=$(((m + 1) % 3))
  start_load
  step 5 "SIGKILLed redis-$b (a replica): it falls behind" svc kill -s KILL "redis-$b"
  step 12 "SIGKILLed every redis and sentinel (a power loss)" all_redis_sentinels kill -s KILL
  step 14 "started them all at once" all_redis_sentinels start
  wait_until 60 "a master is elected" has_master || fail "no master elected"
  n=$(master_index)
  [ "$n" != "$b" ] || fail "redis-$b, which was behind, became master"
  at 40
  m=$(master_index)
  all_redis_sentinels kill -s KILL
  event "SIGKILLed every redis and sentinel again"
  at 42
  for n in 0 1 2; do
    [ "$n" = "$m" ] || svc start "redis-$n" "sentinel-$n"
  done
  event "started all but pod $m (the master): two nodes must form the group"
  wait_until 60 "the other two elect a master" master_other_than "$m" || fail "the other two did not elect"
  svc start "redis-$m" "sentinel-$m"
  event "started pod $m again"
  back_in_sync "$m" "rejoins as a replica" "did not rejoin"
}

s11() {
  local m new
  m=$(master_index)
  new=$(new_address "$m")
  start_load
  at 5
  # As in scenario 5, the holder keeps the name until the new pod replaces it (a lookup of a
  # missing name hangs in Docker's DNS and puts the sentinels in TILT; in a cluster it fails fast).
  svc kill -s KILL "redis-$m" "sentinel-$m"
  mark
  wipe_volume "$m"
  event "pod $m (the master) gone with its volume"
  step 15 "a new pod $m: new address $new, empty volume" new_pod "$m" "$new"
  [ "$(ip_of "redis-$m-pod")" = "$new" ] || fail "pod $m did not get $new"
  back_in_sync "$m" "rejoins as a replica" "did not rejoin"
}

# The outage lasts 15 s by design: writes must be back within 10 s of the first pod's return.
s12() {
  local m a b
  m=$(master_index)
  a=$(((m + 1) % 3))
  b=$(((m + 2) % 3))
  start_load
  # The pods' redis and sentinel die; their holders keep the names (see scenario 11).
  step 5 "pods $a and $b (both replicas) lost at once: the master alone must refuse writes" \
    svc kill -s KILL "redis-$a" "sentinel-$a" "redis-$b" "sentinel-$b"
  step 20 "pod $a back" svc start "redis-$a" "sentinel-$a"
  back_in_sync "$a" "back in sync" "did not come back"
  svc start "redis-$b" "sentinel-$b"
  back_in_sync "$b" "back in sync" "did not come back"
}

# With no sentinel to confirm it the master refuses writes (it fences itself) until they are
# back: a few seconds of 503, never a second master.
s13() {
  local m e n c=()
  m=$(master_index)
  e=$(epoch)
  start_load
  at 5
  for n in 0 1 2; do c+=("$(cid "sentinel-$n")"); done
  d kill -s KILL "${c[@]}" >/dev/null
  mark
  d start "${c[@]}" >/dev/null
  event "every sentinel SIGKILLed and started again (their state is written anew)"
  wait_until 40 "the sentinels agree again" has_master || fail "the sentinels do not agree"
  [ "$(master_index)" = "$m" ] || fail "the master moved from redis-$m to redis-$(master_index)"
  [ "$(role_of "$m")" = master ] || fail "redis-$m is no longer master"
}

s14() {
  local m status limit
  m=$(master_index)
  limit=$(rcli "$m" CONFIG GET maxmemory | sed -n 2p)
  start_load
  step 5 "redis-$m (the master) at maxmemory: existing ids must go on counting" rcli "$m" CONFIG SET maxmemory 1
  status=$(curl -s -o /dev/null -w '%{http_code}' "$LB/brand-new-id-$RANDOM")
  [ "$status" = 507 ] || fail "a new id got $status, not 507"
  step 15 "room again" rcli "$m" CONFIG SET maxmemory "${limit:-0}"
  at 20
  set_data_mode "$m" 500
  rcli "$m" BGSAVE >/dev/null
  event "redis-$m's volume refuses writes; a snapshot failed: MISCONF for writes and PING"
  # Redis answers PING with MISCONF too: the sentinels see the master down and fail over to a
  # node whose disk works. Turned into a replica with its disk error, Redis 7.0 stops itself
  # ("Replica was unable to write command to disk"), and the kubelet would restart it.
  wait_until 20 "writes accepted again (a failover away from the broken disk)" accepts_writes \
    || fail "no write accepted while redis-$m's disk was broken"
  event "writes accepted again"
  at 38
  set_data_mode "$m" 700
  running "redis-$m" || svc start "redis-$m"
  event "redis-$m's volume takes writes again (restarted if it had stopped)"
  back_in_sync "$m" "back as a replica" "did not come back"
}

s15() {
  local e e_short i cut plan
  e=$(epoch)
  start_load
  at 5
  # Cuts shorter than down-after (5 s) must not fail over; longer ones fail over once each, and
  # the node cut off last must not come back as master on old data at the next cut.
  # 2 s of sleep: with the time the iptables rules take, a cut lasts about 3 s, clear of the 5 s
  # after which the sentinels would fail over (a cut right at that edge is the WAIT-1 race of
  # docs/ha.md, not a flap).
  for i in 1 2 3 4 5 6; do
    plan=$(cut_plan "$(master_index)")
    cut_rules "$plan" on
    [ "$i" -gt 1 ] || event "flapping: the master cut off 2 s and healed 3 s, six times"
    sleep 2
    cut_rules "$plan" off
    sleep 3
  done
  e_short=$(epoch)
  for i in 1 2; do
    cut=$(master_index)
    plan=$(cut_plan "$cut")
    cut_rules "$plan" on
    event "the master (redis-$cut) cut off 8 s"
    sleep 8
    cut_rules "$plan" off
    event "healed"
    sleep 8
  done
  local short=$((e_short - e)) long=$(($(epoch) - e_short))
  [ "$short" -eq 0 ] || fail "$short failovers from cuts shorter than down-after"
  [ "$long" -le 2 ] || fail "$long failovers from two long cuts (a loop)"
  NOTE="  scenario 15: $short failover(s) from the short cuts, $long from the long ones"
}

# ---------------------------------------------------------------------------------------------
log "waiting for the stack to be healthy"
wait_healthy 120 || { FAILED=1; exit 1; }
log "stack healthy after $((SECONDS - T_START))s (master: redis-$(master_index))"
if [ "$HA_TLS" = 1 ]; then
  tls_only || { FAILED=1; exit 1; }
  log "TLS only: every Redis and Sentinel answers over TLS, none to plain TCP; tally UP over TLS"
fi
T_SCEN=$SECONDS

for s in "${SCENARIOS[@]}"; do
  log "scenario $s"
  t_s=$SECONDS
  run_scenario "$s"
  healthy_again=1
  wait_healthy 90 || healthy_again=0
  # The time the scenario took, back to health included.
  ROWS[-1]="${ROWS[-1]} $((SECONDS - t_s)) s |"
  if [ "$healthy_again" = 0 ]; then
    log "the system did not return to health after scenario $s: stopping here"
    FAILED=$((FAILED + 1))
    break
  fi
done

TOTAL=$((SECONDS - T_START))
TABLE=$(
  echo "| Scenario | Requests | Failed | Availability | Longest gap | Recovery | Lost | Duplicated | Over-count | Result | Took |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
  printf '%s\n' "${ROWS[@]}"
)
echo
echo "$TABLE"
echo
log "scenarios took $((SECONDS - T_SCEN))s, the whole run ${TOTAL}s"
[ "$UPDATE_DOCS" = 0 ] || update_docs "$TABLE"

echo "ha-harness: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
