#!/usr/bin/env bash
# Offline checks of deploy/terraform, without a terraform binary (none can be installed here, so
# `terraform validate` and `terraform plan` are not run; docs/provisioning.md says what this
# covers and what it does not):
#   1. every .tf, .tfvars.example and .hcl.example file parses as HCL (python-hcl2);
#   2. the tables of deploy/terraform/README.md match the HCL (scripts/terraform-docs.py --check);
#   3. the values the tally-release module passes to helm_release pass the chart's
#      values.schema.json, helm lint --strict and helm template (deploy/terraform/tests);
#   4. checkov's terraform framework with .checkov.yaml (our checks included): 0 failed, and
#      at least one check ran.
#
#   scripts/check-terraform.sh          run the checks (scripts/check-chart.sh runs this too)
#   scripts/check-terraform.sh --docs   rewrite the README tables first
# python-hcl2, jsonschema and PyYAML are installed, pinned, into the git-ignored
# .tools/terraform-venv; helm and checkov come from scripts/check-chart.sh --tools.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${TALLY_TOOLS_DIR:-$ROOT/.tools}
VENV=$TOOLS/terraform-venv
PY_TF_TOOLS=(python-hcl2==8.1.4 jsonschema==4.26.0 pyyaml==6.0.4)
HELM=$TOOLS/bin/helm
CHECKOV=$TOOLS/checkov-venv/bin/checkov

case "${1:-}" in
  "" | --docs) ;;
  -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--docs]" >&2; exit 2 ;;
esac

log() { printf '==> %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import hcl2, jsonschema, yaml' 2>/dev/null; then
  log "installing ${PY_TF_TOOLS[*]} into .tools/terraform-venv"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_TF_TOOLS[@]}"
fi
if [ ! -x "$HELM" ] || [ ! -x "$CHECKOV" ]; then
  bash "$ROOT/scripts/check-chart.sh" --tools
fi
PY=$VENV/bin/python

[ "${1:-}" = --docs ] && "$PY" "$ROOT/scripts/terraform-docs.py"

FAILED=0
RESULTS=()
# check NAME CMD...: runs one check, prints its output, records PASS/FAIL with its time
check() {
  local name=$1 t0=$SECONDS rc=0
  shift
  printf -- '---- %s\n' "$name"
  "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then
    RESULTS+=("PASS  $name ($((SECONDS - t0))s)")
  else
    RESULTS+=("FAIL  $name ($((SECONDS - t0))s)")
    FAILED=$((FAILED + 1))
  fi
}

checkov_terraform() {
  local out rc=0 passed
  # From the root: .checkov.yaml names its external checks relative to it.
  out=$(cd "$ROOT" && "$CHECKOV" -d deploy/terraform --framework terraform \
    --config-file "$ROOT/.checkov.yaml" --compact 2>&1) || rc=$?
  printf '%s\n' "$out" | sed -n '/scan results/,$p'
  passed=$(printf '%s\n' "$out" | sed -n 's/^Passed checks: \([0-9]*\),.*/\1/p' | awk 'NR == 1')
  if [ -z "$passed" ] || [ "$passed" -eq 0 ]; then
    echo "checkov ran no check on deploy/terraform: the custom checks did not load"
    return 1
  fi
  return "$rc"
}

check "HCL parses (python-hcl2)" "$PY" "$ROOT/scripts/terraform-docs.py" --parse
check "deploy/terraform/README.md tables match the HCL" "$PY" "$ROOT/scripts/terraform-docs.py" --check
check "helm_release values pass values.schema.json and helm lint" \
  "$PY" "$ROOT/deploy/terraform/tests/chart_values.py" "$HELM"
check "checkov --framework terraform (.checkov.yaml)" checkov_terraform

printf '\n==== check-terraform summary\n'
printf '%s\n' "${RESULTS[@]}"
if [ "$FAILED" -gt 0 ]; then
  echo "$FAILED terraform check(s) failed"
  exit 1
fi
echo "all terraform checks passed (terraform validate / plan not run: no terraform binary here)"
