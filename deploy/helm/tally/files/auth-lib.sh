# shellcheck shell=sh
# shellcheck disable=SC2034 # variables set here are used by the scripts that source this file
# The ACL users of tally's Redis nodes and Sentinels, in one place: who they are, what each may
# run, where their passwords come from, and how the scripts connect as one of them. Sourced by
# redis-lib.sh (which the scripts, the harness and the tests source); defines functions only.
#
# Users (docs/security.md, "Users and rotation", says why each rule is there):
#   tally        the app and the worker: its commands on its own keys (Redis), finding the
#                master and following +switch-master (Sentinel)
#   replication  a replica's link to its master (masteruser): PSYNC, REPLCONF, PING
#   sentinel     Sentinel's monitoring and failover on Redis; sentinels among themselves
#   operator     the chart's own scripts: probes, start-up loops, preStop, Cluster joins
#   exporter     redis_exporter: INFO, SLOWLOG, LATENCY
#   backup       backup-redis.sh: an RDB copy by the replication protocol (SYNC), INFO to choose
#                the replica; on Sentinel, which node is master
#   admin        people, and the scripts that change users: everything
#   default      off, without a password (on Redis it keeps every right: see acl_line); on only
#                while the single password of chart versions before these users is still
#                mounted (an upgrade in progress), with that password
#
# Passwords are files in REDIS_AUTH_DIR (default /etc/redis-auth, the mounted Secret): the one a
# user's clients send is <user>-password; a node also accepts <user>-password-previous and
# <user>-password-next when present, so a password rotates with no refused connection (add the
# next, roll it to <user>-password keeping the old as previous, drop the previous). The file
# `password` is the single password of chart versions before these users (the Secret's
# redis.auth.existingSecretPasswordKey). Nodes store SHA-256 hashes only (ACL `#<hex>`), written
# to an ACL file of mode 600; a password never appears on a command line.
#
#   REDIS_AUTH_DIR        the password files                            default: /etc/redis-auth
#   TALLY_KEY_PREFIX      prefix of tally's counter keys                default: count:
#   TALLY_KEY_NAMESPACE   namespace of tally's other keys               default: tally
#   REDIS_VERSION_NUM     the server's version as MAJOR*100+MINOR       default: from the binary

auth_dir() { printf '%s\n' "${REDIS_AUTH_DIR:-/etc/redis-auth}"; }

# read_secret FILE: the file's content without trailing newlines and carriage returns (as tally
# reads it), empty if absent. The read is inside the `if`: a Secret's files change by one
# symlink swap, so a file can vanish between the two, and a failed `cat` under `set -e` ended
# the caller (the rotation loop stopped for good when the old password was removed).
read_secret() {
  if [ -n "$1" ] && [ -r "$1" ] && _rs=$(cat "$1" 2>/dev/null); then
    while :; do
      case "$_rs" in
        *"$(printf '\r')") _rs=${_rs%?} ;;
        *) break ;;
      esac
    done
    printf '%s' "$_rs"
  fi
}

# auth_password USER: the password USER's clients send (<user>-password), empty if none
auth_password() { read_secret "$(auth_dir)/$1-password"; }
# auth_legacy_password: the single password of chart versions before the users, empty if none
auth_legacy_password() { read_secret "$(auth_dir)/password"; }

# sha256_hex: SHA-256 of stdin in hex (sha256sum: coreutils and busybox; else openssl)
sha256_hex() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum | cut -c1-64
  else
    openssl dgst -sha256 -r | cut -c1-64
  fi
}

# auth_hashes USER: "#<hex>" of each password USER is accepted with, space separated, empty when
# none; for default, the legacy password's
auth_hashes() {
  if [ "$1" = default ]; then
    set -- password
  else
    set -- "$1-password" "$1-password-previous" "$1-password-next"
  fi
  _ah=''
  for _f in "$@"; do
    _p=$(read_secret "$(auth_dir)/$_f")
    [ -n "$_p" ] || continue
    _h=$(printf '%s' "$_p" | sha256_hex)
    case " $_ah " in *" #$_h "*) continue ;; esac
    _ah="$_ah${_ah:+ }#$_h"
  done
  printf '%s\n' "$_ah"
}

