#!/usr/bin/env bash
# A private RabbitMQ node on loopback, owned by one run: its own data directory, ports and node name.
#
# As a library (source it):  broker_start / broker_stop, using and exporting
#   BROKER_DIR   data directory (made if unset)      AMQP_PORT      AMQP port (a free one if unset)
#   AMQP_TLS_PORT  with BROKER_TLS_DIR holding ca.pem, server.pem, server.key: also a TLS listener
#   BROKER_EXTRA_CONF  more rabbitmq.conf lines (optional)   BROKER_WAIT_TIMEOUT  seconds to boot (60)
#   BROKER_ERL_ARGS    more arguments for the node's Erlang VM, e.g. application settings that
#                      rabbitmq.conf does not know (optional; kept for later starts)
# and exporting RABBIT_TRANSPORT_URL (rabbit://guest:guest@127.0.0.1:PORT/) once the node is ready.
# The node's name is iwPORT@localhost and its distribution port PORT + 20000, so one port names all
# of a node: deploy/lib/rabbitmq_cluster.sh runs three of these, one directory and port each.
#
# As a command, for tests that stop and start the broker under a running worker:
#   rabbitmq.sh stop|start|restart|ctl ARGS...|add-vhost NAME      (BROKER_DIR must be set)
#   rabbitmq.sh pause|resume   freeze and thaw the node (SIGSTOP/SIGCONT): its sockets stay open
#                              but nothing answers, as after a network partition
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RABBITMQ_BIN=/usr/lib/rabbitmq/bin

broker_env() {
  env HOME="$BROKER_DIR" RABBITMQ_NODENAME="$BROKER_NODE" \
      RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$AMQP_PORT" RABBITMQ_DIST_PORT=$((AMQP_PORT + 20000)) \
      RABBITMQ_MNESIA_BASE="$BROKER_DIR/mnesia" RABBITMQ_LOG_BASE="$BROKER_DIR/log" RABBITMQ_PID_FILE="$BROKER_DIR/pid" \
      RABBITMQ_ENABLED_PLUGINS_FILE="$BROKER_DIR/enabled_plugins" RABBITMQ_CONFIG_FILE="$BROKER_DIR/rabbitmq" \
      RABBITMQ_CONF_ENV_FILE="$BROKER_DIR/rabbitmq-env.conf" ERL_EPMD_ADDRESS=127.0.0.1 \
      ERL_CRASH_DUMP="$BROKER_DIR/erl_crash.dump" \
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} $BROKER_ERL_SCHEDULER_ARGS ${BROKER_ERL_ARGS:-}" "$@"
}

# Erlang's schedulers spin for a while before sleeping, which on a 2-core machine running the worker,
# its tests and up to three nodes leaves rabbitmqctl (an Erlang VM itself) waiting seconds for a CPU.
# An idle node then uses next to no CPU; a private test broker never needs the lower latency.
# (RabbitMQ 3.10's rabbitmq-env passes the same by default; said here, it holds for other versions
# and whatever RABBITMQ_SCHEDULER_BUSY_WAIT_THRESHOLD the environment sets: the last flag wins.)
BROKER_ERL_SCHEDULER_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none"

broker_ctl() { broker_env "$RABBITMQ_BIN/rabbitmqctl" "$@"; }

# broker_pick_port [TAKEN...]: prints a free AMQP port in 5680..5780, none of TAKEN, claimed with its
# distribution port. (A claim this script already holds counts as free: TAKEN keeps a caller that
# picks several ports before binding any from getting the same one again.)
# shellcheck disable=SC2120  # rabbitmq_cluster.sh passes TAKEN
broker_pick_port() {
  local port
  for port in $(seq 5680 5780); do
    [[ " $* " == *" $port "* ]] && continue
    if claim_port "$port" && claim_port $((port + 20000)); then echo "$port"; return 0; fi
  done
  return 1
}

# broker_prepare: directory, ports and configuration (kept in $BROKER_DIR/broker.env for later commands).
broker_prepare() {
  ensure_packages rabbitmq-server
  if [ -z "${AMQP_PORT:-}" ]; then
    AMQP_PORT=$(broker_pick_port) || die "no free AMQP port in 5680..5780"
  fi
  BROKER_NODE=iw$AMQP_PORT@localhost
  BROKER_DIR=${BROKER_DIR:-$(mktemp -d "/tmp/image-worker-rabbit-$AMQP_PORT.XXXXXX")}
  mkdir -p "$BROKER_DIR/log" "$BROKER_DIR/mnesia"
  echo '[].' > "$BROKER_DIR/enabled_plugins"
  : > "$BROKER_DIR/rabbitmq-env.conf"
  {
    echo "loopback_users.guest = true"
    if [ -n "${AMQP_TLS_PORT:-}" ]; then
      echo "listeners.ssl.default = 127.0.0.1:$AMQP_TLS_PORT"
      echo "ssl_options.cacertfile = $BROKER_TLS_DIR/ca.pem"
      echo "ssl_options.certfile = $BROKER_TLS_DIR/server.pem"
      echo "ssl_options.keyfile = $BROKER_TLS_DIR/server.key"
      echo "ssl_options.verify = verify_none"
      echo "ssl_options.fail_if_no_peer_cert = false"
    fi
    [ -z "${BROKER_EXTRA_CONF:-}" ] || printf '%s\n' "$BROKER_EXTRA_CONF"
  } > "$BROKER_DIR/rabbitmq.conf"
  cat > "$BROKER_DIR/broker.env" <<ENV
AMQP_PORT=$AMQP_PORT
AMQP_TLS_PORT=${AMQP_TLS_PORT:-}
BROKER_NODE=$BROKER_NODE
BROKER_DIR=$BROKER_DIR
BROKER_WAIT_TIMEOUT=\${BROKER_WAIT_TIMEOUT:-${BROKER_WAIT_TIMEOUT:-60}}
BROKER_ERL_ARGS=$(printf %q "${BROKER_ERL_ARGS:-}")
ENV
  export AMQP_PORT BROKER_DIR BROKER_NODE
}

