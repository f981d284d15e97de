# shellcheck shell=bash
# Scenario 16 of deploy/compose/harness.sh (every ACL user's password rotated under load), and
# what it shares with scenario 17 (harness-tls.sh): after a rotation, tally must reconnect.

# reconnect_tally WHAT: once the load has ended, closes every connection of user tally
# (CLIENT KILL USER tally on every Redis and Sentinel): both tally servers must come back UP in
# HAProxy and take writes, so their new connections work WHAT (with the new password, trusting
# the new CA). Connections stay open through a rotation, so only new ones prove it.
reconnect_tally() {
  local n
  while kill -0 "$CHECK_PID" 2>/dev/null; do sleep 1; done
  for n in 0 1 2; do
    rcli "$n" CLIENT KILL USER tally >/dev/null
    scli "$n" CLIENT KILL USER tally >/dev/null
  done
  log "  after the load: every connection of user tally closed"
  # HAProxy marks a server down after 2 failed readiness checks 1 s apart: give it the time.
  sleep 5
  wait_until 30 "tally-1 and tally-2 UP with connections $1" \
    eval 'lb_up tally-1 && lb_up tally-2 && accepts_writes' || fail "tally did not reconnect $1"
}

# Every password of every ACL user rotates, the way docs/security.md's runbook does it in a
# cluster: (1) a next password, accepted everywhere; (2) it becomes the current one, the old one
# stays accepted as previous, and every client (tally, the sentinels, the replicas, the scripts)
# moves to it; (3) the previous one goes. Each step waits until every Redis and Sentinel accepts
# exactly what the files say. The files change in place (compose's secrets are bind mounts).
# Connections stay open through a rotation, so after the load every connection of user tally is
# closed (CLIENT KILL USER tally everywhere): both tally servers must be back UP in HAProxy, i.e.
# open new ones with the password their file holds now.
s16() {
  local u
  start_load
  at 5
  for u in $AUTH_USERS; do new_password >"$TALLY_REDIS_AUTH_DIR/$u-password-next"; done
  event "rotation 1/3: a next password for every user"
  wait_until 30 "every process accepts the next passwords" rotation_applied || fail "step 1 not applied"
  event "step 1 applied everywhere"
  at 20
  for u in $AUTH_USERS; do
    cat "$TALLY_REDIS_AUTH_DIR/$u-password" >"$TALLY_REDIS_AUTH_DIR/$u-password-previous"
    cat "$TALLY_REDIS_AUTH_DIR/$u-password-next" >"$TALLY_REDIS_AUTH_DIR/$u-password"
    : >"$TALLY_REDIS_AUTH_DIR/$u-password-next"
  done
  event "rotation 2/3: every client sends the new password, the old one still accepted"
  wait_until 30 "every process accepts the new and the previous passwords" rotation_applied || fail "step 2 not applied"
  event "step 2 applied everywhere"
  # tally's own clients move when they re-read the file; wait as long as a mounted Secret takes.
  at 50
  for u in $AUTH_USERS; do : >"$TALLY_REDIS_AUTH_DIR/$u-password-previous"; done
  event "rotation 3/3: the previous passwords dropped"
  wait_until 30 "every process accepts the new passwords only" rotation_applied || fail "step 3 not applied"
  event "step 3 applied everywhere"
  reconnect_tally "with the new password"
}
