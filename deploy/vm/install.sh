#!/usr/bin/env bash
# Installs tally with its Redis Sentinel group on a fresh Ubuntu 22.04 / 24.04 machine:
# k3s (single-node Kubernetes with a LoadBalancer implementation and local volumes), helm, the
# tally image built from this repository and imported into k3s, then the Helm chart.
# Safe to run again: every step checks what is already there, and an unchanged image does not
# restart the pods.
#
#   sudo deploy/vm/install.sh                      install or upgrade
#   sudo deploy/vm/install.sh --uninstall          remove the release (keeps the Redis volumes and
#                                                  the password Secret, so a reinstall keeps data)
#   sudo deploy/vm/install.sh --uninstall --purge  also delete the namespace with its data
#   sudo deploy/vm/install.sh --uninstall --remove-k3s   also uninstall k3s itself
#
# Options:
#   --namespace NAME      Kubernetes namespace (default: tally)
#   --release NAME        Helm release name (default: tally)
#   --values FILE         extra Helm values file (repeatable)
#   --port N              Service port on the machine (default: 80, or 8080 when 80 is taken)
#   --image REPO:TAG      use this image instead of building one (it must be pullable or already
#                         imported into k3s)
#   --builder NAME        docker | nerdctl | buildah (default: the first one installed, else
#                         buildah from the Ubuntu archive)
#   --registry HOST:PORT  push the image (built, or --image) to this registry and install it by
#                         digest, instead of importing it into k3s (also: TALLY_REGISTRY). A
#                         registry on 127.0.0.1/localhost is plain HTTP and is added to k3s'
#                         /etc/rancher/k3s/registries.yaml; others must serve HTTPS.
#   --local-registry      run the distribution's docker-registry on 127.0.0.1:5000 (service
#                         tally-registry, storage /var/lib/docker-registry), use it as --registry
#   --dry-run             print the commands that would change the machine, change nothing
# Environment: K3S_VERSION (e.g. v1.31.4+k3s1, default: k3s's stable channel), HELM_VERSION
# (default v3.17.3), TIMEOUT (rollout wait, default 600s).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CHART=$ROOT/deploy/helm/tally
NAMESPACE=tally
RELEASE=tally
PORT=""
IMAGE=""
BUILDER=""
REGISTRY=${TALLY_REGISTRY:-}
LOCAL_REGISTRY=0
DIGEST=""
ACTION=install
PURGE=0
REMOVE_K3S=0
DRY_RUN=0
VALUES=()
HELM_VERSION=${HELM_VERSION:-v3.17.3}
K3S_VERSION=${K3S_VERSION:-}
TIMEOUT=${TIMEOUT:-600s}
KUBECONFIG=/etc/rancher/k3s/k3s.yaml
export KUBECONFIG

usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }
say() { printf '\n==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }
# run CMD...: a command that changes the machine; printed instead under --dry-run
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '[dry-run] %s\n' "$*"
  else
    "$@"
  fi
}
# query CMD...: a command that only reads state; under --dry-run it prints a placeholder
query() {
  if [ "$DRY_RUN" = 1 ]; then
    echo dryrun000000
  else
    "$@"
  fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    --uninstall) ACTION=uninstall ;;
    --purge) PURGE=1 ;;
    --remove-k3s) REMOVE_K3S=1 ;;
    --namespace) NAMESPACE=${2:?--namespace needs a value}; shift ;;
    --release) RELEASE=${2:?--release needs a value}; shift ;;
    --values) VALUES+=(--values "${2:?--values needs a file}"); shift ;;
    --port) PORT=${2:?--port needs a value}; shift ;;
    --image) IMAGE=${2:?--image needs REPO:TAG}; shift ;;
    --builder) BUILDER=${2:?--builder needs a value}; shift ;;
    --registry) REGISTRY=${2:?--registry needs HOST:PORT}; shift ;;
    --local-registry) LOCAL_REGISTRY=1 REGISTRY=127.0.0.1:5000 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

if [ "$(id -u)" -ne 0 ] && [ "$DRY_RUN" = 0 ]; then
  die "run as root: sudo $0 $*"
fi

check_os() {
  local id="" version=""
  if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091 # a system file
    id=$(. /etc/os-release && echo "${ID:-}")
    # shellcheck disable=SC1091
    version=$(. /etc/os-release && echo "${VERSION_ID:-}")
  fi
  case "$id:$version" in
    ubuntu:22.04 | ubuntu:24.04) ;;
    *) echo "warning: made for Ubuntu 22.04/24.04, this is ${id:-unknown} ${version:-}; going on" ;;
  esac
}