# broker_boot: starts the node and waits until it answers AMQP (the node must be prepared).
broker_boot() {
  local t0 i
  t0=$(date +%s%N)
  rm -f "$BROKER_DIR/pid"
  # setsid: a Ctrl-C in the terminal must reach the worker, not the broker (stopped on exit instead).
  broker_env setsid "$RABBITMQ_BIN/rabbitmq-server" >>"$BROKER_DIR/log/stdout.log" 2>&1 < /dev/null &
  echo $! > "$BROKER_DIR/wrapper.pid"
  for i in $(seq 600); do
    [ -s "$BROKER_DIR/pid" ] && break
    kill -0 "$(cat "$BROKER_DIR/wrapper.pid")" 2>/dev/null || { tail -n 20 "$BROKER_DIR/log/stdout.log" >&2; die "rabbitmq exited while booting"; }
    sleep 0.1
  done
  [ -s "$BROKER_DIR/pid" ] || die "rabbitmq wrote no pid file in 60 s (see $BROKER_DIR/log)"
  local wait_timeout=${BROKER_WAIT_TIMEOUT:-60}
  broker_env timeout $((wait_timeout + 30)) "$RABBITMQ_BIN/rabbitmqctl" wait --timeout "$wait_timeout" "$BROKER_DIR/pid" \
    >"$BROKER_DIR/log/wait.log" 2>&1 \
    || { tail -n 20 "$BROKER_DIR/log/stdout.log" >&2; die "rabbitmq did not become ready: $(tail -n 1 "$BROKER_DIR/log/wait.log")"; }
  wait_until 30 "rabbitmq answering AMQP on 127.0.0.1:$AMQP_PORT" amqp_answers "$AMQP_PORT"
  log "rabbitmq $BROKER_NODE ready on 127.0.0.1:$AMQP_PORT in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  export RABBIT_TRANSPORT_URL="rabbit://guest:guest@127.0.0.1:$AMQP_PORT/"
}

# amqp_answers PORT: the protocol header in, connection.start (frame type 1) out.
amqp_answers() {
  local first
  # (exec with a redirection of its own would silence this shell's stderr for good: hence the braces)
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'AMQP\x00\x00\x09\x01' >&3
  first=$(timeout 2 head -c 1 <&3 | od -An -tu1 | tr -d ' ')
  exec 3>&-
  [ "$first" = "1" ]
}

broker_start() {
  broker_prepare
  broker_boot
}

# broker_halt: stops the node, keeping its data directory.
broker_halt() {
  local pid i
  pid=$(cat "$BROKER_DIR/pid" 2>/dev/null || true)
  # A paused node (SIGSTOP) would never answer the shutdown: thaw it first. The timeout is for a
  # node that answers nothing all the same; it is killed below.
  [ -n "$pid" ] && kill -CONT "$pid" 2>/dev/null || true
  broker_env timeout 120 "$RABBITMQ_BIN/rabbitmqctl" shutdown >/dev/null 2>&1 || true
  for i in $(seq 100); do
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  local wrapper
  wrapper=$(cat "$BROKER_DIR/wrapper.pid" 2>/dev/null || true)
  [ -n "$wrapper" ] && kill "$wrapper" 2>/dev/null || true
  return 0
}

# broker_stop: stops the node and removes its data directory (KEEP_BROKER_DIR=1 keeps it).
broker_stop() {
  [ -n "${BROKER_DIR:-}" ] && [ -d "$BROKER_DIR" ] || return 0
  broker_halt
  [ "${KEEP_BROKER_DIR:-0}" = 1 ] || rm -rf "$BROKER_DIR"
}

broker_load_env() {
  [ -n "${BROKER_DIR:-}" ] && [ -f "$BROKER_DIR/broker.env" ] || die "BROKER_DIR must name a prepared broker directory"
  # shellcheck disable=SC1091
  source "$BROKER_DIR/broker.env"
  export AMQP_PORT BROKER_DIR BROKER_NODE
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  command=${1:-}
  shift || true
  case "$command" in
    stop) broker_load_env; broker_halt; log "rabbitmq $BROKER_NODE stopped" ;;
    start) broker_load_env; broker_boot ;;
    restart) broker_load_env; broker_halt; broker_boot ;;
    ctl) broker_load_env; broker_ctl "$@" ;;
    pause) broker_load_env; kill -STOP "$(cat "$BROKER_DIR/pid")" ;;
    resume) broker_load_env; kill -CONT "$(cat "$BROKER_DIR/pid")" ;;
    add-vhost)
      broker_load_env
      broker_ctl add_vhost "$1" >/dev/null
      broker_ctl set_permissions -p "$1" guest '.*' '.*' '.*' >/dev/null ;;
    *) echo "usage: $0 stop|start|restart|pause|resume|ctl ARGS...|add-vhost NAME (with BROKER_DIR set)" >&2; exit 2 ;;
  esac
fi
