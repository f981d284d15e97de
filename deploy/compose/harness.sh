#!/usr/bin/env bash
# The HA fault harness: brings up deploy/compose/compose.yaml (three Redis + Sentinel "pods" that
# run the chart's files/, two tally in Sentinel mode with replicated durability, HAProxy), and for
# each scenario runs `tally check --json` from the host against HAProxy on 127.0.0.1 while it
# injects the fault. Every scenario must end with lost = 0, duplicated = 0, over-count = 0;
# scenarios 1-5 must have writes back within 10 s of the fault, 6-8 zero failed requests; 9-15
# (the failures users of Sentinel on Kubernetes report: empty volumes, cold starts, node loss,
# two nodes lost, sentinel state lost, a full or failing disk, a flapping partition) state their
# own bounds.
#
#   deploy/compose/harness.sh                    all scenarios
#   deploy/compose/harness.sh 3 5                only those
#   deploy/compose/harness.sh --update-docs      all, then rewrite the results table in docs/ha.md
#
# Needs root (or sudo) for dockerd, which it installs (Debian's docker.io, docker-compose) and
# starts itself (scripts/docker.sh), along with the local stand-in images and the tally image.
# Without root it prints SKIP and exits 0; with CI=true, being unable to run is a failure.
# Everything it creates (containers, the network on TALLY_SUBNET, volumes, the tally image, the
# dockerd it started) is removed on exit, also on failure; per-scenario reports and, on failure,
# container logs stay in target/ha-harness/.
#
#   TALLY_SUBNET      the stack's network            default: 172.31.213.0/24
#   TALLY_HA_PORT     HAProxy on 127.0.0.1           default: 18080 (stats: +324)
#   TALLY_HA_RATE     requests per second            default: 300
#   TALLY_HA_KEEP=1   leave the stack (and dockerd) running at the end, for a look around
#   TALLY_BIN         the host `tally` for `tally check` (default: the one in the built image)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/docker.sh
. "$ROOT/scripts/docker.sh"

UPDATE_DOCS=0
SCENARIOS=()
for arg in "$@"; do
  case "$arg" in
    --update-docs) UPDATE_DOCS=1 ;;
    [1-9] | 1[0-5]) SCENARIOS+=("$arg") ;;
    -h | --help)
      sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)

skip_or_fail() {
  if [ "${CI:-}" = true ]; then
    echo "FAIL: HA harness cannot run under CI=true: $*"
    exit 1
  fi
  echo "SKIP: HA harness: $*"
  exit 0
}
if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
  skip_or_fail "needs root (or password-less sudo) to run dockerd"
fi
if ! command -v apt-get >/dev/null 2>&1 && [ ! -x /usr/sbin/dockerd ]; then
  skip_or_fail "no Docker and no apt-get to install Debian's docker.io"
fi

