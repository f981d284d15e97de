#!/bin/sh
# The redis_exporter sidecar's password file: a JSON map from the Redis address to the password
# of user exporter (auth-lib.sh), written from the mounted Secret so that the password never
# sits in an environment variable. The exporter reads it at start and on POST /-/reload.
#
#   exporter-auth.sh           write the file once
#   exporter-auth.sh --watch   write it, then rewrite it whenever the password changes (a
#                              rotation) and ask the exporter to reload it; runs as a sidecar
#
#   REDIS_AUTH_DIR       the mounted password files (exporter-password)  default: /etc/redis-auth
#   EXPORTER_REDIS_ADDR  the address the exporter scrapes        default: redis://localhost:6379
#   EXPORTER_AUTH_FILE   the file to write                       default: /exporter/passwords.json
#   EXPORTER_PORT        the exporter's port, for /-/reload      default: 9121
#   REDIS_AUTH_INTERVAL  seconds between two looks at the password file   default: 5
set -eu
SCRIPT_NAME=exporter-auth
FILES_DIR=${FILES_DIR:-$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)}
# shellcheck source-path=SCRIPTDIR source=auth-lib.sh
. "$FILES_DIR/auth-lib.sh"
addr=${EXPORTER_REDIS_ADDR:-redis://localhost:6379}
out=${EXPORTER_AUTH_FILE:-/exporter/passwords.json}
port=${EXPORTER_PORT:-9121}

log() { printf '%s %s: %s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$SCRIPT_NAME" "$*" >&2; }
json_string() { # a JSON string literal: escapes backslash and double quote, drops control characters
  printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}
write_file() {
  password=$(auth_password exporter)
  [ -n "$password" ] || { log "ERROR: no password for user exporter ($(auth_dir)/exporter-password)"; return 1; }
  (umask 077 && printf '{%s: %s}\n' "$(json_string "$addr")" "$(json_string "$password")" >"$out.tmp")
  mv "$out.tmp" "$out"
}
# reload: POST /-/reload to the exporter, with whatever HTTP client the image has (busybox wget
# in Alpine; bash's /dev/tcp in Debian, which has no wget or curl)
reload() {
  if command -v wget >/dev/null 2>&1; then
    wget -q -T 5 -O /dev/null --post-data='' "http://127.0.0.1:$port/-/reload"
  elif command -v curl >/dev/null 2>&1; then
    curl -fsS -m 5 -o /dev/null -X POST "http://127.0.0.1:$port/-/reload"
  elif command -v bash >/dev/null 2>&1; then
    # shellcheck disable=SC2016 # expanded by bash
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      printf "POST /-/reload HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n" >&3
      head -n 1 <&3 | grep -q " 200 "' sh "$port"
  else
    return 1
  fi
}

write_file
log "exporter password file written for $addr"
[ "${1:-}" = --watch ] || exit 0
seen=$(auth_fingerprint)
while sleep "${REDIS_AUTH_INTERVAL:-5}"; do
  now=$(auth_fingerprint)
  [ "$now" != "$seen" ] || continue
  if write_file && reload; then
    seen=$now
    log "password changed: file rewritten, exporter reloaded"
  else
    log "password changed, but rewriting the file or reloading the exporter failed: trying again"
  fi
done
