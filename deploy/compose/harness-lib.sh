# shellcheck shell=bash
# The HA fault harness's stack, how it looks at the system, and its faults. Sourced by
# deploy/compose/harness.sh (the scenarios and the run), which sets the variables used here:
# ROOT, PROJECT, NET, COMPOSE_FILE, LB, STATS, ART, WORK. Sourcing defines functions only
# (and points redis-lib.sh at the stack).

# shellcheck source=scripts/docker.sh
. "$ROOT/scripts/docker.sh"
# The master and role predicates are the chart's own. Its nodes are here the ordinals 0-2, and
# its redis-cli calls go through docker exec (rcli, scli below).
FILES_DIR=$ROOT/deploy/helm/tally/files
# shellcheck source=deploy/helm/tally/files/redis-lib.sh
. "$ROOT/deploy/helm/tally/files/redis-lib.sh"
REDIS_NODES="0 1 2"
SENTINEL_NODES="0 1 2"
MASTER_NAME=mymaster

# The ACL users whose password files the stack mounts (compose.yaml's secrets).
AUTH_USERS="tally replication sentinel operator exporter backup admin"
new_password() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }

# After redis-lib.sh, whose log is the chart's format.
log() { printf '[harness %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

compose() {
  if [ -x /usr/bin/docker-compose ] || command -v docker-compose >/dev/null 2>&1; then
    docker-compose -p "$PROJECT" -f "$COMPOSE_FILE" ${COMPOSE_EXTRA:+-f "$COMPOSE_EXTRA"} "$@"
  else
    "$DOCKER" compose -p "$PROJECT" -f "$COMPOSE_FILE" ${COMPOSE_EXTRA:+-f "$COMPOSE_EXTRA"} "$@"
  fi
}
d() { "$DOCKER" "$@"; }

# parse_scenario_args HELP_LINES ARGS...: sets UPDATE_DOCS and SCENARIOS (default: every number in
# ALL, but those of --except=N,M) from the harness's arguments; numbers must be rows of TITLE.
# --help prints lines 2 to HELP_LINES of the calling script.
# shellcheck disable=SC2034 # UPDATE_DOCS and SCENARIOS are the caller's
parse_scenario_args() {
  local help_lines=$1 arg n nums
  local -A except=()
  shift
  UPDATE_DOCS=0
  SCENARIOS=()
  for arg in "$@"; do
    case "$arg" in
      --update-docs) UPDATE_DOCS=1 ;;
      --except=*)
        IFS=, read -ra nums <<<"${arg#--except=}"
        for n in "${nums[@]}"; do
          [[ $n =~ ^[1-9][0-9]*$ && -n ${TITLE[$n]:-} ]] || { echo "--except: unknown scenario: $n" >&2; exit 2; }
          except[$n]=1
        done
        ;;
      -h | --help)
        sed -n "2,${help_lines}p" "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
      *)
        [[ $arg =~ ^[1-9][0-9]*$ && -n ${TITLE[$arg]:-} ]] || { echo "unknown argument: $arg" >&2; exit 2; }
        SCENARIOS+=("$arg")
        ;;
    esac
  done
  if [ ${#SCENARIOS[@]} -eq 0 ]; then
    for n in "${ALL[@]}"; do [ -n "${except[$n]:-}" ] || SCENARIOS+=("$n"); done
  elif [ ${#except[@]} -gt 0 ]; then
    echo "--except goes with running all scenarios, not with a list of them" >&2
    exit 2
  fi
  [ ${#SCENARIOS[@]} -gt 0 ] || { echo "--except left no scenario to run" >&2; exit 2; }
}

# preflight: SKIP (exit 0), or FAIL under CI=true, when this machine cannot run the harness
preflight() {
  if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
    skip_or_fail "needs root (or password-less sudo) to run dockerd"
  fi
  if ! command -v apt-get >/dev/null 2>&1 && [ ! -x /usr/sbin/dockerd ]; then
    skip_or_fail "no Docker and no apt-get to install Debian's docker.io"
  fi
}
skip_or_fail() {
  if [ "${CI:-}" = true ]; then
    echo "FAIL: HA harness cannot run under CI=true: $*"
    exit 1
  fi
  echo "SKIP: HA harness: $*"
  exit 0
}

# stack_up: dockerd, images, the host's tally, a fresh password, the stack
stack_up() {
  local c
  docker_up
  need_packages jq:jq curl:curl nsenter:util-linux iptables:iptables
  build_standins
  image_env
  export TALLY_IMAGE=${TALLY_IMAGE_HA:-tally:ha-harness}
  # TALLY_HA_PREBUILT=IMAGE: run that image as it is (not rebuilt, not removed at the end), for
  # repeated runs while the sources change under a build that takes minutes.
  if [ -n "${TALLY_HA_PREBUILT:-}" ]; then
    TALLY_IMAGE=$TALLY_HA_PREBUILT
    have_image "$TALLY_IMAGE" || { log "TALLY_HA_PREBUILT=$TALLY_IMAGE: no such image"; exit 1; }
  else
    build_tally
  fi

  if [ -z "${TALLY_BIN:-}" ]; then
    c=$(d create "$TALLY_IMAGE")
    d cp "$c:/usr/local/bin/tally" "$WORK/tally" >/dev/null
    d rm "$c" >/dev/null
    TALLY_BIN=$WORK/tally
  fi
  "$TALLY_BIN" --version >/dev/null

  # Fresh passwords for this run's ACL users, readable by the containers' user; the rotation
  # companions (-previous, -next) empty until a scenario rotates (set_password).
  mkdir -p "$WORK/auth"
  local u
  for u in $AUTH_USERS; do
    new_password >"$WORK/auth/$u-password"
    : >"$WORK/auth/$u-password-previous"
    : >"$WORK/auth/$u-password-next"
  done
  chmod 755 "$WORK/auth"
  chmod 644 "$WORK/auth"/*
  export TALLY_REDIS_AUTH_DIR=$WORK/auth

  # Leftovers of an interrupted run.
  compose down -v --remove-orphans -t 1 >/dev/null 2>&1 || true
  STARTED_STACK=1
  log "starting the stack (project $PROJECT, subnet $TALLY_SUBNET, HAProxy on $LB)"
  compose up -d --no-build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; exit 1; }
  note_network "$NET"
}

# cleanup: on exit, also on failure, removes all stack_up made (keeps target/ha-harness/)
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
    [ -n "${TALLY_HA_PREBUILT:-}" ] || d rmi "$TALLY_IMAGE" >/dev/null 2>&1
  fi
  if [ "$DOCKERD_STARTED" = 1 ]; then docker_down; fi
  rm -rf "$WORK"
}

# The container id of a compose service, looked up once.
declare -A CID
cid() {
  if [ -z "${CID[$1]:-}" ]; then CID[$1]=$(compose ps -q "$1"); fi
  echo "${CID[$1]}"
}

save_logs() {
  local s
  # LOG_SERVICES: the services of another stack (harness-cluster.sh's)
  for s in ${LOG_SERVICES:-redis-0 sentinel-0 redis-1 sentinel-1 redis-2 sentinel-2 tally-1 tally-2 lb}; do
    d logs --timestamps "$(cid "$s")" >"$ART/$s.log" 2>&1
  done
  log "container logs saved in $ART"
}

# svc VERB [OPTION VALUE]... SERVICE...: `docker VERB` on the containers of compose services
svc() {
  local args=("$1") s
  shift
  while [[ ${1:-} == -* ]]; do
    args+=("$1" "$2")
    shift 2
  done
  for s in "$@"; do args+=("$(cid "$s")"); done
  d "${args[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Looking at the system.

# rcli N ARGS... / scli N ARGS...: redis-cli against redis-N / sentinel-N, inside its container,
# as ACL user admin
rcli() { container_cli "redis-$1" 6379 "${@:2}"; }
scli() { container_cli "sentinel-$1" 26379 "${@:2}"; }
# container_cli SERVICE PORT ARGS...: redis-cli in SERVICE's container as admin, whose password is
# in no container: it goes in by stdin, from this run's files; over TLS when the container's
# REDIS_TLS says so (compose-tls.yaml), with its files
# shellcheck disable=SC2016 # $p, $pw, $t and "$@" expand in the container's shell
container_cli() {
  timeout 5 "$DOCKER" exec -i "$(cid "$1")" sh -c \
    'p=$1; shift; IFS= read -r pw || :; t=""; d=${REDIS_TLS_DIR:-/etc/redis-tls}
    [ "${REDIS_TLS:-}" != yes ] || t="--tls --cacert $d/ca.crt --cert $d/tls.crt --key $d/tls.key"
    REDISCLI_AUTH=$pw exec redis-cli $t --user admin -p "$p" "$@"' sh "$2" "${@:3}" \
    <"$TALLY_REDIS_AUTH_DIR/admin-password" 2>/dev/null | tr -d '\r'
}
# redis-lib.sh's seam. Only the sentinels that run count: a stopped one is no answer.
redis_cli() { rcli "$@"; }
sentinel_cli() { running "sentinel-$1" && scli "$@"; }

running() { [ "$(d inspect -f '{{.State.Status}}' "$(cid "$1")" 2>/dev/null)" = running ]; }
ordinal_of() { sed -n 's/^tally-redis-\([0-9]\).*/\1/p'; }
# master_index: the node a majority (2) of the sentinels name
master_index() { sentinels_master 2 | ordinal_of; }
has_master() { [ -n "$(master_index)" ]; }
master_other_than() { # master_other_than N: the sentinels agree on a master that is not N
  local n
  n=$(master_index)
  [ -n "$n" ] && [ "$n" != "$1" ]
}
is_replica_in_sync() { replica_link_up "$1"; }
lb_status() { curl -s --max-time 2 "$STATS/;csv" | awk -F, -v s="$1" '$1 == "tally" && $2 == s { print $18 }'; }
lb_up() { [ "$(lb_status "$1")" = UP ]; }
ip_of() { d inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$(cid "$1")"; }
# keys_of N: the keys redis-N holds in tally's database
keys_of() { rcli "$1" DBSIZE; }
# epoch: the sentinels' config epoch of the master (one more per failover)
epoch() {
  local n
  for n in 0 1 2; do
    scli "$n" SENTINEL master mymaster | paste - - | awk -F'\t' '$1 == "config-epoch" { print $2 }'
  done | sort -n | tail -n 1
}
accepts_writes() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$LB/after-the-disk")" = 200 ]; }
# pod_ready N: the chart's readiness probes of both containers of pod N pass
pod_ready() {
  d exec "$(cid "redis-$1")" sh /opt/tally-redis/probe.sh redis-ready >/dev/null 2>&1 \
    && d exec "$(cid "sentinel-$1")" sh /opt/tally-redis/probe.sh sentinel-ready >/dev/null 2>&1
}

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

# rotation_applied: every redis-N and sentinel-N accepts, for each of its ACL users, exactly the
# passwords this run's files list: their SHA-256 against the process's ACL LIST (one docker exec
# per process: the harness's calls are slow on a busy machine)
rotation_applied() {
  local n u f side want have list
  for n in 0 1 2; do
    for side in redis sentinel; do
      if [ "$side" = redis ]; then list=$(rcli "$n" ACL LIST); else list=$(scli "$n" ACL LIST); fi
      [ -n "$list" ] || { WHY="$side-$n: no ACL LIST"; return 1; }
      for u in $(acl_users "$side"); do
        [ "$u" != default ] || continue
        want=$(for f in "$u-password" "$u-password-previous" "$u-password-next"; do
          [ ! -s "$TALLY_REDIS_AUTH_DIR/$f" ] || printf '%s' "$(cat "$TALLY_REDIS_AUTH_DIR/$f")" | sha256sum | cut -c1-64
        done | sort -u)
        have=$(awk -v u="$u" '$1 == "user" && $2 == u { for (i = 3; i <= NF; i++) if ($i ~ /^#/) print substr($i, 2) }' <<<"$list" | sort)
        [ "$have" = "$want" ] || { WHY="$side-$n: user $u not applied yet"; return 1; }
      done
    done
  done
}

# ---------------------------------------------------------------------------------------------
# Faults.

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
partition() { # partition N on|off: cut pod N from the two other pods (tally and HAProxy still reach it)
  cut_rules "$(cut_plan "$1")" "$2"
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
  svc start "redis-$1-pod" "redis-$1" "sentinel-$1"
}

# wipe_volume N: the data of pod N gone (a new volume, or persistence off); its redis is stopped
wipe_volume() {
  d run --rm --network none --user 0 --entrypoint sh -v "${PROJECT}_redis-data-$1:/data" \
    "$REDIS_IMAGE" -c 'rm -rf /data/appendonlydir /data/dump.rdb /data/temp-*' >/dev/null
}
# set_data_mode N MODE: chmod MODE on pod N's data directory, from a helper container (works
# whether or not redis-N runs)
set_data_mode() {
  d run --rm --network none --user 0 --entrypoint chmod -v "${PROJECT}_redis-data-$1:/data" \
    "$REDIS_IMAGE" "$2" /data >/dev/null
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
