#!/usr/bin/env bash
# Benchmarks image-worker beside the tools and services operators run today, on this machine, in
# one run, and prints one table (medians over RUNS runs, min–max, peak RSS, the ratio to
# image-worker, and whether each target of issue 6 holds). Not a test: it prints figures.
#
#   deploy/bench.sh [RUNS]          RUNS per row, default 10
#   BENCH_ONLY=http,e2e deploy/bench.sh    some groups only: hash, http, formats, glance, file, e2e, scale, cluster
#   OPENSSL_ia32cap=:~0x20000000 deploy/bench.sh   as on a CPU without SHA extensions (libcrypto,
#                                   BoringSSL and Python's hashlib all honour the mask)
#
# It installs what is missing, builds the release binaries, and starts its own nginx, glance-api
# (sqlite, file store, no Keystone), a private RabbitMQ node and (for the cluster group) a private
# three-node RabbitMQ cluster on free loopback ports, with Debian's
# python3-ironic as the peer (Ironic's images.fetch and image cache, run by /usr/bin/python3).
# Data: random 64 MiB and 1 GiB images (page cache warm: these are CPU and memory figures).
# The measuring is in deploy/bench/driver.py; the Python peers in deploy/bench/peers.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$REPO_ROOT/deploy/lib/rabbitmq.sh"
source "$REPO_ROOT/deploy/lib/rabbitmq_cluster.sh"
source "$REPO_ROOT/deploy/lib/tls.sh"
source "$REPO_ROOT/deploy/lib/nginx.sh"
source "$REPO_ROOT/deploy/lib/glance.sh"

RUNS=${1:-10}
require_swift
ensure_packages "${BUILD_PACKAGES[@]}" rabbitmq-server nginx curl time openssl glance-api \
  python3-ironic python3-oslo.messaging python3-pika python3-requests qemu-utils zstd
cd "$REPO_ROOT"
log "building the release binaries (the first build takes a few minutes)"
swift build -c release --product image-worker >/dev/null
swift build -c release --product image-worker-bench >/dev/null
BIN_DIR=$(swift build -c release --show-bin-path)

WORK=$(mktemp -d /tmp/image-worker-bench.XXXXXX)
cleanup() {
  local status=$?
  stop_recorded_processes "$WORK/pids"
  broker_stop
  cluster_stop
  nginx_stop "$WORK/nginx"
  glance_stop "$WORK/glance"
  rm -rf "$WORK"
  release_port_claims
  exit $status
}
trap cleanup EXIT INT TERM

BROKER_DIR=$WORK/rabbitmq
broker_start
if [ -z "${BENCH_ONLY:-}" ] || [[ ",$BENCH_ONLY," == *",cluster,"* ]]; then
  CLUSTER_DIR=$WORK/cluster cluster_start
  export BENCH_CLUSTER_URL=$CLUSTER_TRANSPORT_URL BENCH_CLUSTER_CTL="$REPO_ROOT/deploy/lib/rabbitmq_cluster.sh" CLUSTER_DIR
fi
make_test_certificates "$WORK/tls"
HTTP_PORT=$(free_port 18700 18799) || die "no free port for nginx"
nginx_start "$WORK/nginx" "$HTTP_PORT" "$(free_port 18800 18899)" "$WORK/tls"
GLANCE_PORT=$(free_port 19400 19499) || die "no free port for glance-api"
glance_start "$WORK/glance" "$GLANCE_PORT"
GLANCE_URL="http://127.0.0.1:$GLANCE_PORT"

log "generating the images"
DATA=$WORK/nginx/data/images
mkdir -p "$WORK/sources" "$WORK/out"
head -c 64M /dev/urandom > "$DATA/img-64M.bin"
head -c 1G /dev/urandom > "$DATA/img-1024M.bin"
head -c 256K /dev/urandom > "$DATA/img-256K.bin"
cp "$DATA/img-1024M.bin" "$WORK/sources/img-1024M.bin"
# The formats group: a 1 GiB disk with 512 MiB of data (1 MiB of random bytes every 2 MiB), as a
# qcow2 and as zstd-compressed raw.
/usr/bin/python3 - "$WORK/disk-1G.raw" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as disk:
    disk.truncate(1 << 30)
    for offset in range(0, 1 << 30, 2 << 20):
        disk.seek(offset)
        disk.write(os.urandom(1 << 20))
PY
qemu-img convert -f raw -O qcow2 "$WORK/disk-1G.raw" "$DATA/disk-1G.qcow2"
zstd -q -T0 "$WORK/disk-1G.raw" -o "$DATA/disk-1G.raw.zst"
rm "$WORK/disk-1G.raw"
GLANCE_IMAGE=$(curl -sf -X POST -H 'Content-Type: application/json' \
  -d '{"name": "bench-1G", "disk_format": "raw", "container_format": "bare", "visibility": "public"}' \
  "$GLANCE_URL/v2/images" | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
curl -sf -X PUT -H 'Content-Type: application/octet-stream' -T "$DATA/img-1024M.bin" \
  "$GLANCE_URL/v2/images/$GLANCE_IMAGE/file"
# The images just written are dirty pages: written back now, not during the first measurements.
sync

cat > "$WORK/ironic.conf" <<CONF
[DEFAULT]
webserver_verify_ca = True
webserver_connection_timeout = 60
[conductor]
file_url_allowed_paths = $WORK/sources
[glance]
auth_type = none
endpoint_override = $GLANCE_URL
num_retries = 0
[oslo_messaging_notifications]
driver = messagingv2
CONF

export BENCH_BIN=$BIN_DIR/image-worker BENCH_TOOL=$BIN_DIR/image-worker-bench BENCH_WORK=$WORK BENCH_RUNS=$RUNS \
  BENCH_HTTP_URL="http://127.0.0.1:$HTTP_PORT" BENCH_HTTP_ROOT="$WORK/nginx/data" BENCH_GLANCE_URL=$GLANCE_URL \
  BENCH_GLANCE_IMAGE=$GLANCE_IMAGE BENCH_AMQP_URL=$RABBIT_TRANSPORT_URL BENCH_BROKER_CTL="$REPO_ROOT/deploy/lib/rabbitmq.sh" \
  BENCH_IRONIC_CONF="$WORK/ironic.conf" BROKER_DIR
/usr/bin/python3 "$REPO_ROOT/deploy/bench/driver.py"
