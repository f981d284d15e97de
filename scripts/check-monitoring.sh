#!/usr/bin/env bash
# Offline checks of the chart's monitoring with Prometheus's own tool, promtool (Debian's
# `prometheus` package, installed when missing):
#   - promtool check rules: the PrometheusRule of every value set in ci/ that renders one;
#   - promtool check config: a Prometheus configuration with a job per endpoint of the rendered
#     ServiceMonitors (the Services they select must exist, with the ports they name) that loads
#     those rules;
#   - every query of the Grafana dashboard parses, with its variables filled in;
#   - promtool test rules: the unit tests in deploy/monitoring/rule-tests/ against the rules
#     rendered with every group on (ci/monitoring.yaml, web, jobs and backups);
#   - every alert has a test case where it fires and one where it must not.
# Called by scripts/check-chart.sh; runs alone too. helm comes from check-chart.sh's .tools/.
#
#   scripts/check-monitoring.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${TALLY_TOOLS_DIR:-$ROOT/.tools}
CHART=$ROOT/deploy/helm/tally
TESTS=$ROOT/deploy/monitoring/rule-tests
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

need_packages promtool:prometheus
if [ ! -x "$TOOLS/bin/helm" ] || [ ! -x "$TOOLS/venv/bin/python" ]; then
  bash "$ROOT/scripts/check-chart.sh" --tools
fi
HELM=$TOOLS/bin/helm
PY=$TOOLS/venv/bin/python # has PyYAML (yamllint's dependency)

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=0
check() { # check NAME CMD...: runs one check, prints PASS or FAIL with its output
  local name=$1 out rc=0
  shift
  out=$("$@" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "PASS  $name"
  else
    echo "FAIL  $name"
    printf '%s\n' "$out" | sed 's/^/      /'
    FAILED=$((FAILED + 1))
  fi
}
render() { # render OUT HELM-ARGS...: the chart as release tally in namespace tally
  local out=$1
  shift
  "$HELM" template tally "$CHART" --namespace tally "$@" >"$out"
}
# extract KIND IN OUT [RULES...]: from a render, the spec.groups of its PrometheusRules as a rules
# file; or its ServiceMonitors as a Prometheus configuration loading RULES, one job per endpoint
# as the Operator makes them, with the endpoint's interval, timeout, path and scheme. Debian's
# Prometheus is built without Kubernetes service discovery, so a job's target is the selected
# Service's DNS name and the port its endpoint names.
extract() {
  "$PY" - "$@" <<'EOF'
import sys, yaml
kind, src, dst = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(src)) if d]
if kind == "PrometheusRule":
    groups = [g for d in docs if d["kind"] == kind for g in d["spec"]["groups"]]
    if groups:
        yaml.safe_dump({"groups": groups}, open(dst, "w"), sort_keys=False)
    sys.exit(0)
services = [d for d in docs if d["kind"] == "Service"]
jobs = []
for d in (d for d in docs if d["kind"] == "ServiceMonitor"):
    spec, ns = d["spec"], d["metadata"]["namespace"]
    want = spec["selector"]["matchLabels"]
    chosen = [s for s in services if want.items() <= s["metadata"].get("labels", {}).items()]
    if not chosen:
        sys.exit(f"ServiceMonitor {d['metadata']['name']} selects no Service of the render")
    for i, ep in enumerate(spec["endpoints"]):
        targets = []
        for s in chosen:
            ports = [p["port"] for p in s["spec"]["ports"] if p.get("name") == ep["port"]]
            if not ports:
                sys.exit(f"Service {s['metadata']['name']} has no port named {ep['port']}")
            targets.append(f"{s['metadata']['name']}.{ns}.svc:{ports[0]}")
        job = {"job_name": f"serviceMonitor/{ns}/{d['metadata']['name']}/{i}",
               "metrics_path": ep.get("path", "/metrics"), "scheme": ep.get("scheme", "http"),
               "static_configs": [{"targets": targets, "labels": {"namespace": ns, "endpoint": ep["port"]}}]}
        for k, v in (("interval", "scrape_interval"), ("scrapeTimeout", "scrape_timeout")):
            if k in ep:
                job[v] = ep[k]
        jobs.append(job)
