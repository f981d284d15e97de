# shellcheck shell=sh
# shellcheck disable=SC2034 # variables set here are used by the scripts that source this file
# Common functions of tally's Redis / Sentinel scripts (start-redis.sh, start-sentinel.sh,
# prestop-redis.sh, probe.sh); the users and how to connect as one are in auth-lib.sh, TLS in
# tls-lib.sh (REDIS_TLS...), both sourced here. POSIX sh: runs in the official redis / valkey images (Debian or
# Alpine). Sourced, not executed; sourcing only defines functions and constants (lib_init reads
# the environment). The HA harness and scripts/test-redis-scripts.sh source it too, for the
# master and role predicates, so that they judge a group as the chart's scripts do.
#
# The scripts are parametrised by the environment only, so the same files run in the Helm chart
# (one pod = a `redis` and a `sentinel` container), in a compose stack (one "pod" = two containers
# sharing a network namespace, reachable by network aliases) and against local processes in tests.
#
#   POD_NAME             this node's name, ending in -<ordinal>          default: $(hostname)
#   REDIS_NODE_COUNT     number of Redis nodes                           default: 3
#   HEADLESS_DOMAIN      domain appended to every node name, e.g.
#                        tally-redis-headless.tally.svc.cluster.local   default: none (bare names)
#   REDIS_PORT           Redis port of every node                        default: 6379
#   SENTINEL_PORT        Sentinel port of every node                     default: 26379
#   REDIS_NODES          override: "host:port host:port ..." of every Redis, in ordinal order
#   SENTINEL_NODES       override: the same for every Sentinel
#   NODE_INDEX           override: this node's ordinal (default: POD_NAME's -<n> suffix)
#   MASTER_NAME          the Sentinel master group name                  default: mymaster
#   REDIS_AUTH_DIR       the users' password files (see auth-lib.sh)     default: /etc/redis-auth
#   CLI_TIMEOUT          seconds allowed for one redis-cli call          default: 3
#   REDIS_CLI            the client binary             default: redis-cli, else valkey-cli
#   REDIS_CLOCK_DB       database of the group's recency clock           default: 15
#
# Node names are announced (replica-announce-ip, sentinel announce-ip), never addresses, so a node
# that comes back with a new IP address keeps its identity. Host names must not contain ':'.

# FILES_DIR: this file's directory (the scripts set it; so do the harness and the tests).
# shellcheck source-path=SCRIPTDIR source=auth-lib.sh
. "${FILES_DIR:?FILES_DIR must name the directory of redis-lib.sh}/auth-lib.sh"
# shellcheck source-path=SCRIPTDIR source=tls-lib.sh
. "$FILES_DIR/tls-lib.sh"

log() {
  printf '%s %s[%s]: %s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "${SCRIPT_NAME:-redis-lib}" "${NODE_INDEX:-?}" "$*" >&2
}

die() {
  log "ERROR: $*"
  exit 1
}

# nth LIST N: the N-th (0-based) word of a space-separated list, empty when out of range
nth() {
  _i=0
  # shellcheck disable=SC2086 # word splitting of the list is intended
  for _w in $1; do
    if [ "$_i" -eq "$2" ]; then
      printf '%s\n' "$_w"
      return 0
    fi
    _i=$((_i + 1))
  done
  return 0
}

host_of() { printf '%s\n' "${1%:*}"; }
port_of() { printf '%s\n' "${1##*:}"; }

