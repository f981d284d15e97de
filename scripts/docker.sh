#!/usr/bin/env bash
# Docker for tally's image test and HA harness on a machine without a container registry.
#
#   scripts/docker.sh up        install docker.io + docker-compose if missing, start a private
#                               dockerd (prints the DOCKER_HOST to export)
#   scripts/docker.sh images    build the local stand-in base images (skipped when present)
#   scripts/docker.sh build     build the tally image from ./Dockerfile with the stand-ins
#   scripts/docker.sh smoke     up + images + build + image smoke test, then down
#   scripts/docker.sh registry  up + images + build, push to a registry on 127.0.0.1, pull back
#                               by digest, smoke-test the pulled image, then down (CI runs this)
#   scripts/docker.sh down      stop the private dockerd and remove what it left behind
#   scripts/docker.sh purge     down, then delete the image cache (data root)
#   scripts/docker.sh env       print the exports that point a shell at the private dockerd
# Or source it (`. scripts/docker.sh`) for the functions, as deploy/compose/harness.sh does.
#
# The private dockerd (Debian's docker.io, started by hand: no init system here) listens on its
# own socket, runs with --iptables=false --ip-forward=false --bridge=none, so it changes no
# firewall rule, no sysctl and creates no default bridge; image builds use --network host, and
# containers live on user-defined networks with a fixed subnet that the callers create and remove.
# Its data root is a cache kept across runs, outside the work tree so fresh clones reuse it:
#   TALLY_DOCKER_DATA   image cache (data root)       default: ~/.cache/tally/docker
#   TALLY_DOCKER_RUN    socket, pid, logs, exec root  default: /tmp/tally-dockerd
# No registry is reachable here, so the official base images (the Dockerfile's and compose's
# defaults) are replaced by local stand-ins built from Debian's packages:
#   tally-local/debian:bookworm   debootstrap minbase with the mirror apt already uses, plus the
#                                 host's CA certificates (HTTPS here goes through an intercepting
#                                 proxy; this is a fact of this machine, never of the Dockerfile)
#   tally-local/rust:<version>    that + gcc + the host's own Rust toolchain (rustc --print sysroot)
#   tally-local/runtime:nonroot   a distroless-like image: glibc, libgcc, CA bundle, no shell
#   tally-local/redis:7           that base + Debian's redis-server, redis-sentinel, redis-tools
#   tally-local/haproxy:2.6       that base + Debian's haproxy
# TALLY_IMAGES=official skips the stand-ins and builds with the Dockerfile's defaults (needs a
# registry). TALLY_IMAGE (default tally:local) names the image `build` produces.

DOCKER_SH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$DOCKER_SH_ROOT/scripts/lib.sh"
# shellcheck source=scripts/docker-registry.sh
. "$DOCKER_SH_ROOT/scripts/docker-registry.sh"

TALLY_DOCKER_DATA=${TALLY_DOCKER_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/tally/docker}
TALLY_DOCKER_RUN=${TALLY_DOCKER_RUN:-/tmp/tally-dockerd}
TALLY_IMAGES=${TALLY_IMAGES:-local}
TALLY_IMAGE=${TALLY_IMAGE:-tally:local}
# Debian's client: /usr/local/bin/docker on these machines has no buildx.
DOCKER=${DOCKER:-/usr/bin/docker}
DOCKERD_STARTED=0

LOCAL_BASE=tally-local/debian:bookworm
LOCAL_RUNTIME=tally-local/runtime:nonroot
LOCAL_REDIS=tally-local/redis:7
LOCAL_HAPROXY=tally-local/haproxy:2.6

