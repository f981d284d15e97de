# shellcheck shell=sh
# shellcheck disable=SC2034 # TLS_SEEN is read by the scripts that source this file
# TLS of tally's Redis, Sentinel and Cluster nodes, in one place: the configuration lines that
# make every port TLS only, the options of the scripts' redis-cli, and the reload of changed
# certificate files without a restart. Sourced by redis-lib.sh (after auth-lib.sh); defines
# functions only. docs/tls.md says why each choice was made.
#
#   REDIS_TLS               yes: Redis and Sentinel listen with TLS only (port 0, tls-port), the
#                           replicas, the sentinels and the Cluster bus connect with TLS, and the
#                           scripts' redis-cli too                                default: no
#   REDIS_TLS_DIR           the mounted certificate files                default: /etc/redis-tls
#   REDIS_TLS_CERT_FILE     this node's certificate (served, and shown as a client: replication,
#                           Sentinel, redis-cli)                         default: $REDIS_TLS_DIR/tls.crt
#   REDIS_TLS_KEY_FILE      its private key                              default: $REDIS_TLS_DIR/tls.key
#   REDIS_TLS_CA_FILE       the CA bundle a peer's certificate must chain to
#                                                                        default: $REDIS_TLS_DIR/ca.crt
#   REDIS_TLS_AUTH_CLIENTS  tls-auth-clients: no, optional or yes        default: no
#   REDIS_TLS_RESTART_STAGGER  seconds between the sentinels' restarts after a change, by
#                           ordinal (Sentinel cannot reload its TLS files) default: 10
#
# Certificates must name the hosts as the scripts, the sentinels and the clients know them
# (REDIS_NODES, HEADLESS_DOMAIN): never IP addresses. Paths must not contain spaces or glob
# characters (the options below are word-split).

tls_on() {
  case "${REDIS_TLS:-no}" in
    yes | true | 1) return 0 ;;
    *) return 1 ;;
  esac
}
tls_cert_file() { printf '%s\n' "${REDIS_TLS_CERT_FILE:-${REDIS_TLS_DIR:-/etc/redis-tls}/tls.crt}"; }
tls_key_file() { printf '%s\n' "${REDIS_TLS_KEY_FILE:-${REDIS_TLS_DIR:-/etc/redis-tls}/tls.key}"; }
tls_ca_file() { printf '%s\n' "${REDIS_TLS_CA_FILE:-${REDIS_TLS_DIR:-/etc/redis-tls}/ca.crt}"; }

# tls_fingerprint: changes whenever one of the certificate, key and CA files changes (empty
# with TLS off)
tls_fingerprint() {
  tls_on || return 0
  for _f in "$(tls_cert_file)" "$(tls_key_file)" "$(tls_ca_file)"; do
    printf '%s\n' "$_f"
    cat "$_f" 2>/dev/null
  done | cksum
}

# tls_init: with TLS on, dies unless the files are readable and the settings valid; records
# their fingerprint (TLS_SEEN) for tls_watch. Call it before the server reads them.
tls_init() {
  TLS_SEEN=''
  tls_on || return 0
  for _f in "$(tls_cert_file)" "$(tls_key_file)" "$(tls_ca_file)"; do
    case "$_f" in
      *[!A-Za-z0-9._/@=+-]*) die "TLS file path '$_f': only letters, digits and ._/@=+- are allowed" ;;
    esac
    [ -r "$_f" ] || die "REDIS_TLS=yes but $_f is missing or unreadable (the TLS Secret lacks its key?)"
  done
  case "${REDIS_TLS_AUTH_CLIENTS:-no}" in
    no | optional | yes) ;;
    *) die "REDIS_TLS_AUTH_CLIENTS='$REDIS_TLS_AUTH_CLIENTS': no, optional or yes" ;;
  esac
  TLS_SEEN=$(tls_fingerprint)
}

# tls_cli_opts: redis-cli's TLS options (none with TLS off), for an unquoted expansion. The node's
# certificate goes along: a server with tls-auth-clients yes asks for one.
tls_cli_opts() {
  tls_on || return 0
  printf -- '--tls --cacert %s' "$(tls_ca_file)"
  if [ -r "$(tls_cert_file)" ] && [ -r "$(tls_key_file)" ]; then
    printf -- ' --cert %s --key %s' "$(tls_cert_file)" "$(tls_key_file)"
  fi
  printf '\n'
}

# listen_conf PORT [cluster]: the configuration lines of the port a node (Redis or Sentinel)
# listens on: `port PORT`, or with TLS a TLS port only, TLS to its master and its peers
# (tls-replication: a replica's link, and every link of a sentinel), and for a Cluster node
# the bus too.
listen_conf() {
  if ! tls_on; then
    printf 'port %s\n' "$1"
    return 0
  fi
  printf 'port 0\ntls-port %s\n' "$1"
  printf 'tls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\n' "$(tls_cert_file)" "$(tls_key_file)" "$(tls_ca_file)"
  printf 'tls-auth-clients %s\ntls-replication yes\n' "${REDIS_TLS_AUTH_CLIENTS:-no}"
  if [ "${2:-}" = cluster ]; then printf 'tls-cluster yes\n'; fi
}

