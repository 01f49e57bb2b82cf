#!/usr/bin/env bash
# A private three-node RabbitMQ cluster on loopback, for tests of quorum queues and of a worker that
# must ride out the loss of one node. Each node is a deploy/lib/rabbitmq.sh node of its own (its
# directory $CLUSTER_DIR/nodeN, AMQP port, distribution port and name iwPORT@localhost); the three
# share one Erlang cookie and form one cluster.
#
# As a library (source it):
#   cluster_start   boots the cluster in CLUSTER_DIR (made if unset) and exports CLUSTER_DIR,
#                   CLUSTER_PORTS ("P1 P2 P3"), CLUSTER_NODES ("N1 N2 N3") and CLUSTER_TRANSPORT_URL
#                   (rabbit://guest:guest@127.0.0.1:P1,guest:guest@127.0.0.1:P2,...:P3/, oslo's
#                   multi-host form); all of it is kept in $CLUSTER_DIR/cluster.env for the commands
#   cluster_stop    stops the three nodes and removes CLUSTER_DIR (KEEP_BROKER_DIR=1 keeps it)
# The caller gives back the claimed ports with release_port_claims, as after broker_start.
#
# As a command (CLUSTER_DIR must be set), N being 1, 2 or 3:
#   rabbitmq_cluster.sh stop N         stop node N, keeping its data (the cluster waits for it)
#   rabbitmq_cluster.sh start N        boot node N again; returns once it runs and is back in the cluster
#   rabbitmq_cluster.sh await N        wait until node N runs in the cluster (after a long pause: resume N)
#   rabbitmq_cluster.sh pause N        freeze node N (SIGSTOP): its sockets stay open, nothing answers
#   rabbitmq_cluster.sh resume N       thaw it (SIGCONT); after a pause longer than net_ticktime (60 s)
#                                      the others had dropped it: autoheal restarts its broker, serving
#                                      again ~6 s later (await N waits for that)
#   While a node is frozen, anything that changes every member (add-vhost, declaring a new queue) waits
#   until the others drop it, 60 to 75 s; publishing and consuming through the others go on.
#   rabbitmq_cluster.sh ctl N ARGS...  rabbitmqctl ARGS against node N
#   rabbitmq_cluster.sh node N         node N's Erlang name
#   rabbitmq_cluster.sh node-of-port PORT   the Erlang name of the node listening on AMQP port PORT
#   rabbitmq_cluster.sh ports          the three AMQP ports, one a line (node 1 first)
#   rabbitmq_cluster.sh running        the nodes the cluster counts as running, one a line (as the first
#                                      live node sees it: a frozen node stays in until net_ticktime, 60 s)
#   rabbitmq_cluster.sh add-vhost NAME add a vhost that guest may use (through any running node)
#   rabbitmq_cluster.sh leader QUEUE [VHOST]   the node leading quorum queue QUEUE (VHOST: /)
# Stop at most one node at a time: a node that boots while all of its peers are down waits for them
# (up to 5 minutes) before it gives up.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/rabbitmq.sh"

CLUSTER_SIZE=3
# Booting three nodes at once on two cores, or one that syncs from its peers under load, takes longer
# than a lone node: rabbitmqctl wait gets more time than rabbitmq.sh's default 60 s.
CLUSTER_WAIT_TIMEOUT=${CLUSTER_WAIT_TIMEOUT:-180}
# A node paused for longer than net_ticktime (60 s) is dropped by the two others; resumed, it is back
# at once and Mnesia records a partition. With the default, ignore, the cluster would then stay split
# for every later test, and pause_minority does not help either (the resumed node never finds itself
# alone: tried). autoheal restarts the losing side (the frozen node, whose clients have gone) and the
# cluster is whole again some seconds after the resume.
CLUSTER_NODE_CONF="cluster_partition_handling = autoheal"
# On 3.10 the winner of an autoheal waits for the loser to go down, which it had seen already, and
# never tells it to start again: the loser starts when its autoheal_state_transition_timeout (60 s)
# runs out. A short one is safe with one loser at a time (the wait guards against two losers racing
# in Mnesia) and makes a resumed node serve again in about 6 s. Not a rabbitmq.conf setting.
CLUSTER_NODE_ERL_ARGS="-rabbit autoheal_state_transition_timeout 5000"

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# cluster_use N: makes node N the broker of this shell (BROKER_DIR, AMQP_PORT, BROKER_NODE), for
# rabbitmq.sh's functions. Run it in a subshell: a caller's own BROKER_DIR (a single broker of a
# test run beside the cluster) must stay as it was.
cluster_use() {
  [[ "${1:-}" =~ ^[1-9][0-9]*$ ]] && [ "$1" -le "$CLUSTER_SIZE" ] || die "node number must be 1..$CLUSTER_SIZE, not '${1:-}'"
  BROKER_DIR=$CLUSTER_DIR/node$1
  broker_load_env
}

