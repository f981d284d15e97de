# shellcheck shell=bash
# The HA fault harness's load (`tally check`), its timing, its verdicts and the results table.
# Sourced by deploy/compose/harness.sh, which sets ROOT, LB, ART, WORK, RATE, TALLY_BIN and the
# scenario table (LOAD, KIND, BOUND, TITLE). Sourcing defines functions only.

now() { echo "$EPOCHREALTIME"; }
since_t0() { awk -v a="$(now)" -v b="$T0" 'BEGIN { printf "%.2f", a - b }'; }
at() { # at SECONDS: sleeps until T0 + SECONDS
  local left
  left=$(awk -v a="$(now)" -v b="$T0" -v t="$1" 'BEGIN { l = b + t - a; printf "%.3f", (l > 0 ? l : 0) }')
  sleep "$left"
}
EVENTS=()
MARK=""
# mark: the fault took effect now; the next event is dated here. A fault made of several steps
# (a kill, then a volume wiped and a restart: a second or more) begins its gap at the kill, and
# recovery is measured from the last event before the gap began.
mark() { MARK=$(since_t0); }
event() { # event DESCRIPTION: notes the time a fault action took effect (call it right after)
  local t=${MARK:-$(since_t0)}
  MARK=""
  EVENTS+=("$t")
  log "  t=${t}s $*"
}
# step SECONDS DESCRIPTION COMMAND...: at T0 + SECONDS, COMMAND (its output dropped), then the event
step() {
  at "$1"
  "${@:3}" >/dev/null
  event "$2"
}

start_check() { # start_check NAME DURATION
  CHECK_OUT=$ART/$1.json
  EVENTS=() MARK=""
  T0=$(now)
  "$TALLY_BIN" check --target "$LB" --ids 20 --concurrency 16 --rate "$RATE" --duration "$2s" \
    --timeout 3s --settle-timeout 30s --json >"$CHECK_OUT" 2>"$ART/$1.err" &
  CHECK_PID=$!
}

# run_scenario N: the steps of scenario N (the function sN), judged as its row of the table says.
# The steps start the load (start_load) when they are ready, note what went wrong (fail), and
# may leave a line for the log after the verdict (NOTE).
run_scenario() {
  SCENARIO=$1 EXTRA="" NOTE=""
  "s$1"
  # shellcheck disable=SC2153 # the table's arrays are harness.sh's
  finish_check "$1" "${TITLE[$1]}" "${KIND[$1]}" "$EXTRA" "${BOUND[$1]}"
  [ -z "$NOTE" ] || log "$NOTE"
}
start_load() { start_check "s$SCENARIO" "${LOAD[$SCENARIO]}"; }
fail() { EXTRA="${EXTRA:+$EXTRA, }$*"; } # fail WHY: the scenario fails, for WHY too
# back_in_sync N WAITING FAILED: waits up to 40 s until redis-N is a replica with its link up
# (logged as "redis-N WAITING" on timeout); else fails with "redis-N FAILED"
back_in_sync() { wait_until 40 "redis-$1 $2" is_replica_in_sync "$1" || fail "redis-$1 $3"; }