yaml.safe_dump({"global": {"evaluation_interval": "30s"}, "rule_files": sys.argv[4:],
                "scrape_configs": jobs}, open(dst, "w"), sort_keys=False)
EOF
}

# ----------------------------------------------------------------------------- every ci/ set
for f in "$CHART"/ci/*.yaml; do
  set=$(basename "$f" .yaml)
  render "$WORK/$set.yaml" --values "$f"
  extract PrometheusRule "$WORK/$set.yaml" "$WORK/$set.rules.yaml"
  [ -f "$WORK/$set.rules.yaml" ] || continue
  check "promtool check rules ($set)" promtool check rules "$WORK/$set.rules.yaml"
  extract ServiceMonitor "$WORK/$set.yaml" "$WORK/$set.prometheus.yml" "$WORK/$set.rules.yaml"
  check "promtool check config: ServiceMonitors as scrape jobs + rules ($set)" \
    promtool check config "$WORK/$set.prometheus.yml"
done

# ----------------------------------------------------------------------------- all groups on
render "$WORK/all.yaml" --values "$CHART/ci/monitoring.yaml" --set web.enabled=true --set jobs.enabled=true \
  --set redis.backup.enabled=true
mkdir -p "$WORK/tests"
extract PrometheusRule "$WORK/all.yaml" "$WORK/tests/rules.yaml"
cp "$TESTS"/*.test.yaml "$WORK/tests/"
unit_tests() { (cd "$WORK/tests" && promtool test rules ./*.test.yaml); }
check "promtool test rules ($(find "$TESTS" -name '*.test.yaml' | wc -l) files)" unit_tests

# Every alert: a case that fires it (exp_alerts not empty) and one that must not (empty).
coverage() {
  "$PY" - "$WORK/tests/rules.yaml" "$TESTS"/*.test.yaml <<'EOF'
import sys, yaml
rules = yaml.safe_load(open(sys.argv[1]))
alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
fires, silent, cases = set(), set(), 0
for path in sys.argv[2:]:
    for t in yaml.safe_load(open(path))["tests"]:
        for a in t.get("alert_rule_test", []):
            cases += 1
            (fires if a.get("exp_alerts") else silent).add(a["alertname"])
missing = [f"{a}: no case where it {'fires' if a not in fires else 'stays silent'}"
           for a in alerts if a not in fires or a not in silent]
unknown = sorted((fires | silent) - set(alerts))
for line in missing + [f"{a}: tested but not in the rules" for a in unknown]:
    print(line)
print(f"{len(alerts)} alerts, {cases} alert test cases")
sys.exit(1 if missing or unknown else 0)
EOF
}
check "every alert has a firing and a silent test case" coverage

# Dashboard queries parse: each becomes a recording rule, Grafana's variables filled in.
dashboard_rules() {
  "$PY" - "$CHART/dashboards/tally.json" "$WORK/dashboard.rules.yaml" <<'EOF'
import json, sys, yaml
d = json.load(open(sys.argv[1]))
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
rules = []
for p in panels(d["panels"]):
    for t in p.get("targets", []):
        e = t["expr"]
        for var, val in (("${namespace}", "tally"), ("$namespace", "tally"), ("${release}", "tally"),
                         ("$release", "tally"), ("$__rate_interval", "1m"), ("$__interval", "30s")):
            e = e.replace(var, val)
        if "$" in e.replace("$value", ""):
            sys.exit(f"panel {p['id']} ({p['title']}): an unknown variable in {e}")
        rules.append({"record": f"dashboard:panel_{p['id']}_{t['refId']}", "expr": e})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
print(f"{len(rules)} queries")
EOF
  promtool check rules "$WORK/dashboard.rules.yaml"
}
check "every dashboard query parses (promtool)" dashboard_rules

[ "$FAILED" -eq 0 ] || { echo "$FAILED monitoring check(s) failed"; exit 1; }
echo "all monitoring checks passed"
