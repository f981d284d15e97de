#!/usr/bin/env bash
# The chart's monitoring against a real Prometheus and Alertmanager (Debian's packages): a Sentinel
# group of real processes (a master, 2 replicas, 3 sentinels, one redis_exporter per node),
# `tally serve`, `tally web` and `tally worker`, scraped with the labels the chart's
# ServiceMonitors produce and evaluated with the chart's PrometheusRule. It asserts that
#   - no alert is pending or firing in the healthy state;
#   - every query of every dashboard panel returns data (after the faults at the latest);
#   - each fault below fires its alerts, and Alertmanager delivers them to a webhook of ours:
#     a poison job, SIGKILL of the Redis master, Redis full, slow writes, frozen replicas, a
#     killed replica, a failing snapshot, a connection flood, repeated handovers
#     (scripts/monitoring-faults.sh), the master's exporter stopped, and SIGKILL of serve, web and
#     worker (a crashed pod: its target stays, as a not-ready pod's does).
# It prints "N of M panels return data" and a table of alert / fault / seconds to fire.
#
#   scripts/test-monitoring.sh          TALLY_BIN (default target/debug/tally) is copied first
#   TALLY_MONITORING_KEEP=1             keep the work directory (logs, configs, alert snapshots)
#
# The rules' `for:` windows (1-15 min) are cut to 5 s in the test's copy: the windows themselves
# are unit-tested by promtool (scripts/check-monitoring.sh). The table gives the time to the
# condition (the alert's activeAt), to firing here, to the webhook, and the chart's `for`; in a
# cluster add the `for` and up to one scrape (30 s) and evaluation interval to the first column.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# shellcheck source=scripts/monitoring-lib.sh
. scripts/monitoring-lib.sh
# shellcheck source=scripts/monitoring-faults.sh
. scripts/monitoring-faults.sh
T_START=$(now)
NS=tally          # the namespace and release the labels and rules are rendered for
RELEASE=tally
FOR_IN_TEST=5s
FAILURES=0

# ----------------------------------------------------------------------------- tools
# Debian's packages try to start their daemons on install; policy-rc.d usually forbids it. A
# daemon that did start is stopped: ours run on ports and data directories of their own.
fresh=()
for pair in prometheus:prometheus prometheus-alertmanager:prometheus-alertmanager \
  prometheus-redis-exporter:prometheus-redis-exporter redis-server:redis-server \
  redis-sentinel:redis-sentinel; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || fresh+=("${pair#*:}")
done
need_packages prometheus:prometheus prometheus-alertmanager:prometheus-alertmanager \
  prometheus-redis-exporter:prometheus-redis-exporter redis-server:redis-server \
  redis-sentinel:redis-sentinel redis-cli:redis-tools jq:jq curl:curl runuser:util-linux
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  install_packages postgresql
  fresh+=(postgresql)
fi
for svc in "${fresh[@]}"; do
  if [ -x "/etc/init.d/$svc" ] && as_root "/etc/init.d/$svc" status >/dev/null 2>&1; then
    log "stopping the $svc daemon its package started"
    as_root "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
  fi
done
# helm renders the rules, from check-chart.sh's git-ignored .tools (installed there when missing).
TOOLS=${TALLY_TOOLS_DIR:-$ROOT/.tools}
[ -x "$TOOLS/bin/helm" ] || bash scripts/check-chart.sh --tools
HELM=$TOOLS/bin/helm

WORK=$(mktemp -d /tmp/tally-monitoring.XXXXXX)
mkdir -p "$WORK/logs"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# A copy: the binary may be rebuilt while this runs.
cp "${TALLY_BIN:-$ROOT/target/debug/tally}" "$WORK/tally"
TALLY=$WORK/tally

REDIS_PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -dc A-Za-z0-9)
PG_PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -dc A-Za-z0-9)
printf '%s' "$REDIS_PASSWORD" >"$WORK/redis-password"
printf '%s' "$PG_PASSWORD" >"$WORK/pg-password"
chmod 600 "$WORK/redis-password" "$WORK/pg-password"

read -r -a P <<<"$(free_ports 21)"
REDIS_PORT=("${P[@]:0:3}") SENTINEL_PORT=("${P[@]:3:3}") EXPORTER_PORT=("${P[@]:6:3}")
SERVE_PORT=${P[9]} SERVE_ADMIN=${P[10]} WEB_PORT=${P[11]} WEB_ADMIN=${P[12]} WORKER_ADMIN=${P[13]}
PG_PORT=${P[14]} PROM_PORT=${P[15]} AM_PORT=${P[16]} HOOK_PORT=${P[17]}

# ----------------------------------------------------------------------------- rules
# The chart's PrometheusRule as ci/monitoring.yaml renders it, with the web and job tiers on.
"$HELM" template "$RELEASE" deploy/helm/tally --namespace "$NS" \
  -f deploy/helm/tally/ci/monitoring.yaml --set web.enabled=true --set jobs.enabled=true \
  --show-only templates/prometheusrule.yaml >"$WORK/prometheusrule.yaml"