# auth_version: sets REDIS_VERSION_NUM, the version of the Redis (or Valkey) binaries here as
# MAJOR*100+MINOR (0 when unknown), once
auth_version() {
  [ -z "${REDIS_VERSION_NUM:-}" ] || return 0
  REDIS_VERSION_NUM=$("$(first_command redis-server valkey-server)" --version 2>/dev/null \
    | sed -n 's/.* v=\([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p' | awk '{ print $1 * 100 + $2 }')
  REDIS_VERSION_NUM=${REDIS_VERSION_NUM:-0}
}

# acl_key_patterns: tally's key patterns: its counters (the prefix), its namespace, and the
# namespace behind a hash tag (Cluster mode's {ns:fib}:jobs, {ns:messages}). Only characters that
# are literal in a glob and need no quoting in an ACL file are accepted.
acl_key_patterns() {
  _kp=${TALLY_KEY_PREFIX-count:}
  _kn=${TALLY_KEY_NAMESPACE:-tally}
  case "$_kp$_kn" in
    *[!A-Za-z0-9:._/@=+-]*) die "TALLY_KEY_PREFIX='$_kp' / TALLY_KEY_NAMESPACE='$_kn': only letters, digits and :._/@=+- fit an ACL key pattern" ;;
  esac
  printf '~%s* ~%s:* ~{%s:*\n' "$_kp" "$_kn" "$_kn"
}

# acl_rules SIDE USER: USER's rules after its passwords, SIDE redis or sentinel; empty for a
# user that SIDE does not have. Every rule list starts from nothing (resetchannels -@all).
acl_rules() {
  # CLIENT SETINFO (what redis-rs sends on connect) exists from 7.2 on; naming an unknown
  # command would make the whole ACL file fail to load.
  _setinfo=''
  if [ "${REDIS_VERSION_NUM:-0}" -ge 702 ]; then _setinfo=' +client|setinfo'; fi
  case "$1:$2" in
    redis:tally)
      # Commands, Lua scripts' calls included (EVALSHA runs them as this user): see
      # docs/security.md for where each comes from. No SELECT: database 15 holds the scripts'
      # clock, and tally uses database 0 only.
      printf '%s resetchannels -@all +ping +info +role +wait +asking +cluster|slots%s' "$(acl_key_patterns)" "$_setinfo"
      printf ' +get +set +incr +incrby +exists +evalsha +script|load'
      printf ' +xadd +xrange +xrevrange +xreadgroup +xack +xautoclaim +xpending +xinfo|groups +xgroup|create'
      printf ' +zadd +zrange +hset +hsetnx +hdel +hget +hexists +hmget\n'
      ;;
    redis:replication) printf 'resetchannels -@all +psync +replconf +ping\n' ;;
    redis:sentinel)
      printf 'resetchannels &__sentinel__:hello -@all +ping +info +role +publish +subscribe +client|setname'
      printf ' +client|kill +multi +exec +slaveof +replicaof +config|rewrite +script|kill\n'
      ;;
    redis:operator)
      # The clock key in its own database; the rest is the group's own state. COMMAND DOCS:
      # redis-cli reading commands from a pipe (announce_tail, preStop) asks for it first.
      # PUBLISH on its own channel + WAIT: preStop's check that the replicas have every write.
      printf '~tally:redis:clock resetchannels &tally:redis:prestop -@all +ping +info +role +select +get'
      printf ' +incr +command|docs +publish +wait +replicaof +config|get +config|set +client|setname +client|list'
      printf ' +cluster|info +cluster|nodes +cluster|myid +cluster|meet +cluster|forget +cluster|replicate'
      printf ' +cluster|failover +cluster|addslots +cluster|addslotsrange +cluster|set-config-epoch\n'
      ;;
    redis:exporter)
      printf 'resetchannels -@all +ping +info +client|setname +slowlog|get +slowlog|len +latency|latest'
      printf ' +latency|histogram +cluster|info\n'
      ;;
    redis:backup)
      # `redis-cli --rdb` sends REPLCONF (capa eof, rdb-only) and SYNC only; INFO replication
      # picks the replica. With no sentinel answering, the script tells two nodes that say
      # master apart by the clock (SELECT 15, GET): SYNC hands over every key anyway, so that
      # read shows nothing more. No write, no CONFIG, no other key by command.
      printf '~tally:redis:clock resetchannels -@all +info +replconf +sync +select +get\n'
      ;;
    sentinel:tally) printf 'resetchannels &+switch-master -@all +sentinel|get-master-addr-by-name +subscribe%s\n' "$_setinfo" ;;
    sentinel:sentinel)
      printf 'resetchannels &__sentinel__:hello -@all +ping +publish +client|setname'
      printf ' +sentinel|is-master-down-by-addr\n'
      ;;
    sentinel:operator)
      printf 'resetchannels -@all +ping +role +sentinel|get-master-addr-by-name +sentinel|master'
      printf ' +sentinel|failover\n'
      ;;
    sentinel:backup) printf 'resetchannels -@all +sentinel|get-master-addr-by-name\n' ;;
    *:admin) printf '~* &* +@all\n' ;;
    *:default) printf '~* &* +@all\n' ;;
  esac
}