dlog() { printf '[docker.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# docker_install: Debian's docker.io, docker-compose (v1) and debootstrap when missing.
docker_install() {
  need_packages dockerd:docker.io docker-compose:docker-compose debootstrap:debootstrap
  [ -x "$DOCKER" ] || { dlog "$DOCKER is missing (package docker.io)"; return 1; }
}

docker_env() {
  export DOCKER_HOST="unix://$TALLY_DOCKER_RUN/docker.sock"
  export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
}

# docker_up: starts the private dockerd unless one of ours already answers; DOCKERD_STARTED=1
# when this call started it (so the same caller stops it).
docker_up() {
  docker_env
  if "$DOCKER" info >/dev/null 2>&1; then
    dlog "dockerd already running on $DOCKER_HOST"
    return 0
  fi
  docker_install
  as_root mkdir -p "$TALLY_DOCKER_DATA" "$TALLY_DOCKER_RUN/exec"
  dlog "starting dockerd (data root $TALLY_DOCKER_DATA, log $TALLY_DOCKER_RUN/dockerd.log)"
  # setsid: its own session, so a terminal's Ctrl-C reaches the caller's trap, not dockerd.
  as_root setsid /usr/sbin/dockerd \
    --host "$DOCKER_HOST" \
    --data-root "$TALLY_DOCKER_DATA" \
    --exec-root "$TALLY_DOCKER_RUN/exec" \
    --pidfile "$TALLY_DOCKER_RUN/dockerd.pid" \
    --storage-driver overlay2 \
    --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
    --log-level warn \
    >"$TALLY_DOCKER_RUN/dockerd.log" 2>&1 </dev/null &
  DOCKERD_STARTED=1
  local i
  for i in $(seq 1 60); do
    if "$DOCKER" info >/dev/null 2>&1; then
      dlog "dockerd up after ${i}s"
      return 0
    fi
    sleep 1
  done
  dlog "dockerd did not answer within 60s; its log:"
  tail -n 30 "$TALLY_DOCKER_RUN/dockerd.log" >&2 || true
  return 1
}

# docker_down: stops the private dockerd by its pid and removes what it may leave: mounts under
# its directories and bridges of networks it no longer knows. No iptables rule or sysctl to
# restore: it runs with --iptables=false --ip-forward=false.
docker_down() {
  local pidfile=$TALLY_DOCKER_RUN/dockerd.pid pid i
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    dlog "stopping dockerd (pid $pid)"
    as_root kill -TERM "$pid" || true
    for i in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
      dlog "dockerd still running after 30s: SIGKILL"
      as_root kill -KILL "$pid" || true
      sleep 1
    fi
  fi
  # Mounts left under our directories (overlays, netns bind mounts), deepest first.
  awk -v a="$TALLY_DOCKER_RUN/" -v b="$TALLY_DOCKER_DATA/" \
    'index($2, a) == 1 || index($2, b) == 1 { print $2 }' /proc/self/mounts | sort -r \
    | while read -r m; do as_root umount -l "$m" 2>/dev/null || true; done
  # Bridges of user-defined networks (br-<id>) whose network a killed dockerd did not remove.
  local br
  while read -r br; do
    if [ -n "$br" ] && ip link show "$br" >/dev/null 2>&1; then
      dlog "removing leftover bridge $br"
      as_root ip link delete "$br" || true
    fi
  done < <(cat "$TALLY_DOCKER_RUN/bridges" 2>/dev/null || true)
  rm -f "$TALLY_DOCKER_RUN/bridges" "$pidfile"
  DOCKERD_STARTED=0
}

# note_network NAME: remembers the bridge of a network this run created, for docker_down.
note_network() {
  local id
  id=$("$DOCKER" network inspect -f '{{.Id}}' "$1" 2>/dev/null) || return 0
  echo "br-${id:0:12}" >>"$TALLY_DOCKER_RUN/bridges"
}

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# apt_mirror: the Debian mirror apt already uses (never written into the repository).
apt_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  return 1
}

# build_base: debootstrap minbase bookworm + the host's CA certificates, imported as an image.
build_base() {
  have_image "$LOCAL_BASE" && return 0
  local mirror dir
  mirror=$(apt_mirror) || { dlog "cannot find apt's Debian mirror"; return 1; }
  dir=$(mktemp -d /tmp/tally-debootstrap.XXXXXX)
  dlog "debootstrap minbase bookworm -> $LOCAL_BASE"
  if ! as_root debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$TALLY_DOCKER_RUN/debootstrap.log" 2>&1; then
    tail -n 20 "$TALLY_DOCKER_RUN/debootstrap.log" >&2
    as_root rm -rf "$dir"
    return 1
  fi
  as_root mkdir -p "$dir/usr/local/share/ca-certificates" "$dir/etc/ssl/certs"
  as_root cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    as_root cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
  fi
  as_root rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  as_root tar -C "$dir" -c . | "$DOCKER" import - "$LOCAL_BASE" >/dev/null
  as_root rm -rf "$dir"
}