# conf_quote STRING: STRING as a double-quoted Redis configuration argument
conf_quote() {
  printf '"%s"\n' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# first_command NAME...: the first NAME found on PATH (the first NAME when none is)
first_command() {
  for _c in "$@"; do
    if command -v "$_c" >/dev/null 2>&1; then
      printf '%s\n' "$_c"
      return 0
    fi
  done
  printf '%s\n' "$1"
}

# maxmemory_setting: the `maxmemory` start-redis.sh configures. REDIS_MAXMEMORY when set (a Redis
# size such as 400mb; 0 for none); else REDIS_MAXMEMORY_PERCENT (default 75) of the container's
# memory limit: REDIS_MEMORY_LIMIT in bytes (the chart sets it from the Downward API), else this
# process's cgroup limit (v2 memory.max, v1 memory.limit_in_bytes). Empty when no limit is known.
# Why 75 %: a BGSAVE or an AOF rewrite forks, and the child's copy-on-write pages, the replication
# backlog and the client buffers need the rest. With noeviction, a full Redis refuses writes
# (tally answers 507) instead of growing until the kernel kills it.
maxmemory_setting() {
  if [ -n "${REDIS_MAXMEMORY:-}" ]; then
    printf '%s\n' "$REDIS_MAXMEMORY"
    return 0
  fi
  _limit=${REDIS_MEMORY_LIMIT:-}
  if [ -z "$_limit" ]; then
    # This process's cgroup as /proc names it, then the mount's root (what a container sees).
    _v2=$(sed -n 's/^0:://p' /proc/self/cgroup 2>/dev/null | head -n 1)
    _v1=$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup 2>/dev/null | head -n 1)
    for _f in "/sys/fs/cgroup${_v2%/}/memory.max" /sys/fs/cgroup/memory.max \
      "/sys/fs/cgroup/memory${_v1%/}/memory.limit_in_bytes" /sys/fs/cgroup/memory/memory.limit_in_bytes; do
      if [ -r "$_f" ]; then
        _limit=$(cat "$_f")
        break
      fi
    done
  fi
  case "$_limit" in
    '' | max | *[!0-9]*) return 0 ;;
  esac
  # cgroup v1 says "no limit" with a number near 2^63; below 10^17 the product cannot overflow.
  if [ "${#_limit}" -gt 16 ]; then
    return 0
  fi
  printf '%s\n' $((_limit * ${REDIS_MAXMEMORY_PERCENT:-75} / 100))
}

# lib_init: computes the node lists and this node's identity.
lib_init() {
  POD_NAME=${POD_NAME:-$(hostname)}
  REDIS_NODE_COUNT=${REDIS_NODE_COUNT:-3}
  REDIS_PORT=${REDIS_PORT:-6379}
  SENTINEL_PORT=${SENTINEL_PORT:-26379}
  MASTER_NAME=${MASTER_NAME:-mymaster}
  CLI_TIMEOUT=${CLI_TIMEOUT:-3}
  REDIS_CLOCK_DB=${REDIS_CLOCK_DB:-15}
  HEADLESS_DOMAIN=${HEADLESS_DOMAIN:-}
  REDIS_CLI=${REDIS_CLI:-$(first_command redis-cli valkey-cli)}

  if [ -z "${NODE_INDEX:-}" ]; then
    NODE_INDEX=${POD_NAME##*-}
    case "$NODE_INDEX" in
      '' | *[!0-9]*) die "cannot take an ordinal from POD_NAME=$POD_NAME (set NODE_INDEX)" ;;
    esac
  fi
  _base=${POD_NAME%-*}
  if [ -z "${REDIS_NODES:-}" ] || [ -z "${SENTINEL_NODES:-}" ]; then
    _r=''
    _s=''
    _i=0
    while [ "$_i" -lt "$REDIS_NODE_COUNT" ]; do
      _h="$_base-$_i${HEADLESS_DOMAIN:+.$HEADLESS_DOMAIN}"
      _r="$_r${_r:+ }$_h:$REDIS_PORT"
      _s="$_s${_s:+ }$_h:$SENTINEL_PORT"
      _i=$((_i + 1))
    done
    REDIS_NODES=${REDIS_NODES:-$_r}
    SENTINEL_NODES=${SENTINEL_NODES:-$_s}
  fi
  MY_REDIS=$(nth "$REDIS_NODES" "$NODE_INDEX")
  MY_SENTINEL=$(nth "$SENTINEL_NODES" "$NODE_INDEX")
  [ -n "$MY_REDIS" ] || die "node $NODE_INDEX is not in REDIS_NODES=$REDIS_NODES"
  [ -n "$MY_SENTINEL" ] || die "node $NODE_INDEX is not in SENTINEL_NODES=$SENTINEL_NODES"
  MY_HOST=$(host_of "$MY_REDIS")
  FIRST_REDIS=$(nth "$REDIS_NODES" 0)

}

# with_timeout CMD...: CMD bounded by CLI_TIMEOUT seconds when `timeout` exists
with_timeout() {
  if command -v timeout >/dev/null 2>&1; then
    timeout "$CLI_TIMEOUT" "$@"
  else
    "$@"
  fi
}

