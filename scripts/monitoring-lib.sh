# shellcheck shell=bash
# Functions of scripts/test-monitoring.sh: processes, the Sentinel group, Prometheus queries and
# the alert watch. Source it after setting WORK (a mktemp -d) and ROOT; it defines functions only.

declare -A PID=()
PG_DATA=
PG_CTL=

log() { printf '[%5.1f s] %s\n' "$(elapsed)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$T_START" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# free_ports N: N distinct free loopback ports, held open together while picked.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
}

# spawn NAME CMD...: runs CMD in the background, its output in $WORK/logs/NAME.log; the trap ends it.
spawn() {
  local name=$1; shift
  "$@" >"$WORK/logs/$name.log" 2>&1 &
  PID[$name]=$!
}

# halt NAME [SIGNAL]: ends one process of ours (SIGKILL: a crash, the pod still listed).
halt() {
  local pid=${PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill "-${2:-TERM}" "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PID[$1]"
}

cleanup() {
  local rc=$? name
  trap - EXIT INT TERM
  for name in "${!PID[@]}"; do kill -TERM "${PID[$name]}" 2>/dev/null || true; done
  sleep 0.5
  for name in "${!PID[@]}"; do kill -KILL "${PID[$name]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_CTL" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ "$rc" -ne 0 ] && [ -d "$WORK/logs" ]; then
    echo "---- last lines of each log (run with TALLY_MONITORING_KEEP=1 to keep $WORK)" >&2
    for f in "$WORK"/logs/*.log; do echo "== $f" >&2; tail -n 8 "$f" >&2; done
  fi
  if [ "${TALLY_MONITORING_KEEP:-0}" = 1 ]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK" "${PG_DIR:-}"
  fi
  exit "$rc"
}

# wait_until SECONDS DESCRIPTION CMD...: polls CMD every 0.2 s; fails the run at the deadline.
wait_until() {
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || die "$what: not within ${limit} s"
    sleep 0.2
  done
}

rcli() { REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }

# redis_node I [replicaof-port]: Redis node I on REDIS_PORT[I], AOF on, with the chart's settings
# that matter to the exporter's series (maxmemory with noeviction, as tally requires).
redis_node() {
  local i=$1 dir=$WORK/redis-$1
  mkdir -p "$dir"
  cat >"$dir/redis.conf" <<EOF
bind 127.0.0.1
port ${REDIS_PORT[$i]}
dir $dir
requirepass $REDIS_PASSWORD
masterauth $REDIS_PASSWORD
appendonly yes
appendfsync everysec
save ""
maxmemory 64mb
maxmemory-policy noeviction
EOF
  chmod 600 "$dir/redis.conf"
  if [ -n "${2:-}" ]; then echo "replicaof 127.0.0.1 $2" >>"$dir/redis.conf"; fi
  spawn "redis-$i" redis-server "$dir/redis.conf"
}

# sentinel I [MASTER-PORT]: sentinel I on SENTINEL_PORT[I], monitoring the master on MASTER-PORT
# (default node 0's); the chart's down-after (5 s), a shorter failover-timeout so a failed attempt
# is retried within the run.
sentinel_node() {
  local i=$1 dir=$WORK/sentinel-$1 master=${2:-${REDIS_PORT[0]}}
  mkdir -p "$dir"
  cat >"$dir/sentinel.conf" <<EOF
bind 127.0.0.1
port ${SENTINEL_PORT[$i]}
dir $dir
requirepass $REDIS_PASSWORD
sentinel monitor mymaster 127.0.0.1 $master 2
sentinel auth-pass mymaster $REDIS_PASSWORD
sentinel down-after-milliseconds mymaster 5000
sentinel failover-timeout mymaster 10000
sentinel parallel-syncs mymaster 1
EOF
  chmod 600 "$dir/sentinel.conf"
  spawn "sentinel-$i" redis-sentinel "$dir/sentinel.conf"
}

# exporter I: redis_exporter for node I as the chart's sidecar runs it: address and listen
# address from the environment, the password from a JSON file of address -> password.
exporter_node() {
  local i=$1 addr="redis://127.0.0.1:${REDIS_PORT[$1]}"
  printf '{"%s":"%s"}\n' "$addr" "$REDIS_PASSWORD" >"$WORK/exporter-$i.json"
  chmod 600 "$WORK/exporter-$i.json"
  spawn "exporter-$i" env REDIS_ADDR="$addr" REDIS_PASSWORD_FILE="$WORK/exporter-$i.json" \
    REDIS_EXPORTER_WEB_LISTEN_ADDRESS="127.0.0.1:${EXPORTER_PORT[$i]}" prometheus-redis-exporter
}

# The port of the master a majority of sentinels names.
sentinel_master_port() {
  local i votes=()
  for i in 0 1 2; do
    votes+=("$(REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -h 127.0.0.1 -p "${SENTINEL_PORT[$i]}" \
      --raw SENTINEL get-master-addr-by-name mymaster 2>/dev/null | sed -n 2p)")
  done
  printf '%s\n' "${votes[@]}" | sort | uniq -c | awk '$1 >= 2 && $2 != "" { print $2 }'
}

replicas_in_sync() { # N: the master has N replicas online and every sentinel knows them
  local i
  rcli "$1" info replication | grep -q "^connected_slaves:$2" || return 1
  for i in 0 1 2; do
    [ "$(REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -h 127.0.0.1 -p "${SENTINEL_PORT[$i]}" --raw \
      SENTINEL replicas mymaster | grep -cx 'slave')" -ge "$2" ] || return 1
  done
}

# postgres_start: a throwaway cluster, as the Rust tests start one; Postgres will not run as root.
postgres_start() {
  local bin
  bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -n1)
  PG_CTL=$bin/pg_ctl
  PG_DIR=$(mktemp -d /tmp/tally-monitoring-pg.XXXXXX)
  PG_DATA=$PG_DIR/data
  printf '%s' "$PG_PASSWORD" >"$PG_DIR/pw"
  chmod 600 "$PG_DIR/pw"
  local run=()
  if [ "$(id -u)" -eq 0 ]; then
    chown -R postgres:postgres "$PG_DIR"
    run=(runuser -u postgres --)
  fi
  "${run[@]}" "$bin/initdb" -D "$PG_DATA" -U tally --auth=scram-sha-256 --pwfile="$PG_DIR/pw" \
    >"$WORK/logs/initdb.log" 2>&1 || die "initdb (see $WORK/logs/initdb.log)"
  "${run[@]}" "$PG_CTL" -D "$PG_DATA" -l "$PG_DIR/log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_DIR -c fsync=off" \
    start >/dev/null || die "pg_ctl start: $(tail -n 5 "$PG_DIR/log")"
}

# ----------------------------------------------------------------------------- Prometheus API
prom() { curl -fsS --max-time 5 "http://127.0.0.1:$PROM_PORT/api/v1/$1" "${@:2}"; }
# series EXPR: how many series an instant query returns (0 on an error, which is printed).
series() {
  local out
  out=$(prom query --data-urlencode "query=$1") || { echo 0; return; }
  jq '.data.result | length' <<<"$out"
}
targets_up() { # N: N targets scraped and up
  [ "$(prom targets | jq '[.data.activeTargets[] | select(.health == "up")] | length')" -eq "$1" ]
}

# ----------------------------------------------------------------------------- the alert watch
# watch_alerts FAULT SINCE TIMEOUT EXPECTED...: polls Prometheus's alerts and the webhook's file
# until every EXPECTED (NAME or NAME@POD) fires in Prometheus and has reached the webhook, then
# writes one row per alert that became active after SINCE to $WORK/table.tsv: fault, alert (@pod),
# seconds to its condition (activeAt), to firing here, to the webhook, and its chart `for`.
watch_alerts() {
  local fault=$1 t0=$2 limit=$3; shift 3
  local snap end=$((SECONDS + limit)) grace="" missing want
  snap="$WORK/alerts-$(printf '%s' "$fault" | tr -c 'A-Za-z0-9' '_').jsonl"
  : >"$snap"
  while :; do
    prom alerts | jq -c --arg now "$(now)" '.data.alerts[]
      | {seen: ($now | tonumber), name: .labels.alertname, pod: (.labels.pod // ""), state,
         active: (.activeAt | (sub("\\.[0-9]+"; "") | fromdate)
                  + ((capture("\\.(?<f>[0-9]+)") | "0." + .f | tonumber) // 0))}' \
      >>"$snap" 2>/dev/null || true
    missing=()
    for want in "$@"; do
      alert_done "$snap" "$t0" "$want" || missing+=("$want")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
      # The expected ones are in; give the others that fire a moment to reach the webhook too.
      grace=${grace:-$((SECONDS + 5))}
      if all_delivered "$snap" "$t0" || [ "$SECONDS" -ge "$grace" ]; then break; fi
    elif [ "$SECONDS" -ge "$end" ]; then
      log "FAIL: after $fault, not firing and delivered within ${limit} s: ${missing[*]}"
      FAILURES=$((FAILURES + 1))
      break
    fi
    sleep 0.25
  done
  # Every alert that became active after the fault, the expected ones and the others: its first
  # activation seen here, and the first delivery after it (a fault of several steps can fire and
  # resolve an alert before the watch starts; that earlier delivery is not this activation's).
  jq -rs --argjson t0 "$t0" --arg fault "$fault" --slurpfile hook <(hook_events) \
    --slurpfile fors <(jq -R 'split("\t") | {(.[0]): .[1]}' "$WORK/for.tsv" | jq -s add) '
    map(select(.active >= $t0)) | group_by(.name + "@" + .pod) | .[]
    | .[0] as $a
    | ([.[] | select(.state == "firing") | .seen] | min) as $fired
    | ([$hook[] | select(.name == $a.name and .pod == $a.pod and .received >= $a.active) | .received] | min) as $got
    | def s(x): if x == null then "-" else ((x - $t0) * 10 | round / 10 | tostring) end;
      [$fault, $a.name + (if $a.pod != "" then "@" + $a.pod else "" end),
       s($a.active), s($fired), s($got), ($fors[0][$a.name] // "0s")] | @tsv' \
    "$snap" >>"$WORK/table.tsv"
}

# alert_done SNAPSHOTS T0 NAME[@POD]: it fired after T0 and the webhook received it.
alert_done() {
  local name=${3%@*} pod=
  [[ $3 == *@* ]] && pod=${3#*@}
  jq -se --argjson t0 "$2" --arg n "$name" --arg p "$pod" \
    'any(.[]; .name == $n and (.pod == $p or $p == "") and .state == "firing" and .active >= $t0)' \
    "$1" >/dev/null || return 1
  hook_events | jq -se --argjson t0 "$2" --arg n "$name" --arg p "$pod" \
    'any(.[]; .name == $n and (.pod == $p or $p == "") and .received >= $t0)' >/dev/null
}

# all_delivered SNAPSHOTS T0: every alert seen firing since T0 has reached the webhook.
all_delivered() {
  jq -se --argjson t0 "$2" --slurpfile hook <(hook_events) '
    [.[] | select(.state == "firing" and .active >= $t0)]
    | all(.[]; . as $a | any($hook[]; .name == $a.name and .pod == $a.pod and .received >= $t0))' \
    "$1" >/dev/null
}

# The firing alerts the webhook received: one {received, name, pod} per alert per notification.
hook_events() {
  [ -s "$WORK/webhook.jsonl" ] || return 0
  jq -c '.received as $r | .payload.alerts[] | select(.status == "firing")
    | {received: $r, name: .labels.alertname, pod: (.labels.pod // "")}' "$WORK/webhook.jsonl"
}

# active_alerts: the alerts pending or firing now, one "NAME@POD STATE" a line.
active_alerts() { prom alerts | jq -r '.data.alerts[] | .labels.alertname + "@" + (.labels.pod // "") + " " + .state'; }

# ----------------------------------------------------------------------------- dashboard, report
# check_panels PHASE: runs every target of every panel of the dashboard, with Grafana's variables
# replaced by what they would be here: $namespace and $release (the chart's fullname) by our
# labels, $__rate_interval by 10 s (Grafana's floor is 4 scrape intervals), $__interval by 2 s.
# Writes panel id, title, refId and the number of series to $WORK/panels-PHASE.tsv. Queries of
# kube-state-metrics' series (the backup's age) are listed apart: it does not run outside a cluster.
check_panels() {
  local phase=$1 id title ref expr n
  : >"$WORK/panels-$phase.tsv"
  : >"$WORK/panels-kube.tsv"
  while IFS=$'\t' read -r id title ref expr; do
    if [[ $expr == *kube_* ]]; then
      printf '%s\t%s\n' "$id" "$title" >>"$WORK/panels-kube.tsv"
      continue
    fi
    expr=${expr//\$\{namespace\}/$NS} expr=${expr//\$namespace/$NS}
    expr=${expr//\$\{release\}/$RELEASE} expr=${expr//\$release/$RELEASE}
    expr=${expr//\$__rate_interval/10s} expr=${expr//\$__interval/2s}
    n=$(series "$expr")
    printf '%s\t%s\t%s\t%s\t%s\n' "$id" "$title" "$ref" "$n" "$expr" >>"$WORK/panels-$phase.tsv"
  done < <(jq -r '.. | objects | select(.type != "row" and has("targets")) | .id as $id
    | .title as $t | .targets[] | [$id, $t, .refId, .expr] | @tsv' \
    deploy/helm/tally/dashboards/tally.json)
  log "$phase: $(panel_summary "$phase") panels return data"
}
panel_summary() { # PHASE: "N of M" (a panel returns data when each of its queries does)
  awk -F'\t' '{ seen[$1] = 1; if ($4 == 0) empty[$1] = 1 }
    END { n = 0; m = 0; for (p in seen) { m++; if (!(p in empty)) n++ } printf "%d of %d", n, m }' \
    "$WORK/panels-$1.tsv"
}

report() {
  echo
  echo "==== dashboard: $(panel_summary after-faults) panels return data after the faults" \
    "($(panel_summary baseline) in the healthy state already)"
  awk -F'\t' '{ printf "  not run here (needs kube-state-metrics): %s (panel %s)\n", $2, $1 }' \
    "$WORK/panels-kube.tsv"
  # Panels that needed a fault, and any that never returned data.
  awk -F'\t' 'FNR == NR { if ($4 == 0) base[$1] = $2; next }
    { if ($4 == 0) never[$1] = $2 }
    END {
      for (p in base) if (!(p in never)) printf "  data only after the faults: %s (panel %s)\n", base[p], p
      for (p in never) printf "  NO DATA: %s (panel %s)\n", never[p], p
    }' "$WORK/panels-baseline.tsv" "$WORK/panels-after-faults.tsv"
  awk -F'\t' '$4 == 0 { printf "    empty query %s/%s: %s\n", $1, $3, $5 }' "$WORK/panels-after-faults.tsv"
  if awk -F'\t' '$4 == 0 { bad = 1 } END { exit !bad }' "$WORK/panels-after-faults.tsv"; then
    FAILURES=$((FAILURES + 1))
  fi
  echo
  echo "==== alerts (seconds after the fault; 'here' with for: $FOR_IN_TEST, '-' never)"
  {
    printf 'fault\talert\tcondition\tfiring here\twebhook\tchart for\n'
    cat "$WORK/table.tsv"
  } | awk -F'\t' '{ for (i = 1; i <= NF; i++) { c[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } }
    END { for (r = 1; r <= NR; r++) { for (i = 1; i <= 6; i++) printf "%-*s  ", w[i], c[r, i]; printf "\n" } }'
  echo
  echo "==== run time $(elapsed) s; $FAILURES failure(s)"
  [ "$FAILURES" -eq 0 ]
}