rust_version() { rustc --version | awk '{ print $2 }'; }
local_rust() { echo "tally-local/rust:$(rust_version)"; }

# build_rust: the base + gcc + the host's Rust toolchain (Debian's cargo is too old).
build_rust() {
  local tag sysroot ctx
  tag=$(local_rust)
  have_image "$tag" && return 0
  sysroot=$(rustc --print sysroot)
  [ -x "$sysroot/bin/cargo" ] || { dlog "no cargo in $sysroot/bin"; return 1; }
  ctx=$(mktemp -d /tmp/tally-rust-ctx.XXXXXX)
  cat >"$ctx/Dockerfile" <<EOF
FROM $LOCAL_BASE
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
COPY toolchain/ /usr/local/
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN rustc --version && cargo --version
EOF
  dlog "building $tag from the host toolchain ($sysroot)"
  # The context is streamed as a tar: the Dockerfile plus bin/ and lib/ of the sysroot (no docs).
  local parts=(bin/cargo bin/rustc lib)
  [ -d "$sysroot/libexec" ] && parts+=(libexec)
  tar -C "$ctx" -c Dockerfile \
    -C "$sysroot" --transform 's,^\(bin\|lib\|libexec\)\(/\|$\),toolchain/\1\2,' "${parts[@]}" \
    | "$DOCKER" build --network host -q -t "$tag" - >/dev/null
  rm -rf "$ctx"
}

# build_runtime: a distroless-like runtime from the base: the loader, libc, libm, libgcc_s, the
# CA bundle, passwd/group with nonroot (65532), an empty /tmp; no shell, no package manager.
build_runtime() {
  have_image "$LOCAL_RUNTIME" && return 0
  dlog "building $LOCAL_RUNTIME"
  "$DOCKER" build --network host -q -t "$LOCAL_RUNTIME" - >/dev/null <<EOF
FROM $LOCAL_BASE AS src
RUN set -e; mkdir -p /out/etc/ssl/certs /out/lib64 /out/lib/x86_64-linux-gnu /out/tmp /out/home/nonroot; \\
    for l in libc.so.6 libm.so.6 libgcc_s.so.1 libdl.so.2 libpthread.so.0 librt.so.1; do \\
      cp -L /lib/x86_64-linux-gnu/\$l /out/lib/x86_64-linux-gnu/; done; \\
    cp -L /lib64/ld-linux-x86-64.so.2 /out/lib64/; \\
    cp -L /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/; \\
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >/out/etc/passwd; \\
    printf 'root:x:0:\nnonroot:x:65532:\n' >/out/etc/group; \\
    printf 'hosts: files dns\n' >/out/etc/nsswitch.conf; \\
    chmod 1777 /out/tmp; chown 65532:65532 /out/home/nonroot
FROM scratch
COPY --from=src /out/ /
USER 65532:65532
WORKDIR /home/nonroot
EOF
}