# The users of each side, default first.
acl_users() {
  case "$1" in
    redis) echo "default tally replication sentinel operator exporter backup admin" ;;
    sentinel) echo "default tally sentinel operator backup admin" ;;
  esac
}

# acl_line SIDE USER: USER's ACL rule line without the leading "user NAME"; a user without a
# password is off and may run nothing
acl_line() {
  _hs=$(auth_hashes "$2")
  if [ -z "$_hs" ] && [ "$1:$2" = redis:default ]; then
    # Off and without a password: no connection can use it. Its rights stay, because Redis
    # replays the AOF as the default user and checks them on every EXEC: with a default user
    # that may run nothing, every transaction in the AOF (each Lua script's writes) is dropped
    # silently at a restart (redis/redis#14541, valkey-io/valkey#3983; Redis 7.0 to 7.4.2 at least).
    printf 'off resetpass ~* &* +@all\n'
  elif [ -z "$_hs" ]; then
    printf 'off resetpass resetkeys resetchannels -@all\n'
  else
    printf 'on resetpass %s %s\n' "$_hs" "$(acl_rules "$1" "$2")"
  fi
}

# acl_write SIDE FILE: the ACL file of SIDE (mode 600, replaced atomically)
acl_write() {
  auth_version
  (
    umask 077
    for _u in $(acl_users "$1"); do
      printf 'user %s %s\n' "$_u" "$(acl_line "$1" "$_u")"
    done >"$2.tmp"
  ) && mv "$2.tmp" "$2"
}

# acl_check SIDE REQUIRED: dies when a user of the list REQUIRED (the ones this process's
# scripts, replication or sentinels need) has no password; says which other users are off
acl_check() {
  for _u in $(acl_users "$1"); do
    [ "$_u" != default ] || continue
    [ -z "$(auth_password "$_u")" ] || continue
    case " $2 " in
      *" $_u "*) die "no password for user $_u: $(auth_dir)/$_u-password is missing or empty (the Secret lacks key $_u-password)" ;;
      *) log "no password for user $_u ($(auth_dir)/$_u-password): it is off" ;;
    esac
  done
  if [ -n "$(auth_legacy_password)" ]; then
    log "WARNING: the single password of chart versions before ACL users is mounted: user default stays on with it until the Secret's key is removed (docs/security.md)"
  fi
}

