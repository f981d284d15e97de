# shellcheck shell=bash
# The HA fault harness over TLS (TALLY_HA_TLS=1): the check that the stack speaks TLS only, and
# scenario 17, a CA rotation under load. Sourced by deploy/compose/harness.sh, which sets ROOT,
# WORK, HA_TLS and TALLY_TLS_DIR (the certificates dev-tls.sh made for this run, bind-mounted
# into the containers). Sourcing defines functions only.

# tls_only: every Redis and Sentinel answers over TLS and gives a plain-TCP client no answer
# (tally, UP in HAProxy, is then on TLS too)
tls_only() {
  local n s p
  for n in 0 1 2; do
    for s in "redis-$n:6379" "sentinel-$n:26379"; do
      p=${s#*:}
      [ "$(container_cli "${s%:*}" "$p" PING)" = PONG ] || { log "${s%:*}: no PONG over TLS"; return 1; }
      if timeout 5 "$DOCKER" exec "$(cid "${s%:*}")" redis-cli -p "$p" PING 2>/dev/null | grep -q PONG; then
        log "${s%:*}: a plain-TCP PING was answered"
        return 1
      fi
    done
  done
}

# tls_files CA-FILE [CERT-DIR]: every pod's and tally's ca.crt become CA-FILE and, with CERT-DIR
# (another dev-tls.sh directory), every pod's certificate and key its own; each file replaced by
# a rename, as the watchers see a Secret change (they retry while a pod's pair is half replaced)
tls_files() {
  local d f
  for d in pod-0 pod-1 pod-2 client; do
    cp "$1" "$TALLY_TLS_DIR/$d/ca.crt.new"
    chmod 644 "$TALLY_TLS_DIR/$d/ca.crt.new"
    mv "$TALLY_TLS_DIR/$d/ca.crt.new" "$TALLY_TLS_DIR/$d/ca.crt"
    if [ -z "${2:-}" ] || [ "$d" = client ]; then continue; fi
    for f in tls.key tls.crt; do
      cp "$2/$d/$f" "$TALLY_TLS_DIR/$d/$f.new"
      chmod 644 "$TALLY_TLS_DIR/$d/$f.new"
      mv "$TALLY_TLS_DIR/$d/$f.new" "$TALLY_TLS_DIR/$d/$f"
    done
  done
}

# tls_count SERVICE TEXT: lines of SERVICE's log with TEXT
tls_count() { d logs "$(cid "$1")" 2>&1 | grep -c "$2" || true; }
declare -A TLS_BASE
tls_counts_now() { # what every container logged so far (earlier scenarios, restarts)
  local n
  for n in 0 1 2; do
    TLS_BASE[redis-$n]=$(tls_count "redis-$n" 'reloaded in place')
    TLS_BASE[sentinel-$n]=$(tls_count "sentinel-$n" 'sentinel restarted with them')
  done
}
# tls_applied K: every Redis reloaded its files, and every sentinel restarted with them, K times
# in this scenario
tls_applied() {
  local n
  for n in 0 1 2; do
    [ "$(tls_count "redis-$n" 'reloaded in place')" -ge $((TLS_BASE[redis-$n] + $1)) ] \
      || { WHY="redis-$n has not reloaded"; return 1; }
    [ "$(tls_count "sentinel-$n" 'sentinel restarted with them')" -ge $((TLS_BASE[sentinel-$n] + $1)) ] \
      || { WHY="sentinel-$n has not restarted"; return 1; }
  done
}
# tls_run_ids: the run id of every redis-server (new at every start of the process; its pid is 1
# in its container, whatever happens), to show that none restarted
tls_run_ids() {
  local n
  for n in 0 1 2; do rcli "$n" INFO server | sed -n 's/^run_id://p' | cut -c1-8; done | tr '\n' ' ' | sed 's/ $//'
}

# The CA and every certificate rotate under load, as docs/tls.md's runbook does it: (1) every
# process trusts the old and the new CA; (2) every pod gets a certificate of the new CA; (3) the
# new CA alone. Each step waits until every Redis reloaded its files and every sentinel restarted
# in place with them (one at a time, REDIS_TLS_RESTART_STAGGER apart). tally reads its CA file for
# every new connection: after the load every connection of user tally is closed, and both tally
# servers must come back UP with connections that trust the new CA only.
s17() {
  local new=$WORK/tls-new ids
  "$ROOT/deploy/compose/dev-tls.sh" "$new" >/dev/null
  cat "$TALLY_TLS_DIR/ca/ca.crt" "$new/ca/ca.crt" >"$WORK/tls-bundle.crt"
  tls_counts_now
  ids=$(tls_run_ids)
  start_load
  step 5 "rotation 1/3: every process trusts the old and the new CA" tls_files "$WORK/tls-bundle.crt"
  wait_until 40 "step 1 applied everywhere" tls_applied 1 || fail "step 1 not applied ($WHY)"
  event "step 1 applied everywhere"
  step 30 "rotation 2/3: every pod's certificate and key of the new CA" tls_files "$WORK/tls-bundle.crt" "$new"
  wait_until 40 "step 2 applied everywhere" tls_applied 2 || fail "step 2 not applied ($WHY)"
  event "step 2 applied everywhere"
  step 55 "rotation 3/3: the new CA alone" tls_files "$new/ca/ca.crt"
  wait_until 40 "step 3 applied everywhere" tls_applied 3 || fail "step 3 not applied ($WHY)"
  event "step 3 applied everywhere"
  reconnect_tally "that trust the new CA only"
  [ "$(tls_run_ids)" = "$ids" ] || fail "a redis-server restarted (run ids $ids, now $(tls_run_ids))"
  # The containers' redis-cli trusts the new CA only now: every port must serve a new certificate.
  tls_only || fail "a port does not serve a certificate of the new CA"
  # shellcheck disable=SC2034 # NOTE is read by run_scenario (harness-check.sh)
  NOTE="  scenario 17: no redis-server restarted (run ids $ids before and after)"
}