# tls_watch SIDE HOST:PORT: called every few seconds beside the server (auth_loop). When the
# certificate files differ from TLS_SEEN: a Redis node reloads them in place (CONFIG SET of the
# three files in one command: Redis reads them again even when the paths are the same; open
# connections keep their session). A sentinel cannot (redis/redis#12028: neither CONFIG SET nor
# SENTINEL CONFIG SET takes the tls-* settings), so it is restarted in its container by tls_run,
# one sentinel at a time. Retried on the next call until it succeeds.
tls_watch() {
  tls_on || return 0
  _tn=$(tls_fingerprint)
  [ "$_tn" != "${TLS_SEEN:-}" ] || return 0
  if [ "$1" = redis ]; then
    if _out=$(redis_cli "$2" CONFIG SET tls-cert-file "$(tls_cert_file)" tls-key-file "$(tls_key_file)" \
      tls-ca-cert-file "$(tls_ca_file)" 2>&1) && [ "$_out" = OK ]; then
      TLS_SEEN=$_tn
      log "TLS files changed: certificate, key and CA reloaded in place"
    else
      log "TLS files changed, but reloading them failed (${_out:-no answer}): trying again"
    fi
    return 0
  fi
  tls_restart_sentinel "$2" "$_tn"
}

# tls_restart_sentinel HOST:PORT FINGERPRINT: has tls_run restart this sentinel with the files
# now mounted, once the other sentinels answer (at most 60 s), NODE_INDEX * REDIS_TLS_RESTART_STAGGER
# seconds after the change: one sentinel of three down for a moment does not stop a failover.
# Its state survives: it starts again from the configuration it keeps rewriting.
tls_restart_sentinel() {
  sleep $((${NODE_INDEX:-0} * ${REDIS_TLS_RESTART_STAGGER:-10}))
  _w=0
  while [ "$_w" -lt 60 ]; do
    _down=''
    for _s in $SENTINEL_NODES; do
      same_node "$_s" "$1" && continue
      sentinel_cli "$_s" PING 2>/dev/null | grep -qx PONG || _down="$_down $_s"
    done
    [ -n "$_down" ] || break
    sleep 2
    _w=$((_w + 2))
  done
  [ -z "$_down" ] || log "TLS files changed; restarting although sentinel(s)$_down do not answer"
  _run=${SENTINEL_RUN_DIR:-/tmp/sentinel}
  _pid=$(cat "$_run/sentinel.pid" 2>/dev/null)
  : >"$_run/tls-restart"
  if [ -z "$_pid" ] || ! kill -TERM "$_pid" 2>/dev/null; then
    rm -f "$_run/tls-restart"
    log "TLS files changed, but no sentinel process to restart: trying again"
    return 0
  fi
  _w=0
  while [ "$_w" -lt 30 ]; do
    sleep 1
    _w=$((_w + 1))
    _new=$(cat "$_run/sentinel.pid" 2>/dev/null)
    if [ -n "$_new" ] && [ "$_new" != "$_pid" ] && sentinel_cli "$1" PING 2>/dev/null | grep -qx PONG; then
      TLS_SEEN=$2
      log "TLS files changed: sentinel restarted with them in ${_w}s (its state kept)"
      return 0
    fi
  done
  log "TLS files changed: the sentinel did not answer within 30s of its restart: trying again"
}

# tls_repair_sentinel_conf CONF: the password lines of a configuration Sentinel rewrote, quoted
# again. Redis 7.0's rewrite writes `sentinel sentinel-pass` and `sentinel auth-pass` unquoted,
# and a password with a space or a quote then makes the file unreadable at the next start
# (measured here). The values are the current files' (what auth_sync_sentinel sets); the
# password reaches awk by environment, never on a command line.
tls_repair_sentinel_conf() {
  TLS_SENTINEL_PASS=$(conf_quote "$(auth_password sentinel)") MASTER_NAME=$MASTER_NAME awk '
    $1 == "sentinel" && $2 == "sentinel-pass" { print "sentinel sentinel-pass " ENVIRON["TLS_SENTINEL_PASS"]; next }
    $1 == "sentinel" && $2 == "auth-pass" && $3 == ENVIRON["MASTER_NAME"] {
      print "sentinel auth-pass " $3 " " ENVIRON["TLS_SENTINEL_PASS"]; next
    }
    { print }' "$1" >"$1.tmp" && mv "$1.tmp" "$1"
}

# tls_run SERVER CONF: runs the server. With TLS off, exec: it becomes the container's main
# process. With TLS on, as this shell's child, its pid in SENTINEL_RUN_DIR/sentinel.pid: when
# tls_restart_sentinel stops it (SIGTERM, after leaving the file tls-restart there) it starts
# again at once from CONF, which it rewrote with its state; when it exits otherwise this shell
# exits with its status (the container restarts, as without TLS). SIGTERM or SIGINT to this
# shell stop the server and end the loop.
tls_run() {
  tls_on || exec "$@"
  _run=${SENTINEL_RUN_DIR:-/tmp/sentinel}
  _stopping=no
  _child=''
  trap '_stopping=yes; [ -z "$_child" ] || kill -TERM "$_child" 2>/dev/null' TERM INT
  rm -f "$_run/tls-restart"
  while :; do
    "$@" &
    _child=$!
    printf '%s\n' "$_child" >"$_run/sentinel.pid"
    # wait returns early when a trapped signal arrives: wait again until the child is gone.
    wait "$_child"
    _rc=$?
    while kill -0 "$_child" 2>/dev/null; do
      wait "$_child"
      _rc=$?
    done
    [ "$_stopping" = no ] || exit 0
    if [ -e "$_run/tls-restart" ]; then
      rm -f "$_run/tls-restart"
      log "$1 stopped (exit $_rc) to load the changed TLS files: starting it again"
      tls_repair_sentinel_conf "$2"
      continue
    fi
    exit "$_rc"
  done
}