apt_install() { # apt_install PKG...: installs the packages that are missing
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  run apt-get update -qq
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# ----------------------------------------------------------------------------- k3s
install_k3s() {
  if command -v k3s >/dev/null 2>&1; then
    say "k3s is installed ($(k3s --version | head -n1))"
  else
    say "installing k3s ${K3S_VERSION:-(stable channel)}"
    apt_install curl ca-certificates
    local script
    script=$(mktemp)
    run curl -sfL https://get.k3s.io -o "$script"
    # Traefik is not needed (the Service is a LoadBalancer) and would take port 80.
    run env INSTALL_K3S_VERSION="$K3S_VERSION" INSTALL_K3S_EXEC="--disable=traefik" \
      K3S_KUBECONFIG_MODE=600 sh "$script"
    rm -f "$script"
  fi
  [ "$DRY_RUN" = 1 ] && return 0
  say "waiting for the node to be Ready"
  local i
  for i in $(seq 1 60); do
    if k3s kubectl get nodes 2>/dev/null | grep -q ' Ready '; then break; fi
    [ "$i" = 60 ] && die "the k3s node is not Ready after 5 minutes: journalctl -u k3s"
    sleep 5
  done
  k3s kubectl get nodes
}

# ----------------------------------------------------------------------------- helm
install_helm() {
  if command -v helm >/dev/null 2>&1; then
    say "helm is installed ($(helm version --short))"
    return 0
  fi
  say "installing helm $HELM_VERSION"
  apt_install curl ca-certificates
  local arch tmp
  case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) die "unsupported architecture $(uname -m)" ;;
  esac
  tmp=$(mktemp -d)
  local tgz="helm-$HELM_VERSION-linux-$arch.tar.gz"
  run curl -sfL "https://get.helm.sh/$tgz" -o "$tmp/$tgz"
  run curl -sfL "https://get.helm.sh/$tgz.sha256sum" -o "$tmp/$tgz.sha256sum"
  if [ "$DRY_RUN" = 0 ]; then
    (cd "$tmp" && sha256sum -c "$tgz.sha256sum") || die "helm download checksum mismatch"
    tar -xzf "$tmp/$tgz" -C "$tmp"
    install -m 0755 "$tmp/linux-$arch/helm" /usr/local/bin/helm
  fi
  rm -rf "$tmp"
}

# ----------------------------------------------------------------------------- image
pick_builder() {
  if [ -n "$BUILDER" ]; then return 0; fi
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then BUILDER=docker
  elif command -v nerdctl >/dev/null 2>&1; then BUILDER=nerdctl
  else BUILDER=buildah
  fi
}

build_image() {
  if [ -n "$IMAGE" ] && [ -z "$REGISTRY" ]; then
    say "using the image $IMAGE (not building)"
    return 0
  fi
  pick_builder
  [ -n "$IMAGE" ] || build_local
  if [ -n "$REGISTRY" ]; then push_image; else import_image; fi
}

build_local() {
  [ -f "$ROOT/Dockerfile" ] || die "no Dockerfile in $ROOT: pass --image REPO:TAG"
  say "building the tally image with $BUILDER"
  local id
  case "$BUILDER" in
    docker)
      run docker build -t tally:build "$ROOT"
      id=$(query docker image inspect --format '{{.Id}}' tally:build)
      ;;
    nerdctl)
      run nerdctl build -t tally:build "$ROOT"
      id=$(query nerdctl image inspect --format '{{.ID}}' tally:build)
      ;;
    buildah)
      apt_install buildah
      run buildah bud --layers -t tally:build "$ROOT"
      id=$(query buildah images --noheading --format '{{.ID}}' tally:build | head -n1)
      ;;
    *) die "unknown builder $BUILDER (docker, nerdctl or buildah)" ;;
  esac
  # The tag is the image's content id: an unchanged build keeps the tag, so helm upgrade does not
  # restart the pods; a changed build rolls them.
  id=${id#sha256:}
  IMAGE=tally:${id:0:12}
  run "$BUILDER" tag tally:build "$IMAGE"
}

import_image() {
  say "importing $IMAGE into k3s"
  local archive
  archive=$(mktemp --suffix=.tar)
  case "$BUILDER" in
    docker | nerdctl) run "$BUILDER" save -o "$archive" "$IMAGE" ;;
    buildah)
      run rm -f "$archive"
      run buildah push "$IMAGE" "docker-archive:$archive:$IMAGE"
      ;;
  esac
  run k3s ctr images import "$archive"
  rm -f "$archive"
}

