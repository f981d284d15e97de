# shellcheck shell=sh
# shellcheck disable=SC2034 # variables set here are used by the scripts that source this file
# Common functions of tally's Redis Cluster scripts (start-cluster-node.sh, cluster-init.sh,
# prestop-cluster.sh, probe.sh cluster-*). It sources redis-lib.sh, whose lib_init names the
# nodes (POD_NAME, HEADLESS_DOMAIN, REDIS_PORT, REDIS_NODES, NODE_INDEX; the users: auth-lib.sh);
# here REDIS_NODE_COUNT is every node of the cluster (masters and replicas). Kept apart from
# redis-lib.sh, which holds the Sentinel group's logic, so that neither file grows past a screen
# of concerns; every cluster script reaches a node through redis-lib.sh's redis_cli seam.
#
#   CLUSTER_REPLICAS     replicas per master                              default: 1
#
# Every node announces its name (cluster-announce-hostname, preferred endpoint type hostname):
# clients get names, never pod IPs. The cluster bus itself (port + 10000) runs on IPs, which
# nodes.conf keeps; refresh_node_ips rewrites them from DNS before a restarted node starts.

FILES_DIR=${FILES_DIR:-$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)}
# shellcheck source-path=SCRIPTDIR source=redis-lib.sh
. "$FILES_DIR/redis-lib.sh"

cluster_lib_init() {
  REDIS_NODE_COUNT=${REDIS_NODE_COUNT:-6}
  lib_init
  CLUSTER_REPLICAS=${CLUSTER_REPLICAS:-1}
}

# cluster_field NODE FIELD: FIELD of NODE's CLUSTER INFO, empty when it does not answer
cluster_field() {
  info_field "$(redis_cli "$1" CLUSTER INFO 2>/dev/null)" "$2"
}

# cluster_nodes NODE: NODE's CLUSTER NODES, without carriage returns; empty when it does not answer
cluster_nodes() {
  redis_cli "$1" CLUSTER NODES 2>/dev/null | tr -d '\r'
}

# node_hostname ADDRESS-FIELD: the host name in a CLUSTER NODES address field
# (ip:port@cport,hostname[,aux=...]), empty when none is announced
node_hostname() {
  printf '%s\n' "$1" | awk -F, 'NF > 1 && $2 !~ /=/ { print $2 }'
}

# resolve HOST: the first address HOST resolves to, empty when it does not (getent: Debian's
# and Alpine's images have it; without it, nothing is resolved and nothing rewritten)
resolve() {
  command -v getent >/dev/null 2>&1 || return 0
  getent hosts "$1" 2>/dev/null | awk 'NR == 1 { print $1 }'
}

# cluster_exists: the first node that has slots assigned (the cluster was created), empty when
# no node that answers has any
cluster_exists() {
  for _n in $REDIS_NODES; do
    _s=$(cluster_field "$_n" cluster_slots_assigned)
    if [ -n "$_s" ] && [ "$_s" -gt 0 ]; then
      printf '%s\n' "$_n"
      return 0
    fi
  done
  return 0
}

# all_nodes_answer: every node of REDIS_NODES answers PING
all_nodes_answer() {
  for _n in $REDIS_NODES; do
    [ "$(redis_cli "$_n" PING 2>/dev/null)" = PONG ] || return 1
  done
}

# refresh_node_ips FILE: in nodes.conf FILE, every node's IP replaced by the one its announced
# host name resolves to now. A pod comes back with a new IP; nodes.conf still has the old ones,
# and a node that restarts with every peer's address stale (the whole cluster rescheduled) would
# reach none of them. Peers whose name does not resolve (not running) keep their old IP.
refresh_node_ips() {
  [ -s "$1" ] || return 0
  : >"$1.map"
  awk '{ n = split($2, a, ","); if (n > 1 && a[2] !~ /=/) print a[2] }' "$1" | sort -u >"$1.names"
  while read -r _h; do
    _ip=$(resolve "$_h")
    [ -z "$_ip" ] || printf '%s %s\n' "$_h" "$_ip" >>"$1.map"
  done <"$1.names"
  awk 'NR == FNR { ip[$1] = $2; next }
    {
      n = split($2, a, ",")
      if (n > 1 && (a[2] in ip)) {
        at = index(a[1], "@"); hp = substr(a[1], 1, at - 1); cp = substr(a[1], at)
        old = hp; sub(/:[0-9]+$/, "", old)
        port = substr(hp, length(old) + 1)
        new = ip[a[2]]
        if (new ~ /:/) new = "[" new "]"
        if (old != new) { changed++; sub(/^[^,]*/, new port cp, $2) }
      }
      print
    }
    END { if (changed) printf "%d address(es) refreshed from DNS\n", changed > "/dev/stderr" }' \
    "$1.map" "$1" >"$1.new" && mv "$1.new" "$1"
  rm -f "$1.map" "$1.names"
}

# stale_ids NODE MYID: ids of the nodes NODE knows under this node's host name that are not
# MYID: the identities of this pod's earlier lives (its volume was lost), one per line as
# "id slots" (slots: the number of slot ranges it still owns)
stale_ids() {
  cluster_nodes "$1" | awk -v me="$MY_HOST" -v id="$2" '
    { n = split($2, a, ","); if (n > 1 && tolower(a[2]) == tolower(me) && $1 != id) print $1, NF - 8 }'
}

# weakest_master NODE: the id of the master (with slots) that has the fewest healthy replicas,
# as NODE sees the cluster; ties go to the first in CLUSTER NODES order
weakest_master() {
  cluster_nodes "$1" | awk '
    $3 ~ /master/ && $3 !~ /fail/ && NF > 8 { masters[$1] = 0; order[++m] = $1 }
    $3 ~ /slave/ && $3 !~ /fail/ { reps[$4]++ }
    END {
      best = ""
      for (i = 1; i <= m; i++) { c = reps[order[i]] + 0; if (best == "" || c < min) { best = order[i]; min = c } }
      if (best != "") print best
    }'
}

# my_master_id: the id of the master this node replicates, empty when it is a master
my_master_id() {
  cluster_nodes "$MY_REDIS" | awk '$3 ~ /myself/ && $3 ~ /slave/ { print $4 }'
}

# master_in_sync_replica: host:port of a replica of this node whose link is up and that acked
# the stream within the last second (CLUSTER FAILOVER then waits until it has caught up
# exactly), empty when there is none
master_in_sync_replica() {
  _ri=$(redis_cli "$MY_REDIS" INFO replication 2>/dev/null) || return 0
  printf '%s\n' "$_ri" | tr -d '\r' | awk -F'[:,=]' '
    $1 ~ /^slave[0-9]+$/ {
      for (i = 2; i < NF; i += 2) v[$i] = $(i + 1)
      if (v["state"] == "online" && v["lag"] <= 1) { print v["ip"] ":" v["port"]; exit }
    }'
}
