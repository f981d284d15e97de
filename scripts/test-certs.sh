#!/usr/bin/env bash
# A throwaway certificate authority and certificates signed by it, for tests that run real TLS
# servers (Redis, Sentinel, Postgres): the Rust test suite, the HA harness's TLS scenarios and
# the chart's script tests all make theirs here. Certificates carry host names (DNS SANs), never
# IP addresses, as the chart's do; they are valid for two days.
#
#   scripts/test-certs.sh ca DIR                  DIR/ca.crt and DIR/ca.key (a new CA)
#   scripts/test-certs.sh issue DIR NAME DNS...   DIR/NAME.crt and DIR/NAME.key, for these names,
#                                                 signed by DIR's CA (for servers and clients)
#
# Needs the openssl command. Keys are ECDSA P-256, readable by their owner only.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
command -v openssl >/dev/null || { echo "test-certs.sh: openssl is not installed" >&2; exit 1; }
cmd=$1 dir=$2
shift 2
mkdir -p "$dir"
umask 077

case "$cmd" in
  ca)
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
      -days 2 -subj "/CN=tally test CA $(openssl rand -hex 6)" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    chmod 644 "$dir/ca.crt"
    ;;
  issue)
    [ $# -ge 2 ] || usage
    name=$1
    shift
    [ -f "$dir/ca.key" ] || { echo "test-certs.sh: no CA in $dir (run: $0 ca $dir)" >&2; exit 1; }
    sans=$(printf 'DNS:%s,' "$@")
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
      -subj "/CN=$1" -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
      -CAcreateserial -sha256 -days 2 -out "$dir/$name.crt" \
      -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' \
        "${sans%,}") 2>/dev/null
    rm -f "$dir/$name.csr"
    chmod 644 "$dir/$name.crt"
    ;;
  *) usage ;;
esac
