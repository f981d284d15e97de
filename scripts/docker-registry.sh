# shellcheck shell=bash
# Seed 000's registry flow, for real: the built image is pushed to a registry on 127.0.0.1,
# removed from the daemon, pulled back by digest, and the smoke test runs on the pulled image.
# Sourced by scripts/docker.sh (`scripts/docker.sh registry`); it defines functions only.
#
# The registry is Debian's docker-registry package (the CNCF distribution registry), run as a
# host process of ours: on a free loopback port, its storage in a temporary directory, stopped
# and removed by registry_down. dockerd treats 127.0.0.0/8 registries as plain-HTTP ones by
# itself, so no daemon setting changes.

REGISTRY_PID=""
REGISTRY_DIR=""
REGISTRY_ADDR=""
# Both manifest types a v2 registry may hold; without them in Accept it may convert the manifest
# and report another digest.
MANIFEST_TYPES="application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.manifest.v1+json"

free_loopback_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# registry_up: starts docker-registry on 127.0.0.1:<free port>; sets REGISTRY_ADDR.
registry_up() {
  need_packages docker-registry:docker-registry curl:curl
  REGISTRY_DIR=$(mktemp -d /tmp/tally-registry.XXXXXX)
  REGISTRY_ADDR=127.0.0.1:$(free_loopback_port)
  cat >"$REGISTRY_DIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/data
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
EOF
  # setsid: Ctrl-C in a terminal reaches the caller's trap, which stops it by its pid.
  setsid /usr/bin/docker-registry serve "$REGISTRY_DIR/config.yml" \
    >"$REGISTRY_DIR/registry.log" 2>&1 </dev/null &
  REGISTRY_PID=$!
  for _ in $(seq 1 50); do
    if curl -fs "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1; then
      dlog "registry up on $REGISTRY_ADDR (pid $REGISTRY_PID, storage $REGISTRY_DIR/data)"
      return 0
    fi
    kill -0 "$REGISTRY_PID" 2>/dev/null || break
    sleep 0.2
  done
  dlog "the registry did not answer on $REGISTRY_ADDR; its log:"
  tail -n 20 "$REGISTRY_DIR/registry.log" >&2 || true
  return 1
}

# registry_down: stops the registry this shell started and deletes its storage.
registry_down() {
  if [ -n "$REGISTRY_PID" ] && kill -0 "$REGISTRY_PID" 2>/dev/null; then
    kill -TERM "$REGISTRY_PID" 2>/dev/null || true
    for _ in $(seq 1 25); do
      kill -0 "$REGISTRY_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$REGISTRY_PID" 2>/dev/null || true
    dlog "registry stopped (pid $REGISTRY_PID)"
  fi
  REGISTRY_PID=""
  if [ -n "$REGISTRY_DIR" ]; then rm -rf "$REGISTRY_DIR"; fi
  REGISTRY_DIR=""
}

# registry_digest REPO TAG: the manifest digest the registry serves for REPO:TAG.
registry_digest() {
  curl -fsI -H "Accept: $MANIFEST_TYPES" "http://$REGISTRY_ADDR/v2/$1/manifests/$2" \
    | tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

# registry_roundtrip: push $TALLY_IMAGE, remove it locally, pull it back by digest, smoke-test the
# pulled image, then tag it $TALLY_IMAGE again for later steps.
registry_roundtrip() {
  local repo=tally ref tag built_id pushed served pulled pulled_id push_log
  ref=$REGISTRY_ADDR/$repo
  built_id=$("$DOCKER" image inspect -f '{{.Id}}' "$TALLY_IMAGE")
  tag=${built_id#sha256:}
  tag=${tag:0:12}
  "$DOCKER" tag "$TALLY_IMAGE" "$ref:$tag"
  push_log=$("$DOCKER" push "$ref:$tag" 2>&1) || { printf '%s\n' "$push_log" >&2; return 1; }
  # docker push ends with "<tag>: digest: sha256:... size: N".
  pushed=$(printf '%s\n' "$push_log" | sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' | tail -n 1)
  served=$(registry_digest "$repo" "$tag")
  echo "pushed  $ref:$tag  digest $pushed"
  echo "served  by the registry for :$tag  $served"
  if [ -z "$pushed" ] || [ "$pushed" != "$served" ]; then
    echo "FAIL  the digest docker push printed is not the one the registry serves"
    return 1
  fi

  # Untag both names, so the daemon has to fetch the image from the registry.
  "$DOCKER" rmi "$ref:$tag" "$TALLY_IMAGE" >/dev/null
  if "$DOCKER" image inspect "$built_id" >/dev/null 2>&1; then
    echo "note  image $tag is still in the daemon under another name: the pull fetches its manifest only"
  else
    echo "removed $TALLY_IMAGE from the daemon (image $tag is gone)"
  fi
  "$DOCKER" pull -q "$ref@$pushed" >/dev/null
  pulled=$("$DOCKER" image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$ref@$pushed" \
    | sed -n "s|^$ref@||p" | awk 'NR == 1')
  pulled_id=$("$DOCKER" image inspect -f '{{.Id}}' "$ref@$pushed")
  echo "pulled  $ref@$pushed  digest $pulled"
  [ "$pulled" = "$pushed" ] || { echo "FAIL  pulled digest $pulled, pushed $pushed"; return 1; }
  [ "$pulled_id" = "$built_id" ] || { echo "FAIL  the pulled image is $pulled_id, the built one $built_id"; return 1; }
  echo "ok    digest pushed = digest pulled = $pushed; image id $tag unchanged"
  printf 'pushed %s\npulled %s\n' "$pushed" "$pulled" >"$TALLY_DOCKER_RUN/registry-digests.txt"

  local built=$TALLY_IMAGE rc=0
  TALLY_IMAGE=$ref@$pushed
  smoke_test || rc=$?
  TALLY_IMAGE=$built
  "$DOCKER" tag "$ref@$pushed" "$TALLY_IMAGE"
  return "$rc"
}