# ----------------------------------------------------------------------------- registry
registry_is_local() { case "$REGISTRY" in 127.0.0.1:* | localhost:*) return 0 ;; *) return 1 ;; esac; }

# served_digest NAME TAG: the manifest digest a plain-HTTP (local) registry serves.
served_digest() {
  curl -fsI -H "Accept: application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.manifest.v1+json" \
    "http://$REGISTRY/v2/$1/manifests/$2" | tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

# push_image: IMAGE to REGISTRY/<name>:<tag>; the chart then runs it by digest (DIGEST).
push_image() {
  local name=${IMAGE%:*} tag=${IMAGE##*:} target digestfile tls=true
  name=${name##*/}
  target=$REGISTRY/$name:$tag
  registry_is_local && tls=false
  say "pushing $IMAGE to $target"
  digestfile=$(mktemp)
  case "$BUILDER" in
    docker)
      run docker tag "$IMAGE" "$target"
      run docker push "$target"
      query docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$target" \
        | sed -n "s|^$REGISTRY/$name@||p" | awk 'NR == 1' >"$digestfile"
      ;;
    nerdctl)
      run nerdctl tag "$IMAGE" "$target"
      run nerdctl push --insecure-registry="$([ "$tls" = false ] && echo true || echo false)" "$target"
      if [ "$tls" = false ]; then query served_digest "$name" "$tag" >"$digestfile"; fi
      ;;
    buildah) run buildah push --tls-verify="$tls" --digestfile "$digestfile" "$IMAGE" "docker://$target" ;;
  esac
  DIGEST=$(cat "$digestfile")
  rm -f "$digestfile"
  if [ "$DRY_RUN" = 1 ]; then DIGEST=sha256:$(printf '%064d' 0); fi
  [[ "$DIGEST" =~ ^sha256:[0-9a-f]{64}$ ]] || die "could not read the digest of $target (got '$DIGEST')"
  if [ "$tls" = false ] && [ "$DRY_RUN" = 0 ]; then
    local served
    served=$(served_digest "$name" "$tag")
    [ "$served" = "$DIGEST" ] || die "pushed digest $DIGEST, but the registry serves '$served'"
  fi
  echo "pushed $target, digest $DIGEST"
  IMAGE=$target
}

# start_local_registry: docker-registry on 127.0.0.1:5000 as the service tally-registry. The
# package's own service (all interfaces, htpasswd auth) is stopped: it would hold the port.
start_local_registry() {
  say "local registry on 127.0.0.1:5000 (service tally-registry)"
  apt_install docker-registry curl
  run systemctl disable --now docker-registry.service || true
  [ "$DRY_RUN" = 1 ] && return 0
  mkdir -p /etc/tally
  printf '%s\n' 'version: 0.1' 'log: {level: warn}' 'http: {addr: "127.0.0.1:5000"}' \
    'storage: {filesystem: {rootdirectory: /var/lib/docker-registry}, delete: {enabled: true}}' \
    >/etc/tally/registry.yml
  printf '%s\n' '[Unit]' 'Description=Container registry on 127.0.0.1:5000 (deploy/vm/install.sh)' \
    'After=network.target' '' '[Service]' 'User=docker-registry' \
    'ExecStart=/usr/bin/docker-registry serve /etc/tally/registry.yml' 'Restart=on-failure' '' \
    '[Install]' 'WantedBy=multi-user.target' >/etc/systemd/system/tally-registry.service
  systemctl daemon-reload
  systemctl enable --now tally-registry.service
  for _ in $(seq 1 30); do
    curl -fs http://127.0.0.1:5000/v2/ >/dev/null && return 0
    sleep 1
  done
  die "the registry on 127.0.0.1:5000 does not answer: journalctl -u tally-registry"
}

# k3s pulls from a plain-HTTP registry only when registries.yaml names it, and reads the file
# when it starts.
configure_k3s_registry() {
  registry_is_local || return 0
  local file=/etc/rancher/k3s/registries.yaml
  if [ -f "$file" ]; then
    grep -qF "\"$REGISTRY\"" "$file" && return 0
    die "$file exists without \"$REGISTRY\": add it as a mirror with endpoint http://$REGISTRY, then run again"
  fi
  say "letting k3s pull from http://$REGISTRY ($file)"
  run mkdir -p /etc/rancher/k3s
  if [ "$DRY_RUN" = 0 ]; then
    printf 'mirrors:\n  "%s":\n    endpoint:\n      - "http://%s"\n' "$REGISTRY" "$REGISTRY" >"$file"
  fi
  if command -v k3s >/dev/null 2>&1; then run systemctl restart k3s; fi
}