# Every function below reaches a node through redis_cli / sentinel_cli (auth-lib.sh: redis-cli
# as user operator), announce_tail aside.

# sentinel_master_of SENTINEL: "host:port" of the master that sentinel names, empty if none
sentinel_master_of() {
  _out=$(sentinel_cli "$1" SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null) || return 0
  _h=$(printf '%s\n' "$_out" | sed -n 1p)
  _p=$(printf '%s\n' "$_out" | sed -n 2p)
  case "$_p" in
    '' | *[!0-9]*) return 0 ;;
  esac
  [ -n "$_h" ] && printf '%s:%s\n' "$_h" "$_p"
  return 0
}

# sentinels_master [MIN]: the master named by the most sentinels, if at least MIN (default 1)
# of them name it; empty when none does. A sentinel that does not answer names none. The
# scripts take any (a majority when they agree); the harness wants a majority, the test all.
sentinels_master() {
  for _s in $SENTINEL_NODES; do
    sentinel_master_of "$_s"
  done | sort | uniq -c | sort -rn | awk -v min="${1:-1}" 'NR == 1 && $1 >= min { print $2 }'
}

# sentinel_views: one line per sentinel that answers within FENCE_CLI_TIMEOUT seconds (default 1):
# "host:port flags" of the master it names (flags exactly "master" when it sees it healthy)
sentinel_views() {
  for _s in $SENTINEL_NODES; do
    _out=$(CLI_TIMEOUT=${FENCE_CLI_TIMEOUT:-1} sentinel_cli "$_s" SENTINEL master "$MASTER_NAME" 2>/dev/null) || continue
    printf '%s\n' "$_out" | tr -d '\r' | awk 'NR % 2 == 1 { k = $0; next }
      k == "ip" { ip = $0 } k == "port" { port = $0 } k == "flags" { f = $0 }
      END { if (ip != "") print ip ":" port " " f }'
  done
}

# majority_of VIEWS NODE: "other HOST:PORT" when more than half of all sentinels name another
# master, "confirmed" when more than half name NODE and see it healthy, else empty
majority_of() {
  _n=0
  for _s in $SENTINEL_NODES; do _n=$((_n + 1)); done
  printf '%s\n' "$1" | awk -v n="$_n" -v me="$2" '
    function norm(a) { a = tolower(a); sub(/\.:/, ":", a); return a }
    NF { names[norm($1)]++; if (norm($1) == norm(me) && $2 == "master") ok++ }
    END {
      if (ok * 2 > n) { print "confirmed"; exit }
      for (a in names) if (a != norm(me) && names[a] * 2 > n) { print "other " a; exit }
    }'
}

# role_of REDIS: first line of ROLE (master, slave, sentinel), empty when unreachable
role_of() {
  redis_cli "$1" ROLE 2>/dev/null | sed -n 1p
}

# replica_link_up REDIS: REDIS is a replica whose link to its master is up (what the harness and
# the script test wait for after a fault)
replica_link_up() {
  _li=$(redis_cli "$1" INFO replication 2>/dev/null) || return 1
  [ "$(info_field "$_li" role)" = slave ] && [ "$(info_field "$_li" master_link_status)" = up ]
}

# redis_master: the Redis node that says it is a master, empty if none. Should two say so (an
# old master cut off from the others), the one with more replicas, then the newer data (clock).
redis_master() {
  for _r in $REDIS_NODES; do
    _ri=$(redis_cli "$_r" INFO replication 2>/dev/null) || continue
    [ "$(info_field "$_ri" role)" = master ] || continue
    printf '%s %s %s\n' "$(info_field "$_ri" connected_slaves)" "$(node_clock "$_r")" "$_r"
  done | sort -k1,1nr -k2,2nr | awk 'NR == 1 { print $3 }'
}

# discover_master: the current master as host:port: what the sentinels say; if no sentinel knows
# one, a Redis node that is master; empty when neither (a new group: the caller bootstraps node 0)
discover_master() {
  _m=$(sentinels_master 1)
  if [ -n "$_m" ]; then
    log "sentinels name master $_m"
    printf '%s\n' "$_m"
    return 0
  fi
  _m=$(redis_master)
  if [ -n "$_m" ]; then
    log "no sentinel knows a master; Redis node $_m is master"
    printf '%s\n' "$_m"
  fi
  return 0
}