export TALLY_SUBNET=${TALLY_SUBNET:-172.31.213.0/24}
export TALLY_PORT=${TALLY_HA_PORT:-18080}
export TALLY_LB_STATS_PORT=$((TALLY_PORT + 324))
RATE=${TALLY_HA_RATE:-300}
PROJECT=tallyha
NET=${PROJECT}_tally
LB=http://127.0.0.1:$TALLY_PORT
STATS=http://127.0.0.1:$TALLY_LB_STATS_PORT
COMPOSE_FILE=$ROOT/deploy/compose/compose.yaml
ART=$ROOT/target/ha-harness
WORK=$(mktemp -d /tmp/tally-ha.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$ART"
rm -f "$ART"/*.json "$ART"/*.log "$ART"/*.err

log() { printf '[harness %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

compose() {
  if [ -x /usr/bin/docker-compose ] || command -v docker-compose >/dev/null 2>&1; then
    docker-compose -p "$PROJECT" -f "$COMPOSE_FILE" "$@"
  else
    "$DOCKER" compose -p "$PROJECT" -f "$COMPOSE_FILE" "$@"
  fi
}
d() { "$DOCKER" "$@"; }

STARTED_STACK=0
cleanup() {
  local rc=$?
  set +e
  if [ "${TALLY_HA_KEEP:-0}" = 1 ]; then
    log "TALLY_HA_KEEP=1: leaving the stack up (DOCKER_HOST=$DOCKER_HOST, compose -p $PROJECT)"
    return
  fi
  if [ "$STARTED_STACK" = 1 ]; then
    if [ "$rc" -ne 0 ] || [ "${FAILED:-0}" -gt 0 ]; then save_logs; fi
    # A paused container cannot be removed: unpause whatever a failed scenario left paused.
    d ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter status=paused | xargs -r "$DOCKER" unpause >/dev/null 2>&1
    compose down -v --remove-orphans -t 5 >/dev/null 2>&1
    d network rm "$NET" >/dev/null 2>&1
    d rmi "$TALLY_IMAGE" >/dev/null 2>&1
  fi
  if [ "$DOCKERD_STARTED" = 1 ]; then docker_down; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The container id of a compose service, looked up once.
declare -A CID
cid() {
  if [ -z "${CID[$1]:-}" ]; then CID[$1]=$(compose ps -q "$1"); fi
  echo "${CID[$1]}"
}

save_logs() {
  local s
  for s in redis-0 sentinel-0 redis-1 sentinel-1 redis-2 sentinel-2 tally-1 tally-2 lb; do
    d logs --timestamps "$(cid "$s")" >"$ART/$s.log" 2>&1
  done
  log "container logs saved in $ART"
}

# ---------------------------------------------------------------------------------------------
# Set up: dockerd, images, the host's tally, the stack.
T_START=$SECONDS
docker_up
need_packages jq:jq curl:curl nsenter:util-linux iptables:iptables
build_standins
image_env
export TALLY_IMAGE=${TALLY_IMAGE_HA:-tally:ha-harness}
build_tally

if [ -z "${TALLY_BIN:-}" ]; then
  c=$(d create "$TALLY_IMAGE")
  d cp "$c:/usr/local/bin/tally" "$WORK/tally" >/dev/null
  d rm "$c" >/dev/null
  TALLY_BIN=$WORK/tally
fi
"$TALLY_BIN" --version >/dev/null

# A fresh password for this run, readable by the containers' user.
head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$WORK/redis-password"
chmod 644 "$WORK/redis-password"
export TALLY_REDIS_PASSWORD_FILE=$WORK/redis-password

# Leftovers of an interrupted run.
compose down -v --remove-orphans -t 1 >/dev/null 2>&1 || true
STARTED_STACK=1
log "starting the stack (project $PROJECT, subnet $TALLY_SUBNET, HAProxy on $LB)"
compose up -d --no-build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; exit 1; }
note_network "$NET"

# ---------------------------------------------------------------------------------------------
# Looking at the system.

# rcli N ARGS...: redis-cli against redis-N, inside its container (the password from the secret)
# shellcheck disable=SC2016 # $(cat ...) and "$@" expand in the container's shell
rcli() {
  local n=$1
  shift
  timeout 5 "$DOCKER" exec "$(cid "redis-$n")" sh -c \
    'REDISCLI_AUTH=$(cat /run/secrets/redis-password) exec redis-cli -p 6379 "$@"' sh "$@" 2>/dev/null | tr -d '\r'
}
# shellcheck disable=SC2016 # as rcli
scli() {
  local n=$1
  shift
  timeout 5 "$DOCKER" exec "$(cid "sentinel-$n")" sh -c \
    'REDISCLI_AUTH=$(cat /run/secrets/redis-password) exec redis-cli -p 26379 "$@"' sh "$@" 2>/dev/null | tr -d '\r'
}
running() { [ "$(d inspect -f '{{.State.Status}}' "$(cid "$1")" 2>/dev/null)" = running ]; }
ordinal_of() { sed -n 's/^tally-redis-\([0-9]\).*/\1/p'; }

# master_index: the node the majority of the sentinels name (only answering sentinels count)
master_index() {
  local n
  for n in 0 1 2; do
    running "sentinel-$n" || continue
    scli "$n" SENTINEL get-master-addr-by-name mymaster | head -n 1 | ordinal_of
  done | sort | uniq -c | sort -rn | awk '$1 >= 2 { print $2; exit }'
}
role_of() { rcli "$1" ROLE | head -n 1; }
info_field() { rcli "$1" INFO "$2" | sed -n "s/^$3://p"; }
lb_status() { curl -s --max-time 2 "$STATS/;csv" | awk -F, -v s="$1" '$1 == "tally" && $2 == s { print $18 }'; }
ip_of() { d inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$(cid "$1")"; }

# healthy: all nine Redis containers running; the three sentinels name the same master, see it
# up (flags=master) with 2 replicas and 2 other sentinels, and none is in TILT mode; that master
# has both replicas online; both tally servers UP in HAProxy. (Few docker calls per pass: they
# are slow on a busy machine.)
healthy() {
  local up n out m="" name flags slaves others r s
  up=$(d ps --filter "label=com.docker.compose.project=$PROJECT" --filter status=running \
    --format '{{.Label "com.docker.compose.service"}}')
  for n in redis-0 sentinel-0 redis-1 sentinel-1 redis-2 sentinel-2 redis-0-pod redis-1-pod redis-2-pod; do
    grep -qx "$n" <<<"$up" || { WHY="$n not running"; return 1; }
  done
  for n in 0 1 2; do
    out=$(scli "$n" SENTINEL master mymaster | paste - -)
    name=$(awk -F'\t' '$1 == "ip" { print $2 }' <<<"$out" | ordinal_of)
    flags=$(awk -F'\t' '$1 == "flags" { print $2 }' <<<"$out")
    slaves=$(awk -F'\t' '$1 == "num-slaves" { print $2 }' <<<"$out")
    others=$(awk -F'\t' '$1 == "num-other-sentinels" { print $2 }' <<<"$out")
    if [ -z "$name" ] || { [ -n "$m" ] && [ "$name" != "$m" ]; }; then
      WHY="sentinel-$n names '$name', another names '$m'"
      return 1
    fi
    m=$name
    if [ "$flags" != master ] || [ "$slaves" != 2 ] || [ "$others" != 2 ]; then
      WHY="sentinel-$n: flags=$flags num-slaves=$slaves num-other-sentinels=$others"
      return 1
    fi
    # A sentinel whose process was paused (scenario 2) stays in TILT for 30 s and takes no part
    # in a failover meanwhile: the next scenario would measure that, not its own fault.
    if scli "$n" INFO sentinel | grep -q '^sentinel_tilt:1'; then
      WHY="sentinel-$n is in TILT mode"
      return 1
    fi
  done
  out=$(rcli "$m" INFO replication)
  grep -q '^role:master' <<<"$out" || { WHY="redis-$m is not master"; return 1; }
  r=$(grep -c 'state=online' <<<"$out" || true)
  [ "$r" = 2 ] || { WHY="master redis-$m has $r online replicas"; return 1; }
  out=$(curl -s --max-time 2 "$STATS/;csv")
  for s in tally-1 tally-2; do
    r=$(awk -F, -v s="$s" '$1 == "tally" && $2 == s { print $18 }' <<<"$out")
    [ "$r" = UP ] || { WHY="$s is '$r' in HAProxy"; return 1; }
  done
  WHY=""
}
wait_healthy() { # wait_healthy SECONDS
  local deadline=$((SECONDS + $1))
  until healthy; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "not healthy after $1s: $WHY"
      return 1
    fi
    sleep 1
  done
}
# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND once a second
wait_until() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then log "timed out ($1s) waiting for: $what"; return 1; fi
    sleep 1
  done
}
lb_up() { [ "$(lb_status "$1")" = UP ]; }
# pod_ready N: the chart's readiness probes of both containers of pod N pass
pod_ready() {
  d exec "$(cid "redis-$1")" sh /opt/tally-redis/probe.sh redis-ready >/dev/null 2>&1 \
    && d exec "$(cid "sentinel-$1")" sh /opt/tally-redis/probe.sh sentinel-ready >/dev/null 2>&1
}
is_replica_in_sync() { [ "$(role_of "$1")" = slave ] && [ "$(info_field "$1" replication master_link_status)" = up ]; }

# ---------------------------------------------------------------------------------------------
# Load and timing. The check starts at T0; faults are placed at offsets from it.
now() { echo "$EPOCHREALTIME"; }
since_t0() { awk -v a="$(now)" -v b="$T0" 'BEGIN { printf "%.2f", a - b }'; }
at() { # at SECONDS: sleeps until T0 + SECONDS
  local left
  left=$(awk -v a="$(now)" -v b="$T0" -v t="$1" 'BEGIN { l = b + t - a; printf "%.3f", (l > 0 ? l : 0) }')
  sleep "$left"
}
EVENTS=()
event() { # event DESCRIPTION: notes the time a fault action took effect (call it right after)
  local t
  t=$(since_t0)
  EVENTS+=("$t")
  log "  t=${t}s $*"
}

start_check() { # start_check NAME DURATION
  CHECK_OUT=$ART/$1.json
  EVENTS=()
  T0=$(now)
  "$TALLY_BIN" check --target "$LB" --ids 20 --concurrency 16 --rate "$RATE" --duration "$2s" \
    --timeout 3s --settle-timeout 30s --json >"$CHECK_OUT" 2>"$ART/$1.err" &
  CHECK_PID=$!
}

FAILED=0
PASSED=0
ROWS=()
# finish_check NUM TITLE KIND EXTRA [BOUND]: waits for the check, judges it, adds a table row.
#   KIND recover: writes back within BOUND (default 10) s of the fault; KIND nofail: zero failed
#   requests; KIND refuse: requests may fail while the system cannot guarantee them (only
#   lost, duplicated and over-count are judged, and EXTRA)
finish_check() {
  local num=$1 title=$2 kind=$3 extra=${4:-} bound=${5:-10} rc=0
  wait "$CHECK_PID" || rc=$?
  if ! jq -e . "$CHECK_OUT" >/dev/null 2>&1; then
    log "scenario $num: tally check gave no report (exit $rc): $(tail -n 5 "$ART/s$num.err" 2>/dev/null)"
    ROWS+=("| $num. $title | - | - | - | - | - | - | - | - | **FAIL** (no report) |")
    FAILED=$((FAILED + 1))
    return 0
  fi
  local requests ok failed avail gap gap_s lost dup over recovery verdict=PASS why=()
  read -r requests ok avail gap gap_s lost dup over < <(jq -r \
    '[.requests, .ok, .availability_pct, .longest_gap_ms, .longest_gap_start_s, .lost, .duplicated, .over_count] | @tsv' "$CHECK_OUT")
  failed=$((requests - ok))
  # Recovery: from the last fault action that came before the longest gap began (0.5 s slack)
  # to the end of that gap, i.e. to the first acknowledged increment after it.
  recovery=$(printf '%s\n' "${EVENTS[@]}" | awk -v s="$gap_s" -v g="$gap" '
    { if (NR == 1 || $1 <= s + 0.5) e = $1 }
    END { r = s + g / 1000 - e; printf "%.1f", (r > 0 ? r : 0) }')
  # Nothing failed: there was nothing to recover from.
  [ "$failed" != 0 ] || recovery=0.0
  [ "$lost" = 0 ] || why+=("lost $lost")
  [ "$dup" = 0 ] || why+=("duplicated $dup")
  [ "$over" = 0 ] || why+=("over-count $over")
  [ "$requests" -gt 0 ] || why+=("no requests")
  if [ "$kind" = recover ]; then
    awk -v r="$recovery" -v b="$bound" 'BEGIN { exit !(r <= b) }' || why+=("recovery ${recovery}s > ${bound}s")
  elif [ "$kind" = nofail ]; then
    [ "$failed" = 0 ] || why+=("$failed failed requests")
  fi
  [ -z "$extra" ] || why+=("$extra")
  if [ ${#why[@]} -gt 0 ]; then
    local joined
    joined=$(printf '%s, ' "${why[@]}")
    verdict="**FAIL**: ${joined%, }"
    FAILED=$((FAILED + 1))
    log "scenario $num FAILED: ${why[*]}"
  else
    PASSED=$((PASSED + 1))
  fi
  local rec_col=${recovery}s
  [ "$kind" = recover ] || rec_col="- (${failed} failed)"
  [ "$kind" != recover ] || [ "$bound" = 10 ] || rec_col="${recovery}s (bound ${bound}s)"
  ROWS+=("$(printf '| %s. %s | %s | %s | %.2f %% | %.1f s | %s | %s | %s | %s | %s |' \
    "$num" "$title" "$requests" "$failed" "$avail" "$(awk -v g="$gap" 'BEGIN { print g / 1000 }')" \
    "$rec_col" "$lost" "$dup" "$over" "$verdict")")
  log "scenario $num: requests $requests, failed $failed, availability ${avail}%, longest gap ${gap}ms at ${gap_s}s, recovery ${recovery}s, lost $lost, duplicated $dup, over-count $over: $verdict"
}

# pod_ctl ACTION N: docker ACTION on the three containers of pod N (holder last on stop/kill)
pod_ctl() {
  case "$1" in
    start | unpause) d "$1" "$(cid "redis-$2-pod")" "$(cid "redis-$2")" "$(cid "sentinel-$2")" >/dev/null ;;
    *) d "$@" "$(cid "redis-$2")" "$(cid "sentinel-$2")" "$(cid "redis-$2-pod")" >/dev/null ;;
  esac
}
# This is `pod_ctl` with extra docker arguments before the containers (e.g. stop -t 60).
pod_do() {
  local n=$1
  shift
  d "$@" "$(cid "redis-$n")" "$(cid "sentinel-$n")" "$(cid "redis-$n-pod")" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# The scenarios.

s1() {
  local m
  m=$(master_index)
  start_check s1 32
  at 5
  d kill -s KILL "$(cid "redis-$m")" >/dev/null
  event "SIGKILLed redis-$m (the master)"
  at 25
  d start "$(cid "redis-$m")" >/dev/null
  event "started redis-$m again"
  local extra=""
  wait_until 40 "redis-$m rejoins as a replica" is_replica_in_sync "$m" || extra="redis-$m did not rejoin as a replica"
  finish_check 1 "SIGKILL the master's redis, restart after 20 s" recover "$extra"
}

s2() {
  local m
  m=$(master_index)
  start_check s2 30
  at 5
  pod_do "$m" pause
  event "paused pod $m (the master: redis, sentinel, holder)"
  at 20
  pod_ctl unpause "$m"
  event "unpaused pod $m"
  local extra=""
  wait_until 40 "redis-$m becomes a replica" is_replica_in_sync "$m" || extra="redis-$m did not become a replica"
  finish_check 2 "Pause the master pod 15 s" recover "$extra"
}

partition() { # partition N on|off: cut pod N from the two other pods (tally and HAProxy still reach it)
  cut_rules "$(cut_plan "$1")" "$2"
}
# cut_plan N: "PID IP IP" for pod N: its network namespace and the other pods' addresses, looked
# up before a cut so that cutting and healing take one command each (scenario 15 times them)
cut_plan() {
  local o ips=""
  for o in 0 1 2; do [ "$o" = "$1" ] || ips="$ips $(ip_of "redis-$o-pod")"; done
  echo "$(d inspect -f '{{.State.Pid}}' "$(cid "redis-$1-pod")")$ips"
}
cut_rules() { # cut_rules "PID IP..." on|off
  local op=-I pid ips ip rules=""
  [ "$2" = on ] || op=-D
  read -r pid ips <<<"$1"
  for ip in $ips; do rules="$rules iptables $op INPUT -s $ip -j DROP; iptables $op OUTPUT -d $ip -j DROP;"; done
  as_root nsenter -t "$pid" -n sh -c "$rules"
}

s3() {
  local m
  m=$(master_index)
  start_check s3 34
  at 5
  partition "$m" on
  event "cut pod $m (the master, its sentinel included) from the other two pods"
  at 25
  partition "$m" off
  event "healed the partition"
  local extra=""
  wait_until 40 "redis-$m becomes a replica" is_replica_in_sync "$m" || extra="redis-$m did not become a replica"
  finish_check 3 "Partition the master pod from the others 20 s" recover "$extra"
}

s4() {
  local m s
  m=$(master_index)
  s=$(((m + 1) % 3))
  start_check s4 32
  at 5
  d kill -s KILL "$(cid "redis-$m")" "$(cid "sentinel-$s")" >/dev/null
  event "SIGKILLed redis-$m (the master) and sentinel-$s"
  at 25
  d start "$(cid "redis-$m")" "$(cid "sentinel-$s")" >/dev/null
  event "started redis-$m and sentinel-$s again"
  local extra=""
  wait_until 40 "redis-$m rejoins as a replica" is_replica_in_sync "$m" || extra="redis-$m did not rejoin as a replica"
  finish_check 4 "SIGKILL the master and another sentinel together" recover "$extra"
}

# new_address N: an address for pod N's next incarnation, on the stack's subnet
new_address() {
  local old last
  old=$(ip_of "redis-$1-pod")
  last=${old##*.}
  echo "${old%.*}.$((last >= 200 ? last - 100 : 200 + $1))"
}
# new_pod N ADDRESS: pod N replaced by a new one with ADDRESS and the same names (its holder
# killed and reconnected, then all three containers started)
new_pod() {
  local aliases=(--alias "tally-redis-$1" --alias "tally-redis-$1.tally-redis-headless")
  d kill -s KILL "$(cid "redis-$1-pod")" >/dev/null
  d network disconnect -f "$NET" "$(cid "redis-$1-pod")"
  d network connect --ip "$2" "${aliases[@]}" "$NET" "$(cid "redis-$1-pod")"
  pod_ctl start "$1"
}

s5() {
  local m old new
  m=$(master_index)
  old=$(ip_of "redis-$m-pod")
  new=$(new_address "$m")
  start_check s5 40
  at 5
  # The pod's containers die; its holder keeps the old address until the "new pod" replaces it,
  # as a terminating pod keeps its DNS record (publishNotReadyAddresses) until it is gone.
  d kill -s KILL "$(cid "redis-$m")" "$(cid "sentinel-$m")" >/dev/null
  event "SIGKILLed redis-$m (the master) and sentinel-$m: pod $m is down"
  at 20
  new_pod "$m" "$new"
  event "started pod $m again with a new address $new (was $old)"
  local extra=""
  [ "$(ip_of "redis-$m-pod")" = "$new" ] || extra="pod $m did not get $new"
  wait_until 40 "redis-$m rejoins as a replica" is_replica_in_sync "$m" || extra="redis-$m did not rejoin as a replica"
  finish_check 5 "Restart the master pod with a new IP, same name" recover "$extra"
}

s6() {
  local m r
  m=$(master_index)
  r=$(((m + 1) % 3))
  start_check s6 20
  at 5
  event "restart redis-$r (a replica): SIGTERM, start"
  d exec "$(cid "redis-$r")" sh /opt/tally-redis/prestop-redis.sh >/dev/null 2>&1 || true
  d restart -t 60 "$(cid "redis-$r")" >/dev/null
  local extra=""
  wait_until 40 "redis-$r back in sync" is_replica_in_sync "$r" || extra="redis-$r did not come back in sync"
  finish_check 6 "Restart one replica under load" nofail "$extra"
}

s7() {
  start_check s7 40
  at 3
  local t extra=""
  for t in tally-1 tally-2; do
    event "SIGTERM $t, wait for it to exit, start it"
    d stop -t 30 "$(cid "$t")" >/dev/null
    d start "$(cid "$t")" >/dev/null
    wait_until 30 "$t UP in HAProxy" lb_up "$t" || extra="$t did not come back UP"
    event "$t UP in HAProxy"
  done
  finish_check 7 "Rolling restart of both tally containers" nofail "$extra"
}

s8() {
  local m n order=() extra=""
  m=$(master_index)
  for n in 2 1 0; do [ "$n" = "$m" ] || order+=("$n"); done
  order+=("$m")
  start_check s8 75
  at 3
  # The holder stays: it keeps the pod's name resolvable. In a cluster a name that is gone gets
  # NXDOMAIN at once; Docker's DNS makes such a lookup hang (1 s per query with compose.yaml's
  # dns_opt), and redis-sentinel resolves on its main thread: a few of those lookups in a row put
  # a sentinel in TILT mode for 30 s, and a TILTed sentinel asked to fail over stalls the handover.
  for n in "${order[@]}"; do
    event "restart pod $n$([ "$n" = "$m" ] && echo ' (the master, last)'): preStop hook, SIGTERM, start"
    d exec "$(cid "redis-$n")" sh /opt/tally-redis/prestop-redis.sh >>"$ART/s8-prestop.log" 2>&1 || true
    d stop -t 60 "$(cid "redis-$n")" "$(cid "sentinel-$n")" >/dev/null
    event "pod $n stopped"
    d start "$(cid "redis-$n")" "$(cid "sentinel-$n")" >/dev/null
    # As the StatefulSet controller: the next pod only when this one is ready.
    wait_until 60 "pod $n ready" pod_ready "$n" || extra="pod $n not ready"
    event "pod $n ready"
  done
  local left
  left=$(awk -v a="$(since_t0)" 'BEGIN { print (a < 75 ? "ok" : "late") }')
  [ "$left" = ok ] || extra="${extra:+$extra, }the restarts outlasted the 75 s load"
  finish_check 8 "Rolling restart of the 3 Redis pods, master last, via preStop" nofail "$extra"
}

# ---------------------------------------------------------------------------------------------
# Round 2: the failures users of Sentinel on Kubernetes report most.

# wipe_volume N: the data of pod N gone (a new volume, or persistence off); its redis is stopped
wipe_volume() {
  d run --rm --network none --user 0 --entrypoint sh -v "${PROJECT}_redis-data-$1:/data" \
    "$REDIS_IMAGE" -c 'rm -rf /data/appendonlydir /data/dump.rdb /data/temp-*' >/dev/null
}
has_master() { [ -n "$(master_index)" ]; }
master_other_than() { # master_other_than N: the sentinels agree on a master that is not N
  local n
  n=$(master_index)
  [ -n "$n" ] && [ "$n" != "$1" ]
}
# keys_of N: the keys redis-N holds in tally's database
keys_of() { rcli "$1" DBSIZE; }
# epoch: the sentinels' config epoch of the master (one more per failover)
epoch() {
  local n
  for n in 0 1 2; do
    scli "$n" SENTINEL master mymaster | paste - - | awk -F'\t' '$1 == "config-epoch" { print $2 }'
  done | sort -n | tail -n 1
}
# all_redis_sentinels ACTION...: docker ACTION on every redis and sentinel container (not the
# holders); `kill` only on those running, so a node already down is no error
all_redis_sentinels() {
  local n s c=()
  for n in 0 1 2; do
    for s in "redis-$n" "sentinel-$n"; do
      if [ "$1" != kill ] || running "$s"; then c+=("$(cid "$s")"); fi
    done
  done
  d "$@" "${c[@]}" >/dev/null
}

s9() {
  local m keys n extra=""
  m=$(master_index)
  keys=$(keys_of "$m")
  start_check s9 55
  at 5
  d kill -s KILL "$(cid "redis-$m")" >/dev/null
  wipe_volume "$m"
  d start "$(cid "redis-$m")" >/dev/null
  event "redis-$m (the master) SIGKILLed and started at once on an empty volume"
  wait_until 40 "redis-$m rejoins as a replica" is_replica_in_sync "$m" || extra="redis-$m did not rejoin as a replica"
  at 25
  m=$(master_index)
  d kill -s KILL "$(cid "redis-$m")" >/dev/null
  wipe_volume "$m"
  event "redis-$m (the new master) SIGKILLed on an empty volume"
  at 35
  d start "$(cid "redis-$m")" >/dev/null
  event "started redis-$m again, after the failover"
  wait_until 40 "redis-$m rejoins as a replica" is_replica_in_sync "$m" || extra="${extra:+$extra, }redis-$m did not rejoin as a replica"
  n=$(master_index)
  [ "$(keys_of "$n")" -ge "$keys" ] || extra="${extra:+$extra, }keys fell from $keys to $(keys_of "$n")"
  finish_check 9 "The master returns with an empty volume, at once and after the failover" recover "$extra"
}

s10() {
  local m b extra="" n
  m=$(master_index)
  b=$(((m + 1) % 3))
  start_check s10 95
  at 5
  d kill -s KILL "$(cid "redis-$b")" >/dev/null
  event "SIGKILLed redis-$b (a replica): it falls behind"
  at 12
  all_redis_sentinels kill -s KILL
  event "SIGKILLed every redis and sentinel (a power loss)"
  at 14
  all_redis_sentinels start
  event "started them all at once"
  wait_until 60 "a master is elected" has_master || extra="no master elected"
  n=$(master_index)
  [ "$n" != "$b" ] || extra="${extra:+$extra, }redis-$b, which was behind, became master"
  at 40
  m=$(master_index)
  all_redis_sentinels kill -s KILL
  event "SIGKILLed every redis and sentinel again"
  at 42
  for n in 0 1 2; do
    [ "$n" = "$m" ] || d start "$(cid "redis-$n")" "$(cid "sentinel-$n")" >/dev/null
  done
  event "started all but pod $m (the master): two nodes must form the group"
  wait_until 60 "the other two elect a master" master_other_than "$m" \
    || extra="${extra:+$extra, }the other two did not elect"
  d start "$(cid "redis-$m")" "$(cid "sentinel-$m")" >/dev/null
  event "started pod $m again"
  wait_until 40 "redis-$m rejoins as a replica" is_replica_in_sync "$m" || extra="${extra:+$extra, }redis-$m did not rejoin"
  finish_check 10 "Cold start of the whole group, one node behind; then without the master" recover "$extra" 30
}

s11() {
  local m new extra=""
  m=$(master_index)
  new=$(new_address "$m")
  start_check s11 40
  at 5
  # As in scenario 5, the holder keeps the name until the new pod replaces it (a lookup of a
  # missing name hangs in Docker's DNS and puts the sentinels in TILT; in a cluster it fails fast).
  d kill -s KILL "$(cid "redis-$m")" "$(cid "sentinel-$m")" >/dev/null
  wipe_volume "$m"
  event "pod $m (the master) gone with its volume"
  at 15
  new_pod "$m" "$new"
  event "a new pod $m: new address $new, empty volume"
  [ "$(ip_of "redis-$m-pod")" = "$new" ] || extra="pod $m did not get $new"
  wait_until 40 "redis-$m rejoins as a replica" is_replica_in_sync "$m" || extra="${extra:+$extra, }redis-$m did not rejoin"
  finish_check 11 "Node loss: a new pod, a new address, an empty disk" recover "$extra"
}

s12() {
  local m a b extra=""
  m=$(master_index)
  a=$(((m + 1) % 3))
  b=$(((m + 2) % 3))
  start_check s12 40
  at 5
  # The pods' redis and sentinel die; their holders keep the names (see scenario 11).
  d kill -s KILL "$(cid "redis-$a")" "$(cid "sentinel-$a")" "$(cid "redis-$b")" "$(cid "sentinel-$b")" >/dev/null
  event "pods $a and $b (both replicas) lost at once: the master alone must refuse writes"
  at 20
  d start "$(cid "redis-$a")" "$(cid "sentinel-$a")" >/dev/null
  event "pod $a back"
  wait_until 40 "redis-$a back in sync" is_replica_in_sync "$a" || extra="redis-$a did not come back"
  d start "$(cid "redis-$b")" "$(cid "sentinel-$b")" >/dev/null
  wait_until 40 "redis-$b back in sync" is_replica_in_sync "$b" || extra="${extra:+$extra, }redis-$b did not come back"
  # The outage lasts 15 s by design: writes must be back within 10 s of the first pod's return.
  finish_check 12 "Two of three Redis pods lost at once, one back after 15 s" recover "$extra" 25
}

s13() {
  local m e extra=""
  m=$(master_index)
  e=$(epoch)
  start_check s13 25
  at 5
  local n c=()
  for n in 0 1 2; do c+=("$(cid "sentinel-$n")"); done
  d kill -s KILL "${c[@]}" >/dev/null
  d start "${c[@]}" >/dev/null
  event "every sentinel SIGKILLed and started again (their state is written anew)"
  wait_until 40 "the sentinels agree again" has_master || extra="the sentinels do not agree"
  [ "$(master_index)" = "$m" ] || extra="${extra:+$extra, }the master moved from redis-$m to redis-$(master_index)"
  [ "$(role_of "$m")" = master ] || extra="${extra:+$extra, }redis-$m is no longer master"
  # With no sentinel to confirm it the master refuses writes (it fences itself) until they are
  # back: a few seconds of 503, never a second master.
  finish_check 13 "Sentinel state lost: every sentinel restarts at once" recover "$extra" 15
}

accepts_writes() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$LB/after-the-disk")" = 200 ]; }
# set_data_mode N MODE: chmod MODE on pod N's data directory, from a helper container (works
# whether or not redis-N runs)
set_data_mode() {
  d run --rm --network none --user 0 --entrypoint chmod -v "${PROJECT}_redis-data-$1:/data" \
    "$REDIS_IMAGE" "$2" /data >/dev/null
}

s14() {
  local m extra="" status limit
  m=$(master_index)
  limit=$(rcli "$m" CONFIG GET maxmemory | sed -n 2p)
  start_check s14 50
  at 5
  rcli "$m" CONFIG SET maxmemory 1 >/dev/null
  event "redis-$m (the master) at maxmemory: existing ids must go on counting"
  status=$(curl -s -o /dev/null -w '%{http_code}' "$LB/brand-new-id-$RANDOM")
  [ "$status" = 507 ] || extra="a new id got $status, not 507"
  at 15
  rcli "$m" CONFIG SET maxmemory "${limit:-0}" >/dev/null
  event "room again"
  at 20
  set_data_mode "$m" 500
  rcli "$m" BGSAVE >/dev/null
  event "redis-$m's volume refuses writes; a snapshot failed: MISCONF for writes and PING"
  # Redis answers PING with MISCONF too: the sentinels see the master down and fail over to a
  # node whose disk works. Turned into a replica with its disk error, Redis 7.0 stops itself
  # ("Replica was unable to write command to disk"), and the kubelet would restart it.
  wait_until 20 "writes accepted again (a failover away from the broken disk)" accepts_writes \
    || extra="${extra:+$extra, }no write accepted while redis-$m's disk was broken"
  event "writes accepted again"
  at 38
  set_data_mode "$m" 700
  running "redis-$m" || d start "$(cid "redis-$m")" >/dev/null
  event "redis-$m's volume takes writes again (restarted if it had stopped)"
  wait_until 40 "redis-$m back as a replica" is_replica_in_sync "$m" || extra="${extra:+$extra, }redis-$m did not come back"
  finish_check 14 "A full Redis (existing ids count on), then a failing disk on the master" recover "$extra" 15
}

s15() {
  local e e_short i cut extra=""
  e=$(epoch)
  start_check s15 75
  at 5
  # Cuts shorter than down-after (5 s) must not fail over; longer ones fail over once each, and
  # the node cut off last must not come back as master on old data at the next cut.
  # 2 s of sleep: with the time the iptables rules take, a cut lasts about 3 s, clear of the 5 s
  # after which the sentinels would fail over (a cut right at that edge is the WAIT-1 race of
  # docs/ha.md, not a flap).
  local plan
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
  [ "$short" -eq 0 ] || extra="$short failovers from cuts shorter than down-after"
  [ "$long" -le 2 ] || extra="${extra:+$extra, }$long failovers from two long cuts (a loop)"
  finish_check 15 "A flapping partition of the master: six short cuts, two long ones" refuse "$extra"
  log "  scenario 15: $short failover(s) from the short cuts, $long from the long ones"
}

# ---------------------------------------------------------------------------------------------
log "waiting for the stack to be healthy"
wait_healthy 120 || { FAILED=1; exit 1; }
log "stack healthy after $((SECONDS - T_START))s (master: redis-$(master_index))"
T_SCEN=$SECONDS

for s in "${SCENARIOS[@]}"; do
  log "scenario $s"
  t_s=$SECONDS
  "s$s"
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

if [ "$UPDATE_DOCS" = 1 ]; then
  DOC=$ROOT/docs/ha.md
  {
    echo "Run of $(date -u +%Y-%m-%d) on $(nproc) cores: \`deploy/compose/harness.sh --update-docs\`," \
      "tally $("$TALLY_BIN" --version | awk '{ print $2 }'), images $([ "$TALLY_IMAGES" = local ] && echo "from local stand-ins (Debian 12: redis $(d run --rm "$REDIS_IMAGE" redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p'), HAProxy $(d run --rm "$HAPROXY_IMAGE" haproxy -v | sed -n '1s/HAProxy version \([0-9.]*\).*/\1/p'))" || echo "official"),"
    echo "${RATE} requests/s from 16 connections over 20 ids; the whole run took ${TOTAL}s" \
      "(scenarios $((SECONDS - T_SCEN))s)."
    echo
    echo "$TABLE"
  } >"$WORK/table.md"
  awk -v f="$WORK/table.md" '
    /<!-- ha-results:begin -->/ { print; while ((getline l < f) > 0) print l; skip = 1; next }
    /<!-- ha-results:end -->/ { skip = 0 }
    !skip { print }' "$DOC" >"$WORK/ha.md"
  cat "$WORK/ha.md" >"$DOC"
  log "results table written to docs/ha.md"
fi

echo "ha-harness: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