# alert -> the chart's `for` (none: fires at the first true evaluation)
awk '/- alert:/ { a = $3 } /^ +for:/ { print a "\t" $2 }' "$WORK/prometheusrule.yaml" >"$WORK/for.tsv"
# spec.groups as a rules file, with the short `for`.
awk 'on { sub(/^  /, ""); print } /^spec:/ { on = 1 }' "$WORK/prometheusrule.yaml" \
  | sed -E "s/^( +)for: .*/\1for: $FOR_IN_TEST/" >"$WORK/rules.yaml"

# ----------------------------------------------------------------------------- Prometheus
# One job per Service, named as the Operator names it (job = the Service), with the labels its
# ServiceMonitors put on a pod's target: namespace, service, pod, container, endpoint.
target() { # PORT SERVICE POD CONTAINER ENDPOINT
  cat <<EOF
  - job_name: $2
    static_configs:
      - targets: ["127.0.0.1:$1"]
        labels: {namespace: $NS, service: $2, pod: $3, container: $4, endpoint: $5}
EOF
}
{
  cat <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [$WORK/rules.yaml]
alerting:
  alertmanagers:
    - static_configs: [{targets: ["127.0.0.1:$AM_PORT"]}]
scrape_configs:
EOF
  target "$SERVE_ADMIN" "$RELEASE-admin" "$RELEASE-serve-0" tally admin
  target "$WEB_ADMIN" "$RELEASE-web-admin" "$RELEASE-web-0" web admin
  target "$WORKER_ADMIN" "$RELEASE-worker-admin" "$RELEASE-worker-0" worker admin
  # The exporters share one job, as the pods of one Service do.
  cat <<EOF
  - job_name: $RELEASE-redis-metrics
    static_configs:
EOF
  for i in 0 1 2; do
    cat <<EOF
      - targets: ["127.0.0.1:${EXPORTER_PORT[$i]}"]
        labels: {namespace: $NS, service: $RELEASE-redis-metrics, pod: $RELEASE-redis-$i, container: exporter, endpoint: metrics}
EOF
  done
} >"$WORK/prometheus.yml"
promtool check config "$WORK/prometheus.yml" >"$WORK/logs/promtool.log" 2>&1 \
  || die "promtool check config: $(cat "$WORK/logs/promtool.log")"

cat >"$WORK/alertmanager.yml" <<EOF
route:
  receiver: webhook
  group_by: [alertname, pod]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: http://127.0.0.1:$HOOK_PORT/
        send_resolved: true
EOF

