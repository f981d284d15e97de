# shellcheck shell=bash
# The Redis Cluster fault harness's own functions: how it looks at the cluster, its faults, and
# its load (one `tally check` per shard, on ids whose slots that shard owns) with the verdicts.
# Sourced by deploy/compose/harness-cluster.sh after harness-lib.sh and harness-check.sh, whose
# stack, svc/cid, wait_until, cut_rules, at/step/event/fail it uses. Defines functions only.

NODES=(0 1 2 3 4 5)
# One id per shard's check, hammered by 5 connections. More ids would not fit one shard: the ids
# of a check differ only in their last digit, and CRC16 is linear, so their slots differ by fixed
# XOR patterns that carry some of them out of any one third of the slot space.
IDS_PER_SHARD=1

# ---------------------------------------------------------------------------------------------
# Looking at the cluster. rcli N (harness-lib.sh) is redis-cli inside redis-N.

ord_of() { sed -n 's/.*tally-redis-\([0-9]\)\..*/\1/p'; }
# cnodes: CLUSTER NODES as a running node sees it
cnodes() {
  local n out
  for n in "${NODES[@]}"; do
    out=$(rcli "$n" CLUSTER NODES) || continue
    [ -n "$out" ] && { echo "$out"; return 0; }
  done
}
# owner_of SLOT: the ordinal of the healthy master that owns SLOT, empty if none
owner_of() {
  cnodes | awk -v s="$1" '$3 ~ /master/ && $3 !~ /fail/ {
      for (i = 9; i <= NF; i++) { n = split($i, r, "-"); lo = r[1]; hi = (n > 1 ? r[2] : r[1])
        if ($i !~ /\[/ && s >= lo && s <= hi) { print $2; exit } } }' | ord_of
}
# replica_of M: the ordinal of a healthy replica of redis-M
replica_of() {
  local out id
  out=$(cnodes)
  id=$(awk -v m="tally-redis-$1." 'index($2, m) { print $1 }' <<<"$out")
  awk -v id="$id" '$3 ~ /slave/ && $3 !~ /fail/ && $4 == id { print $2; exit }' <<<"$out" | ord_of
}
is_owner() { [ "$(owner_of "$2")" = "$1" ]; } # is_owner N SLOT
is_replica() { [ "$(role_of "$1")" = slave ]; }