# cluster_on N COMMAND...: runs COMMAND (a rabbitmq.sh function, or broker_ctl ARGS) for node N.
cluster_on() {
  local n=$1
  shift
  ( cluster_use "$n"; "$@" )
}

# node_pid N: node N's beam process id (empty when it has none). The pid file outlives the node: the
# process must still be the one whose home is node N's directory, not a later one given the same pid.
node_pid() {
  local pid
  pid=$(cat "$CLUSTER_DIR/node$1/pid" 2>/dev/null || true)
  [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-home $CLUSTER_DIR/node$1 " || return 0
  echo "$pid"
}

# node_alive N: node N's Erlang VM runs and is not frozen (a frozen one answers no rabbitmqctl).
node_alive() {
  local pid state
  pid=$(node_pid "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  state=$(ps -o state= -p "$pid" 2>/dev/null || true)
  case "$state" in ""|T*|t*|Z*) return 1 ;; esac
}

# cluster_status_json N: node N's cluster_status, as JSON on one line. (It asks every member for
# its alarms and listeners: with a member frozen it takes until net_ticktime has given up on it.)
cluster_status_json() {
  cluster_on "$1" broker_env timeout 90 "$RABBITMQ_BIN/rabbitmqctl" cluster_status --formatter json 2>/dev/null
}

# running_nodes_seen_by N: the running nodes of node N's cluster_status, one a line.
running_nodes_seen_by() {
  local json
  json=$(cluster_status_json "$1") || return 1
  # {"alarms":[],...,"running_nodes":["iw5680@localhost","iw5681@localhost"],...}: no jq needed.
  sed -n 's/.*"running_nodes":\[\([^]]*\)\].*/\1/p' <<<"$json" | tr -d '"' | tr ',' '\n' | sed '/^$/d'
}

# running_nodes_known_to N: the nodes node N's Mnesia counts as running (cluster_status's list
# without its calls to every member, so a frozen member holds nothing up), one a line.
running_nodes_known_to() {
  local out
  out=$(cluster_on "$1" broker_env timeout 30 "$RABBITMQ_BIN/rabbitmqctl" eval 'rabbit_nodes:all_running().' 2>/dev/null) \
    || return 1
  # [iw5680@localhost,iw5681@localhost]
  tr -d "[]' \n" <<<"$out" | tr ',' '\n' | sed '/^$/d'
}

# rejoined N: node N answers AMQP, and its cluster_status shows itself and every other live node
# running and no partition (after start N, or resume N: then its broker may be restarting).
rejoined() {
  local json seen m
  amqp_answers "$(cut -d' ' -f"$1" <<<"$CLUSTER_PORTS")" || return 1
  json=$(cluster_status_json "$1") || return 1
  grep -qF '"partitions":{}' <<<"$json" || return 1
  seen=$(sed -n 's/.*"running_nodes":\[\([^]]*\)\].*/\1/p' <<<"$json" | tr -d '"' | tr ',' '\n')
  for m in $(seq "$CLUSTER_SIZE"); do
    [ "$m" = "$1" ] || node_alive "$m" || continue
    grep -qxF "$(node_name "$m")" <<<"$seen" || return 1
  done
}

node_name() { cut -d' ' -f"$1" <<<"$CLUSTER_NODES"; }

# cli_any TOOL ARGS...: TOOL (rabbitmqctl, rabbitmq-queues) ARGS through the first node that runs
# and answers; prints its output. A change of the cluster's schema (a vhost) waits for every member:
# with one frozen, until net_ticktime has dropped it (60 to 75 s), hence the timeout, which then
# moves on to the next node.
cli_any() {
  local tool=$1 n out errors
  shift
  errors=$(mktemp)
  for n in $(seq "$CLUSTER_SIZE"); do
    node_alive "$n" || continue
    if out=$(cluster_on "$n" broker_env timeout 150 "$RABBITMQ_BIN/$tool" "$@" 2>"$errors"); then
      rm -f "$errors"
      [ -z "$out" ] || printf '%s\n' "$out"
      return 0
    fi
    log "$tool $* through node $n failed: $(tail -n 1 "$errors" || true)"
  done
  rm -f "$errors"
  die "no running node of the cluster in $CLUSTER_DIR answered $tool $*"
}

# boot_nodes N...: boots the nodes at once, each waited for as rabbitmq.sh does (which prints the
# end of a failed node's log); dies naming those that did not come up.
boot_nodes() {
  local n pids=() failed=() i=0
  for n in "$@"; do
    cluster_on "$n" broker_boot &
    pids+=($!)
  done
  for n in "$@"; do
    wait "${pids[$i]}" || failed+=("$n")
    i=$((i + 1))
  done
  [ ${#failed[@]} -eq 0 ] || die "cluster node(s) ${failed[*]} did not boot (logs: $CLUSTER_DIR/nodeN/log)"
}

cluster_write_env() {
  {
    printf 'CLUSTER_DIR=%q\n' "$CLUSTER_DIR"
    printf 'CLUSTER_PORTS=%q\n' "$CLUSTER_PORTS"
    printf 'CLUSTER_NODES=%q\n' "$CLUSTER_NODES"
    printf 'CLUSTER_TRANSPORT_URL=%q\n' "$CLUSTER_TRANSPORT_URL"
  } > "$CLUSTER_DIR/cluster.env"
}

cluster_load_env() {
  [ -n "${CLUSTER_DIR:-}" ] && [ -f "$CLUSTER_DIR/cluster.env" ] || die "CLUSTER_DIR must name a directory made by cluster_start"
  # shellcheck disable=SC1091
  source "$CLUSTER_DIR/cluster.env"
  export CLUSTER_DIR CLUSTER_PORTS CLUSTER_NODES CLUSTER_TRANSPORT_URL
}

cluster_start() {
  local t0 t n port ports=() hosts=() cookie
  t0=$(date +%s%N)
  ensure_packages rabbitmq-server
  CLUSTER_DIR=${CLUSTER_DIR:-$(mktemp -d /tmp/image-worker-rabbit-cluster.XXXXXX)}
  mkdir -p "$CLUSTER_DIR"
  # Always a new cluster: a node directory left from an earlier one would bring back its membership.
  for n in $(seq "$CLUSTER_SIZE"); do
    [ -z "$(node_pid "$n")" ] || die "node $n of an earlier cluster still runs in $CLUSTER_DIR (cluster_stop it first)"
    rm -rf "$CLUSTER_DIR/node$n"
  done
  for n in $(seq "$CLUSTER_SIZE"); do
    port=$(broker_pick_port "${ports[@]}") || die "no $CLUSTER_SIZE free AMQP ports in 5680..5780 for the cluster"
    ports+=("$port")
    hosts+=("guest:guest@127.0.0.1:$port")
  done
  CLUSTER_PORTS="${ports[*]}"
  CLUSTER_NODES=$(printf 'iw%s@localhost ' "${ports[@]}")
  CLUSTER_NODES=${CLUSTER_NODES% }
  CLUSTER_TRANSPORT_URL="rabbit://$(IFS=,; echo "${hosts[*]}")/"
  export CLUSTER_DIR CLUSTER_PORTS CLUSTER_NODES CLUSTER_TRANSPORT_URL
  cluster_write_env

  # Nodes talk only to nodes (and rabbitmqctl) with the same cookie, which Erlang reads from
  # $HOME/.erlang.cookie (HOME is the node's directory) and refuses unless only its owner may read it.
  cookie=$(od -An -N 24 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)
  for n in $(seq "$CLUSTER_SIZE"); do
    # shellcheck disable=SC2034  # read by broker_prepare
    ( BROKER_DIR=$CLUSTER_DIR/node$n AMQP_PORT=${ports[$((n - 1))]} BROKER_EXTRA_CONF=$CLUSTER_NODE_CONF \
        BROKER_ERL_ARGS=$CLUSTER_NODE_ERL_ARGS BROKER_WAIT_TIMEOUT=$CLUSTER_WAIT_TIMEOUT AMQP_TLS_PORT=''
      broker_prepare )
    rm -f "$CLUSTER_DIR/node$n/.erlang.cookie"
    (umask 077; printf '%s' "$cookie" > "$CLUSTER_DIR/node$n/.erlang.cookie")
    chmod 0400 "$CLUSTER_DIR/node$n/.erlang.cookie"
  done

  # Until they join, the nodes are three unrelated brokers: they boot at once.
  t=$(date +%s%N)
  # shellcheck disable=SC2046
  boot_nodes $(seq "$CLUSTER_SIZE")
  log "cluster: $CLUSTER_SIZE nodes booted in $(ms_since "$t") ms"
  # Joins one after another, as RabbitMQ documents them: two changes of membership at once could
  # save some 4 s, for a race in Mnesia's schema that nothing here would recover from.
  for n in $(seq 2 "$CLUSTER_SIZE"); do
    t=$(date +%s%N)
    cluster_on "$n" broker_ctl stop_app >/dev/null || die "node $n did not stop its app to join the cluster"
    cluster_on "$n" broker_ctl join_cluster "$(node_name 1)" >/dev/null || die "node $n could not join $(node_name 1)"
    cluster_on "$n" broker_ctl start_app >/dev/null || die "node $n did not start again after joining the cluster"
    log "cluster: node $n joined $(node_name 1) in $(ms_since "$t") ms"
  done
  cluster_on 1 broker_ctl await_online_nodes "$CLUSTER_SIZE" --timeout 60 >/dev/null 2>&1 || true
  local seen
  seen=$(running_nodes_seen_by 1 || true)
  [ "$(grep -c . <<<"$seen")" -eq "$CLUSTER_SIZE" ] \
    || die "the cluster in $CLUSTER_DIR does not run $CLUSTER_SIZE nodes; node 1 sees running: $(tr '\n' ' ' <<<"$seen")"
  for n in $(seq "$CLUSTER_SIZE"); do
    wait_until 30 "node $n answering AMQP" amqp_answers "${ports[$((n - 1))]}"
  done
  log "rabbitmq cluster of $(tr '\n' ' ' <<<"$seen")ready on ports $CLUSTER_PORTS in $(ms_since "$t0") ms"
}

cluster_stop() {
  [ -n "${CLUSTER_DIR:-}" ] && [ -d "$CLUSTER_DIR" ] || return 0
  local t n pids=()
  t=$(date +%s%N)
  # All at once: each shutdown takes 2 to 5 s, and nothing is kept to start again.
  for n in $(seq "$CLUSTER_SIZE"); do
    [ -f "$CLUSTER_DIR/node$n/broker.env" ] || continue
    cluster_on "$n" broker_halt &
    pids+=($!)
  done
  for n in "${pids[@]}"; do wait "$n" || true; done
  log "rabbitmq cluster stopped in $(ms_since "$t") ms"
  [ "${KEEP_BROKER_DIR:-0}" = 1 ] || rm -rf "$CLUSTER_DIR"
}

# cluster_node_await N: waits until node N runs in the cluster (rejoined).
cluster_node_await() {
  local t
  t=$(date +%s%N)
  (cluster_use "$1")  # N is 1..3
  [ -n "$(node_pid "$1")" ] || die "node $1 ($(node_name "$1")) is not running (stopped: start $1)"
  wait_until 150 "node $1 ($(node_name "$1")) running with the other live nodes, no partition" rejoined "$1"
  log "cluster: node $1 ($(node_name "$1")) in the cluster after $(ms_since "$t") ms"
}

# cluster_node_start N: boots node N again and waits until it is back in the cluster.
cluster_node_start() {
  local t
  t=$(date +%s%N)
  (cluster_use "$1")  # N is 1..3
  [ -z "$(node_pid "$1")" ] || die "node $1 ($(node_name "$1")) is running already"
  boot_nodes "$1"
  wait_until 150 "node $1 ($(node_name "$1")) running with the other live nodes, no partition" rejoined "$1"
  log "cluster: node $1 ($(node_name "$1")) back in the cluster in $(ms_since "$t") ms"
}

cluster_node_stop() {
  local t
  t=$(date +%s%N)
  cluster_on "$1" broker_halt
  log "cluster: node $1 ($(node_name "$1")) stopped in $(ms_since "$t") ms"
}

# cluster_leader QUEUE [VHOST]: the node that leads quorum queue QUEUE, as its Raft members say.
# Not list_queues' leader column: that is the leader recorded in the queue's Mnesia record, which
# lags behind an election (seen), and list_queues waits for every node, a frozen one too (60 s);
# quorum_status asks the members and gives a frozen one up after 5 s ("Raft State":"timeout").
cluster_leader() {
  local queue=$1 vhost=${2:-/} leader
  # One member a line: {"Node Name":"iw5681@localhost","Raft State":"leader",...,"Term":5,...}. A
  # member cut off may still think itself the leader of an older term: the newest term wins.
  leader=$(cli_any rabbitmq-queues quorum_status -p "$vhost" "$queue" --formatter json \
    | sed -n 's/.*"Node Name":"\([^"]*\)","Raft State":"leader".*"Term":\([0-9]*\).*/\2 \1/p' \
    | sort -n | tail -n 1 | cut -d' ' -f2)
  [ -n "$leader" ] || die "quorum queue '$queue' in vhost '$vhost' has no leader now"
  echo "$leader"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  command=${1:-}
  shift || true
  usage() {
    echo "usage: $0 stop N|start N|await N|pause N|resume N|ctl N ARGS...|node N|node-of-port PORT|ports|running|add-vhost NAME|leader QUEUE [VHOST]" >&2
    echo "       (with CLUSTER_DIR set to a cluster made by cluster_start; N is 1..$CLUSTER_SIZE)" >&2
    exit 2
  }
  case "$command" in
    stop|start|await|pause|resume|ctl|node|node-of-port|ports|running|add-vhost|leader) cluster_load_env ;;
    *) usage ;;
  esac
  case "$command" in
    stop) [ $# -eq 1 ] || usage; cluster_node_stop "$1" ;;
    start) [ $# -eq 1 ] || usage; cluster_node_start "$1" ;;
    await) [ $# -eq 1 ] || usage; cluster_node_await "$1" ;;
    pause|resume)
      [ $# -eq 1 ] || usage
      cluster_use "$1"
      pid=$(node_pid "$1")
      [ -n "$pid" ] || die "node $1 ($(node_name "$1")) is not running"
      if [ "$command" = pause ]; then kill -STOP "$pid"; else kill -CONT "$pid"; fi ;;
    ctl) [ $# -ge 1 ] || usage; n=$1; shift; cluster_on "$n" broker_ctl "$@" ;;
    node) [ $# -eq 1 ] || usage; cluster_use "$1"; echo "$BROKER_NODE" ;;
    node-of-port)
      [ $# -eq 1 ] || usage
      for n in $(seq "$CLUSTER_SIZE"); do
        if [ "$(cut -d' ' -f"$n" <<<"$CLUSTER_PORTS")" = "$1" ]; then node_name "$n"; exit 0; fi
      done
      die "no node of the cluster in $CLUSTER_DIR listens on port $1 (ports: $CLUSTER_PORTS)" ;;
    ports) tr ' ' '\n' <<<"$CLUSTER_PORTS" ;;
    running)
      for n in $(seq "$CLUSTER_SIZE"); do
        node_alive "$n" || continue
        if running_nodes_known_to "$n"; then exit 0; fi
      done
      die "no running node of the cluster in $CLUSTER_DIR answered cluster_status" ;;
    add-vhost)
      [ $# -eq 1 ] || usage
      cli_any rabbitmqctl add_vhost "$1" >/dev/null
      cli_any rabbitmqctl set_permissions -p "$1" guest '.*' '.*' '.*' >/dev/null ;;
    leader) [ $# -ge 1 ] && [ $# -le 2 ] || usage; cluster_leader "$@" ;;
  esac
fi
