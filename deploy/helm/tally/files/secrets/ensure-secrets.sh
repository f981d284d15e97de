#!/usr/bin/env bash
# The chart's password Secrets, made once by a pre-install/pre-upgrade hook Job instead of by the
# templates, so that `helm template` renders the same output every time (Argo CD, Flux) and no
# password is ever in a rendered manifest or in Helm's release record.
#
#   ensure-secrets.sh NAME=KEY,KEY... [NAME=KEY,KEY...]
#
# For each NAME: when the Secret does not exist, creates it with a random password (32 letters
# and digits, from /dev/urandom) under each KEY; when it exists, adds the KEYs it lacks (a newer
# chart version's users) and never changes a key it has. Passwords go to kubectl in files, never
# on a command line. The Secrets are not Helm's: they outlive an uninstall, so a reinstall over
# the retained volumes has the passwords the data was written with.
#
# Runs in registry.k8s.io/kubectl (bash, kubectl, coreutils), with a ServiceAccount that may get
# and patch these Secrets only, and create Secrets (Kubernetes cannot restrict create by name).
#   SECRET_LABELS  labels of a new Secret, as kubectl label takes them (k=v k=v)
set -euo pipefail
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
k() { kubectl --request-timeout=20s "$@"; }
new_password() { tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 || true; }

for spec in "$@"; do
  name=${spec%%=*}
  IFS=, read -ra keys <<<"${spec#*=}"
  # shellcheck disable=SC2016 # a Go template for kubectl, not shell
  if k get secret "$name" -o go-template='{{range $k, $v := .data}}{{$k}}{{"\n"}}{{end}}' >"$work/have" 2>"$work/err"; then
    patch=''
    added=()
    for key in "${keys[@]}"; do
      grep -qx -- "$key" "$work/have" && continue
      patch="$patch${patch:+,}\"$key\":\"$(new_password | base64 -w0)\""
      added+=("$key")
    done
    if [ "${#added[@]}" -eq 0 ]; then
      echo "secret $name: has every key, unchanged"
      continue
    fi
    printf '{"data":{%s}}' "$patch" >"$work/patch.json"
    k patch secret "$name" --type merge --patch-file "$work/patch.json" >/dev/null
    echo "secret $name: added ${added[*]} (existing keys unchanged)"
  elif grep -q NotFound "$work/err"; then
    args=()
    for key in "${keys[@]}"; do
      new_password >"$work/$key"
      args+=("--from-file=$key=$work/$key")
    done
    k create secret generic "$name" "${args[@]}" >/dev/null
    # shellcheck disable=SC2086 # one argument per label
    [ -z "${SECRET_LABELS:-}" ] || k label secret "$name" ${SECRET_LABELS} >/dev/null
    echo "secret $name: created with ${keys[*]}"
  else
    cat "$work/err" >&2
    exit 1
  fi
done