# cluster_healthy: every container running; every node in state ok; 3 masters with slots, each
# with one replica whose link is up; no node flagged fail, pfail or noaddr; both tally UP in
# HAProxy. WHY says what is not.
cluster_healthy() {
  local up n out masters r s
  up=$(d ps --filter "label=com.docker.compose.project=$PROJECT" --filter status=running \
    --format '{{.Label "com.docker.compose.service"}}')
  for n in redis-0 redis-1 redis-2 redis-3 redis-4 redis-5 tally-1 tally-2 lb; do
    grep -qx "$n" <<<"$up" || { WHY="$n not running"; return 1; }
  done
  for n in "${NODES[@]}"; do
    [ "$(info_field "$(rcli "$n" CLUSTER INFO)" cluster_state)" = ok ] || { WHY="redis-$n: cluster_state not ok"; return 1; }
  done
  out=$(cnodes)
  if grep -Eq 'fail|noaddr|handshake' <<<"$out"; then WHY="a node is flagged: $(grep -E 'fail|noaddr|handshake' <<<"$out" | head -n 1)"; return 1; fi
  masters=$(awk '$3 ~ /master/ && NF > 8' <<<"$out" | wc -l)
  [ "$masters" = 3 ] || { WHY="$masters masters with slots"; return 1; }
  r=$(awk 'NR == FNR { if ($3 ~ /master/ && NF > 8) m[$1] = 1; next } $3 ~ /slave/ && ($4 in m) { c[$4]++ }
    END { for (k in m) if (c[k] != 1) bad++; print bad + 0 }' <(echo "$out") <(echo "$out"))
  [ "$r" = 0 ] || { WHY="$r master(s) without exactly one replica"; return 1; }
  for n in $(awk '$3 ~ /slave/ { print $2 }' <<<"$out" | ord_of); do
    replica_link_up "$n" || { WHY="redis-$n: replica link not up"; return 1; }
  done
  out=$(curl -s --max-time 2 "$STATS/;csv")
  for s in tally-1 tally-2; do
    r=$(awk -F, -v s="$s" '$1 == "tally" && $2 == s { print $18 }' <<<"$out")
    [ "$r" = UP ] || { WHY="$s is '$r' in HAProxy"; return 1; }
  done
  WHY=""
}
wait_cluster_healthy() { # wait_cluster_healthy SECONDS
  local deadline=$((SECONDS + $1))
  until cluster_healthy; do
    if [ "$SECONDS" -ge "$deadline" ]; then log "not healthy after $1s: $WHY"; return 1; fi
    sleep 1
  done
}

# ---------------------------------------------------------------------------------------------
# Faults.

# cluster_cut_plan N: "PID IP..." for redis-N: its network namespace and the other nodes'
# addresses (tally and HAProxy still reach it: a master cut off from its peers, not from clients)
cluster_cut_plan() {
  local o ips=""
  for o in "${NODES[@]}"; do [ "$o" = "$1" ] || ips="$ips $(ip_of "redis-$o")"; done
  echo "$(d inspect -f '{{.State.Pid}}' "$(cid "redis-$1")")$ips"
}

# restart_node N: SIGTERM (60 s grace), start, wait until redis-N is a replica in sync
restart_node() {
  svc stop -t 60 "redis-$1"
  svc start "redis-$1"
  wait_until 60 "redis-$1 back in sync" replica_link_up "$1" || fail "redis-$1 did not come back in sync"
}

# ---------------------------------------------------------------------------------------------
# Load: one check per shard, on ids of that shard's slots, so each shard's outage is measured
# apart (one check over all ids would see the other shards' successes and no gap at all).

# keyslot STRING: Redis Cluster's slot of STRING (CRC16/XMODEM mod 16384). A counter's key is
# <prefix>{id}: its slot is the id's. Checked against CLUSTER KEYSLOT at the start.
keyslot() {
  local s=$1 crc=0 i j c
  for ((i = 0; i < ${#s}; i++)); do
    printf -v c '%d' "'${s:i:1}"
    crc=$((crc ^ (c << 8)))
    for ((j = 0; j < 8; j++)); do
      if ((crc & 0x8000)); then crc=$((((crc << 1) ^ 0x1021) & 0xFFFF)); else crc=$(((crc << 1) & 0xFFFF)); fi
    done
  done
  echo $((crc % 16384))
}
# shard_prefix TAG LO HI: an id prefix P such that P0..P(IDS_PER_SHARD-1) fall in slots LO-HI
shard_prefix() {
  local j i p s ok
  for ((j = 0; j < 500; j++)); do
    p="$1x$j-" ok=1
    for ((i = 0; i < IDS_PER_SHARD; i++)); do
      s=$(keyslot "$p$i")
      ((s >= $2 && s <= $3)) || { ok=0; break; }
    done
    [ "$ok" = 0 ] || { echo "$p"; return 0; }
  done
  return 1
}

# SHARD_LO/SHARD_HI: the slot ranges of the shards, read once the cluster is up
read_shards() {
  mapfile -t SHARDS < <(cnodes | awk '$3 ~ /master/ && NF > 8 { print $9 }' | sort -t- -k1,1n)
  [ "${#SHARDS[@]}" = 3 ] || { log "expected 3 shards, found: ${SHARDS[*]}"; return 1; }
  [ "$(keyslot tally)" = "$(rcli 0 CLUSTER KEYSLOT tally)" ] || { log "keyslot disagrees with CLUSTER KEYSLOT"; return 1; }
}

# start_shard_load: one `tally check` per shard, RATE shared among them, from T0
start_shard_load() {
  local k lo hi p
  EVENTS=() CHECK_PIDS=()
  for k in 0 1 2; do
    lo=${SHARDS[$k]%-*} hi=${SHARDS[$k]#*-}
    p=$(shard_prefix "c$SCENARIO-$RANDOM-s$k" "$lo" "$hi")
    PREFIX[k]=$p
  done
  # shellcheck disable=SC2034 # harness-check.sh's at and since_t0 count from T0
  T0=$(now)
  for k in 0 1 2; do
    "$TALLY_BIN" check --target "$LB" --id-prefix "${PREFIX[$k]}" --ids "$IDS_PER_SHARD" --concurrency 5 \
      --rate "$((RATE / 3))" --duration "${LOAD[$SCENARIO]}s" --timeout 3s --settle-timeout 30s --json \
      >"$ART/c$SCENARIO-shard$k.json" 2>"$ART/c$SCENARIO-shard$k.err" &
    CHECK_PIDS+=($!)
  done
}

# finish_shard_load NUM: waits for the checks and judges them. FAULTED: the shards the scenario
# faults. Lost, duplicated and over-count must be 0 everywhere, the other shards must not fail a
# request, and the faulted shards' longest gap must stay within the scenario's BOUND.
finish_shard_load() {
  local num=$1 k f req=0 ok=0 lost=0 dup=0 over=0 fail_f=0 fail_o=0 gap=0 gap_end=0 why=() verdict=PASS
  local r o g gs l du ov rec
  for k in "${!CHECK_PIDS[@]}"; do wait "${CHECK_PIDS[$k]}" || true; done
  for k in 0 1 2; do
    f=$ART/c$num-shard$k.json
    if ! jq -e . "$f" >/dev/null 2>&1; then why+=("shard $k: no report"); continue; fi
    read -r r o g gs l du ov < <(jq -r '[.requests, .ok, .longest_gap_ms, .longest_gap_start_s, .lost, .duplicated, .over_count] | @tsv' "$f")
    req=$((req + r)) ok=$((ok + o)) lost=$((lost + l)) dup=$((dup + du)) over=$((over + ov))
    if [[ " ${FAULTED[*]} " == *" $k "* ]]; then
      fail_f=$((fail_f + r - o))
      if awk -v a="$g" -v b="$gap" 'BEGIN { exit !(a / 1000 > b) }'; then
        gap=$(awk -v a="$g" 'BEGIN { printf "%.1f", a / 1000 }')
        gap_end=$(awk -v a="$g" -v s="$gs" 'BEGIN { printf "%.2f", s + a / 1000 }')
      fi
    else
      fail_o=$((fail_o + r - o))
    fi
    log "  shard $k (${SHARDS[$k]}): requests $r, failed $((r - o)), longest gap ${g} ms at ${gs} s"
  done
  # Recovery: from the last fault action before the faulted shard's writes came back (a restart,
  # the heal) to the first acknowledged increment after its longest gap.
  rec=$(printf '%s\n' "${EVENTS[@]}" | awk -v e="$gap_end" '$1 <= e + 0.5 { t = $1 } END { r = e - t; printf "%.1f", (r > 0 ? r : 0) }')
  [ "$fail_f" != 0 ] || rec=0.0
  [ "$lost" = 0 ] || why+=("lost $lost")
  [ "$dup" = 0 ] || why+=("duplicated $dup")
  [ "$over" = 0 ] || why+=("over-count $over")
  [ "$req" -gt 0 ] || why+=("no requests")
  [ "$fail_o" = 0 ] || why+=("$fail_o failed on shards not faulted")
  awk -v g="$gap" -v b="${BOUND[$num]}" 'BEGIN { exit !(g <= b) }' || why+=("shard outage ${gap}s > ${BOUND[$num]}s")
  [ -z "$EXTRA" ] || why+=("$EXTRA")
  if [ ${#why[@]} -gt 0 ]; then
    verdict="**FAIL**: $(printf '%s, ' "${why[@]}" | sed 's/, $//')"
    FAILED=$((FAILED + 1))
  else
    PASSED=$((PASSED + 1))
  fi
  local avail
  avail=$(awk -v o="$ok" -v r="$req" 'BEGIN { printf "%.2f", (r ? 100 * o / r : 0) }')
  ROWS+=("| $num. ${TITLE[$num]} | $req | $fail_f | $fail_o | $avail % | ${gap} s (bound ${BOUND[$num]} s) | ${rec} s | $lost | $dup | $over | $verdict |")
  log "scenario $num: requests $req, failed $fail_f on the faulted shard(s), $fail_o elsewhere, availability $avail %, shard outage ${gap}s, recovery ${rec}s, lost $lost, duplicated $dup, over-count $over: $verdict"
}

# update_cluster_docs TABLE: the table between the cluster-harness markers of docs/cluster.md
update_cluster_docs() {
  local doc=$ROOT/docs/cluster.md
  {
    echo "Run of $(date -u +%Y-%m-%d) on $(nproc) cores: \`deploy/compose/harness-cluster.sh --update-docs\`," \
      "tally $("$TALLY_BIN" --version | awk '{ print $2 }'), redis $(d run --rm "$REDIS_IMAGE" redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')" \
      "$([ "$TALLY_IMAGES" = local ] && echo "(Debian 12's package, the local stand-in image)"); 6 nodes, cluster-node-timeout 5000 ms."
    echo "${RATE} requests/s in all, one \`tally check\` per shard (on ${IDS_PER_SHARD} id whose slot it owns, 5 connections);" \
      "the whole run took ${TOTAL}s (scenarios $((SECONDS - T_SCEN))s). *Failed* counts requests answered 503 (never"
    echo "acknowledged), on the faulted shard(s) and on the others; *shard outage* is the faulted shard's longest gap"
    echo "without a success; *recovery* runs from the last fault action (restart, heal) to the first success after it."
    echo
    echo "$1"
  } >"$WORK/table.md"
  awk -v f="$WORK/table.md" '
    /<!-- cluster-harness:begin -->/ { print; while ((getline l < f) > 0) print l; skip = 1; next }
    /<!-- cluster-harness:end -->/ { skip = 0 }
    !skip { print }' "$doc" >"$WORK/cluster.md"
  cat "$WORK/cluster.md" >"$doc"
  log "results table written to docs/cluster.md"
}
