#!/usr/bin/env bash
# The certificates of compose-tls.yaml, made with scripts/test-certs.sh (a new throwaway CA, valid
# two days): DIR/pod-N/{tls.crt,tls.key,ca.crt} for Redis pod N, named as its network aliases
# (tally-redis-N, tally-redis-N.tally-redis-headless), never by IP address; DIR/client/ca.crt for
# tally. Readable by the containers' user (65532): development and test certificates only.
#
#   deploy/compose/dev-tls.sh DIR
#   TALLY_TLS_DIR=DIR docker compose -f compose.yaml -f compose-tls.yaml up --build
set -euo pipefail
[ $# -eq 1 ] || { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
dir=$1
certs=$ROOT/scripts/test-certs.sh
mkdir -p "$dir/ca" "$dir/client"
bash "$certs" ca "$dir/ca"
for n in 0 1 2; do
  bash "$certs" issue "$dir/ca" "pod-$n" "tally-redis-$n" "tally-redis-$n.tally-redis-headless"
  mkdir -p "$dir/pod-$n"
  cp "$dir/ca/pod-$n.crt" "$dir/pod-$n/tls.crt"
  cp "$dir/ca/pod-$n.key" "$dir/pod-$n/tls.key"
  cp "$dir/ca/ca.crt" "$dir/pod-$n/ca.crt"
done
cp "$dir/ca/ca.crt" "$dir/client/ca.crt"
chmod 755 "$dir" "$dir"/pod-* "$dir/client"
chmod 644 "$dir"/pod-*/* "$dir/client/ca.crt"