# ----------------------------------------------------------------------------- chart
pick_port() {
  if [ -n "$PORT" ]; then return 0; fi
  PORT=80
  [ "$DRY_RUN" = 1 ] && return 0
  # Another LoadBalancer Service on port 80 (e.g. k3s' Traefik on an existing cluster) would
  # keep ours pending on a single node.
  local taken
  taken=$(k3s kubectl get svc -A -o jsonpath='{range .items[?(@.spec.type=="LoadBalancer")]}{.metadata.namespace}/{.metadata.name} {.spec.ports[*].port}{"\n"}{end}' \
    | grep -v "^$NAMESPACE/" | awk '{for (i = 2; i <= NF; i++) if ($i == 80) print $1}' || true)
  if [ -n "$taken" ]; then
    echo "port 80 is taken by $taken: using 8080"
    PORT=8080
  fi
}

install_chart() {
  pick_port
  local repo=${IMAGE%:*} tag=${IMAGE##*:}
  say "helm upgrade --install $RELEASE (namespace $NAMESPACE, image $IMAGE, port $PORT)"
  run helm upgrade --install "$RELEASE" "$CHART" \
    --namespace "$NAMESPACE" --create-namespace \
    --set image.repository="$repo" --set image.tag="$tag" --set image.digest="$DIGEST" \
    --set service.port="$PORT" \
    "${VALUES[@]}" \
    --wait --timeout "$TIMEOUT"
  say "waiting for the rollout"
  local fullname
  fullname=$(query k3s kubectl -n "$NAMESPACE" get deploy \
    -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=app" -o jsonpath='{.items[0].metadata.name}')
  if [ "$DRY_RUN" = 1 ] || [ -z "$fullname" ]; then fullname=$RELEASE; fi
  run k3s kubectl -n "$NAMESPACE" rollout status "statefulset/$fullname-redis" --timeout "$TIMEOUT" || true
  run k3s kubectl -n "$NAMESPACE" rollout status "deployment/$fullname" --timeout "$TIMEOUT"
  [ "$DRY_RUN" = 1 ] && return 0

  local ip
  ip=$(k3s kubectl -n "$NAMESPACE" get svc "$fullname" -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)
  [ -n "$ip" ] || ip=$(hostname -I | awk '{print $1}')
  local url="http://$ip"
  [ "$PORT" = 80 ] || url="$url:$PORT"
  say "tally is running: $url"
  if command -v curl >/dev/null 2>&1; then
    if curl -fsS --max-time 5 "$url/install-check"; then
      echo "  (GET $url/install-check answered)"
    fi
  fi
  cat <<EOF

  curl $url/my-counter            # increments the counter "my-counter"
  helm test $RELEASE -n $NAMESPACE             # tally check against the Service
  export KUBECONFIG=$KUBECONFIG; kubectl -n $NAMESPACE get pods
  Other machines reach it at http://<this machine's address>:$PORT (open the port in the firewall).
EOF
}

uninstall() {
  if command -v helm >/dev/null 2>&1 && [ -r "$KUBECONFIG" ] \
    && helm status "$RELEASE" -n "$NAMESPACE" >/dev/null 2>&1; then
    say "removing the release $RELEASE"
    run helm uninstall "$RELEASE" -n "$NAMESPACE" --wait
  else
    say "release $RELEASE is not installed"
  fi
  if [ "$PURGE" = 1 ] && command -v k3s >/dev/null 2>&1; then
    say "deleting namespace $NAMESPACE (Redis volumes and the password Secret)"
    run k3s kubectl delete namespace "$NAMESPACE" --ignore-not-found --wait
  elif command -v k3s >/dev/null 2>&1; then
    echo "kept in namespace $NAMESPACE: the Redis volumes and the password Secret (--purge deletes them)"
  fi
  if [ "$REMOVE_K3S" = 1 ]; then
    if [ -x /usr/local/bin/k3s-uninstall.sh ]; then
      say "uninstalling k3s"
      run /usr/local/bin/k3s-uninstall.sh
    else
      echo "k3s is not installed"
    fi
  fi
}

case "$ACTION" in
  install)
    check_os
    if [ "$LOCAL_REGISTRY" = 1 ]; then start_local_registry; fi
    if [ -n "$REGISTRY" ]; then configure_k3s_registry; fi
    install_k3s
    install_helm
    build_image
    install_chart
    ;;
  uninstall) uninstall ;;
esac