FAILED=0
PASSED=0
ROWS=()
# finish_check NUM TITLE KIND EXTRA [BOUND]: waits for the check, judges it, adds a table row.
#   KIND recover: writes back within BOUND (default 10) s of the fault; KIND nofail: zero failed
#   requests; KIND refuse: requests may fail while the system cannot guarantee them (only
#   lost, duplicated and over-count are judged, and EXTRA)
finish_check() {
  local num=$1 title=$2 kind=$3 extra=${4:-} bound=${5:-10} rc=0
  wait "$CHECK_PID" || rc=$?
  if ! jq -e . "$CHECK_OUT" >/dev/null 2>&1; then
    log "scenario $num: tally check gave no report (exit $rc): $(tail -n 5 "$ART/s$num.err" 2>/dev/null)"
    ROWS+=("| $num. $title | - | - | - | - | - | - | - | - | **FAIL** (no report) |")
    FAILED=$((FAILED + 1))
    return 0
  fi
  local requests ok failed avail gap gap_s lost dup over recovery verdict=PASS why=()
  read -r requests ok avail gap gap_s lost dup over < <(jq -r \
    '[.requests, .ok, .availability_pct, .longest_gap_ms, .longest_gap_start_s, .lost, .duplicated, .over_count] | @tsv' "$CHECK_OUT")
  failed=$((requests - ok))
  # Recovery: from the last fault action that came before the longest gap began (0.5 s slack)
  # to the end of that gap, i.e. to the first acknowledged increment after it.
  recovery=$(printf '%s\n' "${EVENTS[@]}" | awk -v s="$gap_s" -v g="$gap" '
    { if (NR == 1 || $1 <= s + 0.5) e = $1 }
    END { r = s + g / 1000 - e; printf "%.1f", (r > 0 ? r : 0) }')
  # Nothing failed: there was nothing to recover from.
  [ "$failed" != 0 ] || recovery=0.0
  [ "$lost" = 0 ] || why+=("lost $lost")
  [ "$dup" = 0 ] || why+=("duplicated $dup")
  [ "$over" = 0 ] || why+=("over-count $over")
  [ "$requests" -gt 0 ] || why+=("no requests")
  if [ "$kind" = recover ]; then
    awk -v r="$recovery" -v b="$bound" 'BEGIN { exit !(r <= b) }' || why+=("recovery ${recovery}s > ${bound}s")
  elif [ "$kind" = nofail ]; then
    [ "$failed" = 0 ] || why+=("$failed failed requests")
  fi
  [ -z "$extra" ] || why+=("$extra")
  if [ ${#why[@]} -gt 0 ]; then
    local joined
    joined=$(printf '%s, ' "${why[@]}")
    verdict="**FAIL**: ${joined%, }"
    FAILED=$((FAILED + 1))
    log "scenario $num FAILED: ${why[*]}"
  else
    PASSED=$((PASSED + 1))
  fi
  local rec_col=${recovery}s
  [ "$kind" = recover ] || rec_col="- (${failed} failed)"
  [ "$kind" != recover ] || [ "$bound" = 10 ] || rec_col="${recovery}s (bound ${bound}s)"
  ROWS+=("$(printf '| %s. %s | %s | %s | %.2f %% | %.1f s | %s | %s | %s | %s | %s |' \
    "$num" "$title" "$requests" "$failed" "$avail" "$(awk -v g="$gap" 'BEGIN { print g / 1000 }')" \
    "$rec_col" "$lost" "$dup" "$over" "$verdict")")
  log "scenario $num: requests $requests, failed $failed, availability ${avail}%, longest gap ${gap}ms at ${gap_s}s, recovery ${recovery}s, lost $lost, duplicated $dup, over-count $over: $verdict"
}

# update_docs TABLE: the run's table and how it was made, between the ha-results markers of docs/ha.md
update_docs() {
  local doc=$ROOT/docs/ha.md
  {
    echo "Run of $(date -u +%Y-%m-%d) on $(nproc) cores: \`deploy/compose/harness.sh --update-docs\`," \
      "tally $("$TALLY_BIN" --version | awk '{ print $2 }'), images $([ "$TALLY_IMAGES" = local ] && echo "from local stand-ins (Debian 12: redis $(d run --rm "$REDIS_IMAGE" redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p'), HAProxy $(d run --rm "$HAPROXY_IMAGE" haproxy -v | sed -n '1s/HAProxy version \([0-9.]*\).*/\1/p'))" || echo "official"),"
    echo "${RATE} requests/s from 16 connections over 20 ids; the whole run took ${TOTAL}s" \
      "(scenarios $((SECONDS - T_SCEN))s)."
    echo
    echo "$1"
  } >"$WORK/table.md"
  awk -v f="$WORK/table.md" '
    /<!-- ha-results:begin -->/ { print; while ((getline l < f) > 0) print l; skip = 1; next }
    /<!-- ha-results:end -->/ { skip = 0 }
    !skip { print }' "$doc" >"$WORK/ha.md"
  cat "$WORK/ha.md" >"$doc"
  log "results table written to docs/ha.md"
}