# same_node A B: true when host:port A and B name the same node (host names compared without
# case and without a trailing dot)
same_node() {
  _a=$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | sed 's/\.:/:/')
  _b=$(printf '%s' "$2" | tr '[:upper:]' '[:lower:]' | sed 's/\.:/:/')
  [ "$_a" = "$_b" ]
}

# info_field SECTION-OUTPUT FIELD: the value of FIELD in INFO output
info_field() {
  printf '%s\n' "$1" | tr -d '\r' | sed -n "s/^$2://p"
}

# ---------------------------------------------------------------------------------------------
# Which node has the data. A node's replication offset cannot tell: after loading an AOF, Redis
# restarts it at 0 (checked on 7.0: master_repl_offset:0 and a new master_replid). So the master
# increments a counter once a second (clock_loop in start-redis.sh), in a database of its own
# (REDIS_CLOCK_DB) where it never meets tally's keys. It is replicated and persisted like any
# write: after a restart each node's copy says how recent its data is, to the second, and a node
# that holds it has been part of a running group (a fresh volume never has it).
CLOCK_KEY=tally:redis:clock
# A holding node publishes its AOF tail (aof_tail) as the name of a connection it keeps open to
# itself (CLIENT SETNAME tally-tail-N): nothing is written, so nothing is added to its AOF.
TAIL_NAME=tally-tail-
# A node whose data may be older or newer than the others' starts as a replica of this address,
# where nothing listens: it loads its data and answers INFO, but takes no writes and syncs from
# no one until an election (elect_master) names the master.
HOLD_HOST=127.0.0.1
HOLD_PORT=1