# auth_fingerprint: changes whenever a password file changes (cksum of names and contents)
auth_fingerprint() {
  for _f in "$(auth_dir)"/*password*; do
    printf '%s\n' "$_f"
    cat "$_f" 2>/dev/null
  done | cksum
}

# ---------------------------------------------------------------------------------------------
# Connecting as a user.

# cli USER PASSWORD HOST:PORT ARGS...: one redis-cli call as USER (empty: the default user); the
# password goes by environment, never on the command line. Prints the raw reply; non-zero when
# the node cannot be reached.
cli() {
  _cu=$1
  _pw=$2
  _hp=$3
  shift 3
  if [ -n "$_cu" ]; then set -- --user "$_cu" "$@"; fi
  # With TLS, its options (tls-lib.sh, which redis-lib.sh sources) come first.
  # shellcheck disable=SC2046 # tls_cli_opts prints options to split
  set -- $(tls_cli_opts) -h "$(host_of "$_hp")" -p "$(port_of "$_hp")" "$@"
  if [ -n "$_pw" ]; then
    REDISCLI_AUTH=$_pw VALKEYCLI_AUTH=$_pw with_timeout "$REDIS_CLI" "$@"
  else
    with_timeout "$REDIS_CLI" "$@"
  fi
}

# redis_cli / sentinel_cli NODE ARGS...: the seam every function of redis-lib.sh reaches a node
# through, as user operator (its password read at each call, so a rotation applies at once).
# NODE is host:port here; a script that reaches the nodes another way (the harness: docker exec,
# NODE an ordinal) redefines both after sourcing this file.
redis_cli() { cli operator "$(auth_password operator)" "$@"; }
sentinel_cli() { cli operator "$(auth_password operator)" "$@"; }

# as_admin HOST:PORT ARGS...: ARGS as admin, trying each password admin may have (the current,
# the next, the previous) and, while it is mounted, the default user's legacy password, so that
# a node that has not applied the latest files yet is still reached. stdin goes to redis-cli.
as_admin() {
  _hp=$1
  shift
  for _cand in admin-password admin-password-next admin-password-previous password; do
    _p=$(read_secret "$(auth_dir)/$_cand")
    [ -n "$_p" ] || continue
    _u='admin'
    [ "$_cand" != password ] || _u=''
    if cli "$_u" "$_p" "$_hp" PING 2>/dev/null | grep -qx PONG; then
      cli "$_u" "$_p" "$_hp" "$@"
      return
    fi
  done
  return 1
}

# acl_apply SIDE HOST:PORT: sets every user of SIDE on the node at HOST:PORT to what the files say,
# with ACL SETUSER (ACL LOAD would close the connections of every user before Redis 7.4; SETUSER
# keeps them). The rule lines go by stdin. Non-zero unless every line was applied.
acl_apply() {
  auth_version
  _out=$(for _u in $(acl_users "$1"); do
    printf 'ACL SETUSER %s reset %s\n' "$_u" "$(acl_line "$1" "$_u")"
  done | as_admin "$2" 2>&1) || return 1
  _bad=$(printf '%s\n' "$_out" | grep -vx OK | head -n 1)
  [ -z "$_bad" ] || { log "ACL SETUSER on $2: $_bad"; return 1; }
}

# ---------------------------------------------------------------------------------------------
# Applying changed password files to the running processes, without a restart (a rotation, the
# end of an upgrade). Kubernetes updates a mounted Secret's files in place within about a minute
# (never with subPath mounts, which the chart does not use).

# auth_sync_redis HOST:PORT STATE_DIR: the users, and what this node sends its master
# (masteruser/masterauth: used on the next reconnection, the link stays up)
auth_sync_redis() {
  acl_apply redis "$1" || return 1
  as_admin "$1" CONFIG SET masteruser replication | grep -qx OK || return 1
  auth_password replication | as_admin "$1" -x CONFIG SET masterauth | grep -qx OK
}

# auth_sync_sentinel HOST:PORT STATE_DIR: the users, and what this sentinel sends the Redis nodes
# (auth-user/auth-pass) and the other sentinels (sentinel-user/sentinel-pass). Those are set
# only when user sentinel's password changed: setting them drops the sentinel's connections
# (it reconnects at once). STATE_DIR keeps the hash of the password last set.
auth_sync_sentinel() {
  acl_apply sentinel "$1" || return 1
  _sum=$(auth_password sentinel | sha256_hex)
  [ "$_sum" != "$(cat "$2/sentinel-pass.sha256" 2>/dev/null)" ] || return 0
  # One sentinel at a time (REDIS_AUTH_STAGGER seconds apart, by ordinal): while a sentinel
  # reconnects, it does not see the master healthy, and a master that no majority of sentinels
  # sees healthy refuses writes (start-redis.sh's fencing).
  sleep $((${NODE_INDEX:-0} * ${REDIS_AUTH_STAGGER:-2}))
  as_admin "$1" SENTINEL SET "$MASTER_NAME" auth-user sentinel | grep -qx OK || return 1
  auth_password sentinel | as_admin "$1" -x SENTINEL SET "$MASTER_NAME" auth-pass | grep -qx OK || return 1
  as_admin "$1" SENTINEL CONFIG SET sentinel-user sentinel | grep -qx OK || return 1
  auth_password sentinel | as_admin "$1" -x SENTINEL CONFIG SET sentinel-pass | grep -qx OK || return 1
  auth_note_sentinel_pass "$2"
}
# auth_note_sentinel_pass STATE_DIR: records the sentinel password in use (its hash)
auth_note_sentinel_pass() {
  (umask 077 && auth_password sentinel | sha256_hex >"$1/sentinel-pass.sha256")
}

# auth_bridge SIDE NODES: while the single password of chart versions before these users is
# mounted (an upgrade from one of them is in progress), gives every node of NODES that has no
# user `operator` (a pod of the old version, which knows the default user only) SIDE's users,
# in memory, so that this pod's scripts, sentinels and replication reach it. The old pod keeps
# its default user, so its own clients go on working; it loses the users when it is replaced.
auth_bridge() {
  _legacy=$(auth_legacy_password)
  [ -n "$_legacy" ] || return 0
  for _n in $2; do
    [ "$_n" != "${3:-}" ] || continue
    _g=$(cli '' "$_legacy" "$_n" ACL GETUSER operator 2>/dev/null) || continue
    case "$_g" in
      *ERR* | *NOAUTH* | *WRONGPASS* | *NOPERM*) continue ;; # a new node (default refused) or no ACL
    esac
    [ -z "$(printf '%s' "$_g" | tr -d '[:space:]')" ] || continue
    if acl_apply "$1" "$_n"; then log "upgrade: gave $_n, a node without ACL users, this chart's users"; fi
  done
}

# auth_loop SIDE HOST:PORT PID ACL_FILE STATE_DIR SEEN: while PID runs, every REDIS_AUTH_INTERVAL
# seconds (default 5): when the password files differ from fingerprint SEEN, rewrites ACL_FILE
# and applies the change to the process at HOST:PORT (retried until it succeeds); while the old
# single password is mounted, bridges the old peers among BRIDGE_REDIS and BRIDGE_SENTINELS
# (node lists the caller sets; this node is skipped).
auth_loop() {
  _seen=$6
  while sleep "${REDIS_AUTH_INTERVAL:-5}" && kill -0 "$3" 2>/dev/null; do
    # Changed certificate files too (tls-lib.sh).
    tls_watch "$1" "$2"
    auth_bridge redis "${BRIDGE_REDIS:-}" "$2"
    auth_bridge sentinel "${BRIDGE_SENTINELS:-}" "$2"
    _now=$(auth_fingerprint)
    [ "$_now" != "$_seen" ] || continue
    acl_write "$1" "$4"
    if auth_sync_"$1" "$2" "$5"; then
      _seen=$_now
      log "password files changed: users applied ($(acl_summary "$1"))"
    else
      log "password files changed, but applying them to $2 failed: trying again"
    fi
  done
}

# acl_summary SIDE: how many passwords each user of SIDE is accepted with (never the passwords)
acl_summary() {
  for _u in $(acl_users "$1"); do
    _n=0
    for _h in $(auth_hashes "$_u"); do _n=$((_n + 1)); done
    printf '%s=%s ' "$_u" "$_n"
  done | sed 's/ $//'
}
