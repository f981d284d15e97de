#!/bin/sh
# Init container of the redis_exporter sidecar: writes the exporter's password file, a JSON map
# from the Redis address to its password, from the mounted Secret (so the password never sits in
# an environment variable).
#
#   REDIS_PASSWORD_FILE  the mounted password                    required
#   EXPORTER_REDIS_ADDR  the address the exporter scrapes        default: redis://localhost:6379
#   EXPORTER_AUTH_FILE   the file to write                       default: /exporter/passwords.json
set -eu
addr=${EXPORTER_REDIS_ADDR:-redis://localhost:6379}
out=${EXPORTER_AUTH_FILE:-/exporter/passwords.json}
password=$(cat "$REDIS_PASSWORD_FILE")
json_string() { # a JSON string literal: escapes backslash and double quote, drops control characters
  printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}
umask 077
printf '{%s: %s}\n' "$(json_string "$addr")" "$(json_string "$password")" >"$out.tmp"
mv "$out.tmp" "$out"
echo "exporter password file written for $addr"