# The webhook: appends every notification, with the time it arrived, to webhook.jsonl.
cat >"$WORK/webhook.py" <<'EOF'
import http.server, json, sys, time
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with open(sys.argv[2], "a") as out:
            out.write(json.dumps({"received": time.time(), "payload": body}) + "\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
EOF

# ----------------------------------------------------------------------------- start
log "starting the Sentinel group, exporters, Postgres, Prometheus, Alertmanager, webhook"
redis_node 0
redis_node 1 "${REDIS_PORT[0]}"
redis_node 2 "${REDIS_PORT[0]}"
wait_until 20 "Redis master up" rcli "${REDIS_PORT[0]}" ping
for i in 0 1 2; do sentinel_node "$i"; exporter_node "$i"; done
postgres_start
spawn webhook python3 "$WORK/webhook.py" "$HOOK_PORT" "$WORK/webhook.jsonl"
spawn alertmanager prometheus-alertmanager --config.file="$WORK/alertmanager.yml" \
  --storage.path="$WORK/am" --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address=
spawn prometheus prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --storage.tsdb.retention.time=1h
wait_until 30 "replicas in sync and known to every sentinel" replicas_in_sync "${REDIS_PORT[0]}" 2

# Sentinel mode, secrets from files (as the chart mounts them), JSON logs, one thread each.
export TALLY_REDIS_SENTINELS="127.0.0.1:${SENTINEL_PORT[0]},127.0.0.1:${SENTINEL_PORT[1]},127.0.0.1:${SENTINEL_PORT[2]}"
export TALLY_REDIS_PASSWORD_FILE=$WORK/redis-password TALLY_SENTINEL_PASSWORD_FILE=$WORK/redis-password
export TALLY_LOG_FORMAT=json TALLY_WORKER_THREADS=1
# A low connection cap, for the connection-flood fault.
spawn serve env TALLY_LISTEN="127.0.0.1:$SERVE_PORT" TALLY_ADMIN_LISTEN="127.0.0.1:$SERVE_ADMIN" \
  TALLY_MAX_CONNECTIONS=32 \
  TALLY_DATABASE_URL="postgres://tally@127.0.0.1:$PG_PORT/postgres" \
  TALLY_DATABASE_PASSWORD_FILE="$WORK/pg-password" "$TALLY" serve
# The worker's index bound is below serve's, so an index serve accepts is a poison job here.
spawn worker env TALLY_ADMIN_LISTEN="127.0.0.1:$WORKER_ADMIN" TALLY_WORKER_NAME="$RELEASE-worker-0" \
  TALLY_FIB_MAX_INDEX=100 "$TALLY" worker
spawn web env TALLY_LISTEN="127.0.0.1:$WEB_PORT" TALLY_ADMIN_LISTEN="127.0.0.1:$WEB_ADMIN" \
  TALLY_API_URL="http://127.0.0.1:$SERVE_PORT" "$TALLY" web
wait_until 30 "serve ready" curl -fsS "http://127.0.0.1:$SERVE_ADMIN/readyz"
wait_until 30 "web ready" curl -fsS "http://127.0.0.1:$WEB_ADMIN/readyz"
wait_until 30 "worker ready" curl -fsS "http://127.0.0.1:$WORKER_ADMIN/readyz"
wait_until 30 "Prometheus scraping all 6 targets" targets_up 6
log "all up: serve :$SERVE_PORT, web :$WEB_PORT, Prometheus :$PROM_PORT, Alertmanager :$AM_PORT"

# Steady light load on both tiers for the whole run (the run stops it before serve goes).
spawn load "$TALLY" check --target "http://127.0.0.1:$SERVE_PORT" --target "http://127.0.0.1:$WEB_PORT" \
  -c 2 --rate 20 -d 300s --timeout 2s --settle-timeout 1s
# The web page, its counter form and the guestbook, through the web tier.
web_traffic() {
  local i
  for i in 1 2 3; do
    curl -fsS -o /dev/null "http://127.0.0.1:$WEB_PORT/"
    curl -fsS -o /dev/null -X POST -d id=monitoring "http://127.0.0.1:$WEB_PORT/web/counter" || true
    curl -fsS -o /dev/null -H 'Content-Type: application/json' -d "{\"text\":\"hello $i\"}" \
      "http://127.0.0.1:$WEB_PORT/api/v1/messages"
  done
}
web_traffic
fib() { curl -fsS -o /dev/null -H 'Content-Type: application/json' -d "{\"index\":$1}" \
  "http://127.0.0.1:$WEB_PORT/api/v1/fib"; }
fib 40
# rate() over [5m] needs two samples and the panels' windows some history.
sleep 12

# ----------------------------------------------------------------------------- healthy state
quiet=$(active_alerts)
if [ -n "$quiet" ]; then
  log "FAIL: alerts pending or firing in the healthy state:"; printf '  %s\n' "$quiet" >&2
  FAILURES=$((FAILURES + 1))
else
  log "healthy state: no alert pending or firing"
fi
check_panels baseline

# ----------------------------------------------------------------------------- faults
: >"$WORK/table.tsv"
t=$(now); fib 5000
log "poison job submitted (index 5000 > the worker's bound 100)"
watch_alerts "poison job (dead-lettered)" "$t" 30 TallyJobsDeadLettered

m=$(sentinel_master_port)
[ "$m" = "${REDIS_PORT[0]}" ] || die "the master is not node 0 (sentinels say $m)"
t=$(now); halt redis-0 KILL
log "SIGKILLed the Redis master (node 0)"
watch_alerts "SIGKILL Redis master" "$t" 60 TallyRedisFailover "TallyRedisDown@$RELEASE-redis-0"
new=$(sentinel_master_port)
log "new master on :$new; node 0 restarts as its replica, as start-redis.sh asks the sentinels"
redis_node 0 "$new"
wait_until 30 "node 0 back in sync" replicas_in_sync "$new" 2
wait_until 20 "TallyRedisDown resolved" bash -c "! curl -fsS 'http://127.0.0.1:$PROM_PORT/api/v1/alerts' | grep -q TallyRedisDown"

more_faults "$new"
fib 41; web_traffic; sleep 3
check_panels after-faults

mi=$(index_of "$(sentinel_master_port)")
t=$(now); halt "exporter-$mi"
log "stopped the exporter of the master (node $mi)"
watch_alerts "exporter of the master stopped" "$t" 30 "TallyRedisDown@$RELEASE-redis-$mi"

halt load
t=$(now); halt serve KILL
log "SIGKILLed tally serve"
watch_alerts "SIGKILL tally serve" "$t" 30 "TallyInstanceDown@$RELEASE-serve-0" TallyWebApiUnreachable

t=$(now); halt web KILL
log "SIGKILLed tally web"
watch_alerts "SIGKILL tally web" "$t" 30 "TallyWebInstanceDown@$RELEASE-web-0"

t=$(now); halt worker KILL
log "SIGKILLed tally worker"
watch_alerts "SIGKILL tally worker" "$t" 30 "TallyWorkerDown@$RELEASE-worker-0" TallyNoWorkers

# ----------------------------------------------------------------------------- report
report
