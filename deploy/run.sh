#!/usr/bin/env bash
# Runs the worker on this machine with local defaults:
#   - installs what is missing (librabbitmq, and RabbitMQ unless a transport URL is given),
#   - builds the release binary,
#   - starts a private RabbitMQ node on loopback unless TRANSPORT_URL (or --transport-url) names a broker,
#   - runs `image-worker serve` in the foreground; Ctrl-C stops the worker and then the broker.
# --cluster: quorum queues (rabbit_quorum_queue = true) and, unless a transport URL is given, a private
#   three-node RabbitMQ cluster on loopback instead of the single node (deploy/lib/rabbitmq_cluster.sh;
#   .run/rabbitmq-cluster/, the worker gets all three nodes in its transport_url). Stop or freeze one
#   node from another terminal to watch the worker carry on through the other two:
#     CLUSTER_DIR=.run/rabbitmq-cluster deploy/lib/rabbitmq_cluster.sh stop 2|start 2|pause 2|resume 2
#
# State lives in .run/ at the top of the repository (override with IMAGE_WORKER_STATE_DIR):
#   .run/image-worker.conf   the configuration it runs with (pass it to `image-worker call/cast/events`)
#   .run/images/<node>/      fetched images          .run/sources/   a folder file:// images may come from
# Extra arguments go to `image-worker serve` (e.g. --set image_worker.max_concurrent_downloads=5).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$REPO_ROOT/deploy/lib/rabbitmq.sh"
source "$REPO_ROOT/deploy/lib/rabbitmq_cluster.sh"

TRANSPORT_URL=${TRANSPORT_URL:-}
CLUSTER=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --transport-url) TRANSPORT_URL=$2; shift 2 ;;
    --transport-url=*) TRANSPORT_URL=${1#*=}; shift ;;
    --cluster) CLUSTER=1; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

STATE_DIR=${IMAGE_WORKER_STATE_DIR:-$REPO_ROOT/.run}
mkdir -p "$STATE_DIR/images" "$STATE_DIR/sources"

require_swift
# qemu-utils: qemu-img converts qcow2, vmdk, vhd, vhdx and vdi images to raw ([DEFAULT] force_raw_images).
ensure_packages "${BUILD_PACKAGES[@]}" qemu-utils
cd "$REPO_ROOT"
log "building the release binary (the first build takes a few minutes)"
swift build -c release --product image-worker
BIN=$REPO_ROOT/.build/release/image-worker

if [ -z "$TRANSPORT_URL" ] && [ "$CLUSTER" = 1 ]; then
  ensure_packages rabbitmq-server
  CLUSTER_DIR=$STATE_DIR/rabbitmq-cluster
  rm -rf "$CLUSTER_DIR"
  # The trap first: a cluster_start that fails half-way must not leave nodes running.
  trap 'cluster_stop; release_port_claims' EXIT
  cluster_start
  TRANSPORT_URL=$CLUSTER_TRANSPORT_URL
elif [ -z "$TRANSPORT_URL" ]; then
  # Installed before the ports are chosen: on a host where installing starts the system's own
  # broker, 5672 is then seen as taken and a free port is picked instead.
  ensure_packages rabbitmq-server
  export AMQP_PORT=${AMQP_PORT:-}
  if [ -z "$AMQP_PORT" ] && claim_port 5672 && claim_port 25672; then AMQP_PORT=5672; fi
  BROKER_DIR=$STATE_DIR/rabbitmq
  rm -rf "$BROKER_DIR"
  broker_start
  trap 'broker_stop; release_port_claims' EXIT
  TRANSPORT_URL=$RABBIT_TRANSPORT_URL
fi

cat > "$STATE_DIR/image-worker.conf" <<CONF
# Written by deploy/run.sh; edit deploy/run.sh's defaults or pass --set to change them.
[DEFAULT]
transport_url = $TRANSPORT_URL
host = $(hostname -s 2>/dev/null || echo local)

[conductor]
file_url_allowed_paths = $STATE_DIR/sources,/var/lib/ironic

[pxe]
instance_master_path = $STATE_DIR/master_images

[image_worker]
images_dir = $STATE_DIR/images
# The default egress policy refuses loopback (image references come from tenants); a local try-out
# keeps it open so that an image server on this machine (http://127.0.0.1:…) can be used.
disallowed_networks = 169.254.0.0/16, fe80::/10, 0.0.0.0/8, ::/128, 224.0.0.0/4, ff00::/8, fd00:ec2::254/128
CONF
if [ "$CLUSTER" = 1 ]; then
  # A queue that outlives the loss of one node: a quorum queue, replicated on all three.
  cat >> "$STATE_DIR/image-worker.conf" <<CONF

[oslo_messaging_rabbit]
rabbit_quorum_queue = true
CONF
fi

log "worker configuration: $STATE_DIR/image-worker.conf"
log "put images in $STATE_DIR/sources; they land in $STATE_DIR/images/<node_uuid>/"
log "send a task from another terminal:  $BIN call --config-file $STATE_DIR/image-worker.conf fetch_image '{...}'"
# Not exec: the EXIT trap must stop the broker after the worker has gone.
"$BIN" serve --config-file "$STATE_DIR/image-worker.conf" "${args[@]}" &
worker=$!
trap 'kill -TERM $worker 2>/dev/null || true' INT TERM
status=0
wait $worker || status=$?
# A signal interrupts the first wait; wait again for the worker's own exit.
if kill -0 $worker 2>/dev/null; then wait $worker || status=$?; fi
exit $status
