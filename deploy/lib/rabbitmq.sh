#!/usr/bin/env bash
# A private RabbitMQ node on loopback, owned by one run: its own data directory, ports and node name.
#
# As a library (source it):  broker_start / broker_stop, using and exporting
#   BROKER_DIR   data directory (made if unset)      AMQP_PORT      AMQP port (a free one if unset)
#   AMQP_TLS_PORT  with BROKER_TLS_DIR holding ca.pem, server.pem, server.key: also a TLS listener
# and exporting RABBIT_TRANSPORT_URL (rabbit://guest:guest@127.0.0.1:PORT/) once the node is ready.
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
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" "$@"
}

broker_ctl() { broker_env "$RABBITMQ_BIN/rabbitmqctl" "$@"; }

# broker_prepare: directory, ports and configuration (kept in $BROKER_DIR/broker.env for later commands).
broker_prepare() {
  ensure_packages rabbitmq-server
  if [ -z "${AMQP_PORT:-}" ]; then
    local port
    for port in $(seq 5680 5780); do
      if claim_port "$port" && claim_port $((port + 20000)); then AMQP_PORT=$port; break; fi
    done
    [ -n "${AMQP_PORT:-}" ] || die "no free AMQP port in 5680..5780"
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
  } > "$BROKER_DIR/rabbitmq.conf"
  cat > "$BROKER_DIR/broker.env" <<ENV
AMQP_PORT=$AMQP_PORT
AMQP_TLS_PORT=${AMQP_TLS_PORT:-}
BROKER_NODE=$BROKER_NODE
BROKER_DIR=$BROKER_DIR
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
  broker_env timeout 90 "$RABBITMQ_BIN/rabbitmqctl" wait --timeout 60 "$BROKER_DIR/pid" >"$BROKER_DIR/log/wait.log" 2>&1 \
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
  broker_ctl shutdown >/dev/null 2>&1 || true
  local pid i
  pid=$(cat "$BROKER_DIR/pid" 2>/dev/null || true)
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