# aof_tail DIR: bytes of DIR's newest AOF increment file after the clock's last tick; empty when
# unknown (no AOF, or no tick since the last rewrite). Two nodes with the same clock replicated
# the same stream of commands after that tick, byte for byte, so the larger tail has more of it:
# this breaks a tie of clocks to the command, not to the second.
aof_tail() {
  _man=''
  for _f in "$1"/appendonlydir/*.manifest; do
    if [ -f "$_f" ]; then _man=$_f; fi
  done
  [ -n "$_man" ] || return 0
  _inc=$(awk '$NF == "i" { f = $2 } END { print f }' "$_man")
  _inc=$1/appendonlydir/$_inc
  [ -f "$_inc" ] || return 0
  _at=$(grep -abo "$CLOCK_KEY" "$_inc" 2>/dev/null | tail -n 1 | cut -d: -f1)
  [ -n "$_at" ] || return 0
  echo $(($(wc -c <"$_inc") - _at))
}

# announce_tail TAIL FLAG: keeps a connection to this node named after TAIL open while the file
# FLAG exists (then redis-cli sees its input end and exits)
announce_tail() {
  _pw=$(auth_password operator)
  # shellcheck disable=SC2046 # tls_cli_opts prints options to split
  { printf 'CLIENT SETNAME %s%s\n' "$TAIL_NAME" "$1"; while sleep 1 && [ -e "$2" ]; do echo PING; done; } \
    | REDISCLI_AUTH=$_pw VALKEYCLI_AUTH=$_pw \
      "$REDIS_CLI" $(tls_cli_opts) --user operator -h "$(host_of "$MY_REDIS")" -p "$(port_of "$MY_REDIS")" >/dev/null 2>&1
}

# node_tail REDIS: the AOF tail a holding node announced, -1 when it has none; empty while it
# has not announced one yet
node_tail() {
  redis_cli "$1" CLIENT LIST 2>/dev/null | tr ' ' '\n' | sed -n "s/^name=$TAIL_NAME\(-1\|[0-9][0-9]*\)\$/\1/p" | head -n 1
}

# local_data_present DIR: true when DIR holds Redis persistence (the AOF directory or an RDB)
local_data_present() {
  if ls "$1"/appendonlydir/*.manifest >/dev/null 2>&1; then return 0; fi
  [ -s "$1/dump.rdb" ] || [ -s "$1/appendonly.aof" ]
}

# node_keys REDIS: keys REDIS holds outside the clock's database; empty when it does not answer
# or is still loading its data
node_keys() {
  _ki=$(redis_cli "$1" INFO keyspace 2>/dev/null) || return 0
  _pi=$(redis_cli "$1" INFO persistence 2>/dev/null) || return 0
  [ "$(info_field "$_pi" loading)" = 0 ] || return 0
  printf '%s\n' "$_ki" | tr -d '\r' | awk -F'[:=,]' -v skip="db$REDIS_CLOCK_DB" '
    $1 ~ /^db[0-9]+$/ && $1 != skip { n += $3 } END { print n + 0 }'
}

# node_clock REDIS: the clock REDIS holds (0: none); empty when it does not answer
node_clock() {
  _c=$(redis_cli "$1" -n "$REDIS_CLOCK_DB" GET "$CLOCK_KEY" 2>/dev/null) || return 0
  case "$_c" in
    '' | *[!0-9]*) echo 0 ;;
    *) echo "$_c" ;;
  esac
}

# others_hold_data: "yes" when another node answers with keys, "no" when every other node
# answers without any, "unknown" when one does not answer (it may hold the newest data)
others_hold_data() {
  _answer=no
  for _r in $REDIS_NODES; do
    same_node "$_r" "$MY_REDIS" && continue
    _k=$(node_keys "$_r")
    if [ -z "$_k" ]; then
      _answer=unknown
    elif [ "$_k" -gt 0 ]; then
      echo yes
      return 0
    fi
  done
  echo "$_answer"
}

# follow REDIS MASTER: REDIS replicates MASTER
follow() {
  redis_cli "$1" REPLICAOF "$(host_of "$2")" "$(port_of "$2")" >/dev/null 2>&1 || true
}

# holding REDIS: true when REDIS waits for an election (a replica of the hold address)
holding() {
  _hi=$(redis_cli "$1" INFO replication 2>/dev/null) || return 1
  [ "$(info_field "$_hi" role)" = slave ] && [ "$(info_field "$_hi" master_host)" = "$HOLD_HOST" ] \
    && [ "$(info_field "$_hi" master_port)" = "$HOLD_PORT" ]
}

# elect_master: when no node is master and the nodes hold data, the node with the newest data
# (the highest clock; on a tie the lowest ordinal) becomes master and the others its replicas.
# Every node must answer, or, after ELECTION_WAIT_SECONDS (default 60), a majority; in that case
# only the lowest-ordinal node that answers elects, so two electors never pick differently from
# different views. Prints the elected master; empty when it is not this script's turn, or too
# few nodes answer (the caller waits and tries again).
elect_master() {
  _waited=${1:-0}
  _seen=0
  _total=0
  _best=''
  _best_clock=-1
  _best_tail=-1
  _first_seen=''
  for _r in $REDIS_NODES; do
    _total=$((_total + 1))
    holding "$_r" || continue
    _seen=$((_seen + 1))
    [ -n "$_first_seen" ] || _first_seen=$_r
    _c=$(node_clock "$_r")
    _t=$(node_tail "$_r")
    # A node that has not published its tail yet is not ready to be compared.
    [ -n "$_c" ] && [ -n "$_t" ] || return 0
    if [ "$_c" -gt "$_best_clock" ] || { [ "$_c" -eq "$_best_clock" ] && [ "$_t" -gt "$_best_tail" ]; }; then
      _best=$_r
      _best_clock=$_c
      _best_tail=$_t
    fi
  done
  if [ "$_seen" -lt "$_total" ]; then
    [ "$_waited" -ge "${ELECTION_WAIT_SECONDS:-60}" ] || return 0
    [ $((_seen * 2)) -gt "$_total" ] || return 0
    same_node "$_first_seen" "$MY_REDIS" || return 0
  fi
  [ -n "$_best" ] || return 0
  log "election: $_seen of $_total nodes wait for one; $_best has the newest data (clock $_best_clock, AOF tail $_best_tail)"
  redis_cli "$_best" REPLICAOF NO ONE >/dev/null 2>&1 || return 0
  for _r in $REDIS_NODES; do
    same_node "$_r" "$_best" && continue
    if holding "$_r"; then
      follow "$_r" "$_best"
    fi
  done
  printf '%s\n' "$_best"
}