# build_debian_image TAG PACKAGES...: the base + Debian packages.
build_debian_image() {
  local tag=$1
  shift
  have_image "$tag" && return 0
  dlog "building $tag ($*)"
  "$DOCKER" build --network host -q -t "$tag" - >/dev/null <<EOF
FROM $LOCAL_BASE
RUN apt-get update && apt-get install -y --no-install-recommends $* \\
    && rm -rf /var/lib/apt/lists/* && mkdir -p /data
EOF
}

# build_standins: every stand-in image (each skipped when present).
build_standins() {
  [ "$TALLY_IMAGES" = local ] || return 0
  build_base
  build_rust
  build_runtime
  build_debian_image "$LOCAL_REDIS" redis-server redis-sentinel redis-tools procps
  build_debian_image "$LOCAL_HAPROXY" haproxy
}

# image_env: exports the image variables compose.yaml and the Dockerfile take.
image_env() {
  export TALLY_IMAGE
  if [ "$TALLY_IMAGES" = local ]; then
    RUST_IMAGE=$(local_rust)
    export RUST_IMAGE RUNTIME_IMAGE=$LOCAL_RUNTIME REDIS_IMAGE=$LOCAL_REDIS HAPROXY_IMAGE=$LOCAL_HAPROXY
  fi
}

# build_tally: the project's Dockerfile, unchanged, with the stand-ins as build arguments.
build_tally() {
  image_env
  local args=()
  if [ "$TALLY_IMAGES" = local ]; then
    args=(--build-arg "RUST_IMAGE=$RUST_IMAGE" --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")
  fi
  dlog "building $TALLY_IMAGE from $DOCKER_SH_ROOT/Dockerfile"
  local t0=$SECONDS
  "$DOCKER" build --network host "${args[@]}" -t "$TALLY_IMAGE" "$DOCKER_SH_ROOT" \
    >"$TALLY_DOCKER_RUN/build.log" 2>&1 \
    || { tail -n 40 "$TALLY_DOCKER_RUN/build.log" >&2; return 1; }
  dlog "built $TALLY_IMAGE in $((SECONDS - t0))s ($(image_size "$TALLY_IMAGE"))"
  # The previous build of the same tag, now untagged (the build cache keeps its layers).
  "$DOCKER" image prune -f >/dev/null 2>&1 || true
}

image_size() {
  "$DOCKER" image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.1f MB", $1 / 1000000 }'
}

# smoke_test: runs the image as the chart runs the pod (read-only root, user 65532, no
# capabilities, no privilege escalation) against a Redis container, on a network of its own.
smoke_test() {
  local net=tally-smoke subnet=${TALLY_SMOKE_SUBNET:-172.31.214.0/24}
  local harden=(--read-only --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges)
  local app=tally-smoke-app redis=tally-smoke-redis fails=0
  image_env
  smoke_cleanup() {
    "$DOCKER" rm -f tally-smoke-app tally-smoke-redis >/dev/null 2>&1 || true
    "$DOCKER" network rm tally-smoke >/dev/null 2>&1 || true
  }
  local passes=0
  ok() { echo "ok    $*"; passes=$((passes + 1)); }
  bad() { echo "FAIL  $*"; fails=$((fails + 1)); }
  expect() { # expect DESCRIPTION COMMAND...: ok when COMMAND succeeds
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
  }
  quiet() { "$@" >/dev/null 2>&1; }
  smoke_cleanup
  "$DOCKER" network create --subnet "$subnet" "$net" >/dev/null
  note_network "$net"

  "$DOCKER" run -d --name "$redis" --network "$net" --network-alias redis "${harden[@]}" \
    --tmpfs /data:uid=65532,gid=65532 "${REDIS_IMAGE:-redis:7.4.2-bookworm}" \
    redis-server --save '' --appendonly no --dir /data --protected-mode no >/dev/null
  "$DOCKER" run -d --name "$app" --network "$net" "${harden[@]}" \
    -e TALLY_REDIS_URL=redis://redis:6379/0 -e TALLY_SHUTDOWN_DELAY=1s \
    -p 127.0.0.1::8080 -p 127.0.0.1::8081 "$TALLY_IMAGE" >/dev/null
  local api admin i code
  api=http://$("$DOCKER" port "$app" 8080/tcp | head -n 1)
  admin=http://$("$DOCKER" port "$app" 8081/tcp | head -n 1)
  for i in $(seq 1 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$admin/readyz" || true)
    [ "$code" = 200 ] && break
    sleep 0.2
  done
  expect "/healthz 200" [ "$(curl -s -o /dev/null -w '%{http_code}' "$admin/healthz")" = 200 ]
  expect "/readyz 200 (Redis reachable; got $code)" [ "$code" = 200 ]
  local a b
  a=$(curl -s "$api/smoke") b=$(curl -s "$api/smoke")
  if [ "$a" = '{"count":1}' ] && [ "$b" = '{"count":2}' ]; then ok "GET /smoke twice: $a then $b"; else bad "counter: '$a' then '$b'"; fi
  a=$("$DOCKER" exec "$redis" redis-cli GET count:smoke)
  expect "Redis holds count:smoke = 2 (got '$a')" [ "$a" = 2 ]
  curl -s "$admin/metrics" >"$TALLY_DOCKER_RUN/smoke-metrics.txt" || true
  expect "/metrics exports tally_*" grep -q '^tally_' "$TALLY_DOCKER_RUN/smoke-metrics.txt"
  # `tally check` from the image, as the chart's helm test runs it.
  if "$DOCKER" run --rm --network "$net" "${harden[@]}" "$TALLY_IMAGE" check \
    --target "http://$app:8080" --duration 2s --concurrency 4 --json >"$TALLY_DOCKER_RUN/smoke-check.json"; then
    ok "tally check in the image: $(jq -r '"\(.requests) requests, lost \(.lost), duplicated \(.duplicated)"' "$TALLY_DOCKER_RUN/smoke-check.json")"
  else
    bad "tally check in the image"
  fi
  # Every subcommand that `tally --help` lists starts (prints its help) in the hardened image.
  # (awk reads to the end: leaving early would SIGPIPE docker and, with pipefail, end the script.)
  local sub subs
  subs=$("$DOCKER" run --rm "${harden[@]}" "$TALLY_IMAGE" --help 2>/dev/null \
    | awk '/^Commands:/ { on = 1; next } /^$/ { on = 0 } on && $1 != "help" { print $1 }')
  expect "tally --help lists subcommands ($(echo "$subs" | tr '\n' ' '))" [ -n "$subs" ]
  expect "tally --version" quiet "$DOCKER" run --rm "${harden[@]}" "$TALLY_IMAGE" --version
  for sub in $subs; do
    expect "tally $sub --help" quiet "$DOCKER" run --rm "${harden[@]}" "$TALLY_IMAGE" "$sub" --help
  done
  expect "image user is 65532:65532" [ "$("$DOCKER" image inspect -f '{{.Config.User}}' "$TALLY_IMAGE")" = 65532:65532 ]
  # SIGTERM: /readyz turns 503, the drain delay, then a clean exit 0.
  local t0=$SECONDS st
  "$DOCKER" stop -t 30 "$app" >/dev/null
  st=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$app")
  expect "SIGTERM: exit code $st after $((SECONDS - t0))s" [ "$st" = 0 ]
  if [ "$fails" -gt 0 ]; then "$DOCKER" logs "$app" 2>&1 | tail -n 20; fi
  smoke_cleanup
  echo "image $TALLY_IMAGE: $(image_size "$TALLY_IMAGE")"
  echo "smoke: $passes passed, $fails failed"
  [ "$fails" -eq 0 ]
}

docker_main() {
  set -euo pipefail
  case "${1:-}" in
    up) docker_up && echo "export DOCKER_HOST=$DOCKER_HOST" ;;
    env) docker_env && echo "export DOCKER_HOST=$DOCKER_HOST DOCKER_BUILDKIT=1" ;;
    images) docker_up && build_standins ;;
    build) docker_up && build_standins && build_tally ;;
    smoke | registry)
      if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
        if [ "${CI:-}" = true ]; then echo "FAIL: the image smoke test needs root (CI=true)"; exit 1; fi
        echo "SKIP: the image smoke test needs root or sudo"
        exit 0
      fi
      local t0=$SECONDS
      trap 'registry_down; if [ "$DOCKERD_STARTED" = 1 ]; then docker_down; fi' EXIT
      docker_up
      need_packages jq:jq curl:curl
      build_standins
      build_tally
      if [ "$1" = registry ]; then
        registry_up
        registry_roundtrip
      else
        smoke_test
      fi
      dlog "$1 done in $((SECONDS - t0))s"
      ;;
    down) docker_env && docker_down ;;
    purge) docker_env && docker_down && as_root rm -rf "$TALLY_DOCKER_DATA" "$TALLY_DOCKER_RUN" ;;
    *)
      sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
      exit 2
      ;;
  esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  docker_main "$@"
fi
