#!/usr/bin/env bash
# Runs every test of image-worker on this machine:
#   1. installs the Debian packages the tests need (RabbitMQ, librabbitmq, oslo.messaging, …),
#   2. builds the package and its tests,
#   3. starts, on free loopback ports, a private RabbitMQ node (plain and TLS), nginx (HTTP and
#      HTTPS with a CA made by openssl), glance-api (sqlite, file store, no Keystone) and a
#      forward proxy (tinyproxy), all stopped again on exit,
#   4. runs the Swift suites (unit and integration), the format inspector beside oslo.utils' own on
#      images made by qemu-img and friends (Tests/Formats), the fuzz harnesses briefly, and the
#      Python interop suites, which drive the real worker binary with the real oslo.messaging
#      client and notification listener,
#   5. runs the fault-injection suites (Tests/Faults: SIGKILLs, a broker restart and fuzzed bodies
#      under load; the cluster suite, when CLUSTER_SCENARIOS asks for it: a private three-node
#      RabbitMQ cluster whose nodes are stopped, frozen and restarted under load; both print their
#      figures) and checks every manifest in deploy/ (Tests/Deploy),
#   6. checks the README's quick start: deploy/run.sh, the first task as written, Ctrl-C.
# Under CI=true an integration suite that cannot reach its server fails instead of skipping.
# Each phase's wall time is printed when it ends.
#
# For work on one part (not for CI):
#   TEST_ONLY=swift,formats,fuzz,interop,faults,deploy,quickstart   run only these phases (servers start anyway)
#   FUZZ_SECONDS=5             how long the fuzz phase runs each harness under libFuzzer
#   SANITIZER=address|thread   build into .build-SANITIZER with the sanitizer and run the Swift suites
#                              and the interop suites' worker binary from there
#   SWIFT_TEST_ARGS="..."      more arguments for `swift test` (--filter X)
#   SWIFT_TEST_PARALLEL=1      run the Swift tests in parallel (by default one at a time; see below)
#   INTEROP_TESTS="test_cache.CacheTests.test_x"   the interop phase runs only these (unittest names)
#   CLUSTER_SCENARIOS="spread frozen"   the fault phase runs these scenarios of the cluster suite
#                              (and not fault_suite.py): spread, consumer, leader, frozen, rolling, hosts
#                              (the cluster suite runs only when asked)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$REPO_ROOT/deploy/lib/rabbitmq.sh"
source "$REPO_ROOT/deploy/lib/rabbitmq_cluster.sh"
source "$REPO_ROOT/deploy/lib/tls.sh"
source "$REPO_ROOT/deploy/lib/nginx.sh"
source "$REPO_ROOT/deploy/lib/glance.sh"
source "$REPO_ROOT/deploy/lib/tinyproxy.sh"

require_swift
ensure_packages "${BUILD_PACKAGES[@]}" rabbitmq-server openssl curl nginx glance-api tinyproxy \
  python3-oslo.messaging python3-pika python3-ironic python3-yaml \
  qemu-utils gdisk xorriso dosfstools python3-venv zstd xz-utils bzip2
cd "$REPO_ROOT"

PHASES=swift,formats,fuzz,interop,faults,deploy,quickstart
TEST_ONLY=${TEST_ONLY:-$PHASES}
for wanted in ${TEST_ONLY//,/ }; do
  [[ ",$PHASES," == *",$wanted,"* ]] || die "TEST_ONLY: '$wanted' is not one of $PHASES"
done
wants() { [[ ",$TEST_ONLY," == *",$1,"* ]]; }
BUILD_FLAGS=()
if [ -n "${SANITIZER:-}" ]; then
  BUILD_FLAGS=(--sanitize="$SANITIZER" --scratch-path "$REPO_ROOT/.build-$SANITIZER")
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
fi
BIN_DIR=$(swift build "${BUILD_FLAGS[@]}" --show-bin-path)

PHASE=""
PHASE_STARTED=0
# phase NAME: prints how long the running phase took, then starts NAME ("" ends the last one).
phase() {
  local now
  now=$(date +%s)
  [ -n "$PHASE" ] && log "phase done in $((now - PHASE_STARTED)) s: $PHASE"
  PHASE=$1
  PHASE_STARTED=$now
  [ -z "$PHASE" ] || log "$PHASE"
}

WORK_DIR=$(mktemp -d /tmp/image-worker-test.XXXXXX)
cleanup() {
  local status=$?
  stop_recorded_processes "$WORK_DIR/pids"
  broker_stop
  cluster_stop
  nginx_stop "$WORK_DIR/nginx"
  glance_stop "$WORK_DIR/glance"
  proxy_stop "$WORK_DIR/proxy"
  rm -rf "$WORK_DIR"
  release_port_claims
  exit $status
}
trap cleanup EXIT INT TERM

phase "building (debug, with tests${SANITIZER:+, $SANITIZER sanitizer})"
swift build --build-tests "${BUILD_FLAGS[@]}"

phase "starting the servers"

make_test_certificates "$WORK_DIR/tls"
BROKER_TLS_DIR=$WORK_DIR/tls
AMQP_TLS_PORT=$(free_port 5781 5880) || die "no free port for the TLS listener"
broker_start
export IMAGE_WORKER_TEST_AMQP_URL=$RABBIT_TRANSPORT_URL
# TLS: certificates name localhost (librabbitmq checks DNS names only)
export IMAGE_WORKER_TEST_AMQPS_URL="amqps://guest:guest@localhost:$AMQP_TLS_PORT/"
export IMAGE_WORKER_TEST_TLS_DIR=$BROKER_TLS_DIR

HTTP_PORT=$(free_port 18100 18199) || die "no free port for nginx"
HTTPS_PORT=$(free_port 18500 18599) || die "no free port for nginx's TLS listener"
export NGINX_TEST_PASSWORD=image-pass-$RANDOM
CLIENT_TLS_PORT=$(free_port 18600 18649) || die "no free port for nginx's client-certificate listener"
nginx_start "$WORK_DIR/nginx" "$HTTP_PORT" "$HTTPS_PORT" "$WORK_DIR/tls" "$CLIENT_TLS_PORT"
PROXY_PORT=$(free_port 18650 18699) || die "no free port for the proxy"
proxy_start "$WORK_DIR/proxy" "$PROXY_PORT"
export IMAGE_WORKER_TEST_HTTP_URL="http://127.0.0.1:$HTTP_PORT"
export IMAGE_WORKER_TEST_HTTPS_URL="https://localhost:$HTTPS_PORT"
export IMAGE_WORKER_TEST_HTTP_ROOT="$WORK_DIR/nginx/data"
export IMAGE_WORKER_TEST_HTTP_PASSWORD=$NGINX_TEST_PASSWORD
export IMAGE_WORKER_TEST_NGINX_ACCESS_LOG="$WORK_DIR/nginx/logs/access.log"
export IMAGE_WORKER_TEST_CLIENT_TLS_URL="https://localhost:$CLIENT_TLS_PORT"
export IMAGE_WORKER_TEST_HTTP_PROXY="http://127.0.0.1:$PROXY_PORT"
export IMAGE_WORKER_TEST_PROXY_LOG="$WORK_DIR/proxy/proxy.log"

GLANCE_PORT=$(free_port 19300 19399) || die "no free port for glance-api"
glance_start "$WORK_DIR/glance" "$GLANCE_PORT"
export IMAGE_WORKER_TEST_GLANCE_URL="http://127.0.0.1:$GLANCE_PORT"
export IMAGE_WORKER_TEST_GLANCE_STORE="$WORK_DIR/glance/images"
export IMAGE_WORKER_TEST_BROKER_CTL=$REPO_ROOT/deploy/lib/rabbitmq.sh
export IMAGE_WORKER_BIN=$BIN_DIR/image-worker
export IMAGE_WORKER_PID_DIR=$WORK_DIR/pids
export BROKER_DIR

if wants swift; then
  phase "Swift test suites"
  # One test at a time, so that each test's reported duration is its own, on a busy machine too
  # (issue 15). Run in parallel on two cores while a release build ran beside them, every test
  # that started in the first seconds reported about 4 s more than it takes alone (0.00 s tests
  # included): the CPU of the two hundred others, started with it. One at a time, the largest
  # difference was 0.3 s, for about 10 s more wall time.
  SERIAL_FLAG=(--no-parallel)
  [ "${SWIFT_TEST_PARALLEL:-0}" = 1 ] && SERIAL_FLAG=()
  # shellcheck disable=SC2086
  swift test --skip-build "${BUILD_FLAGS[@]}" "${SERIAL_FLAG[@]}" ${SWIFT_TEST_ARGS:-}
fi

if wants formats; then
  phase "format inspector against oslo.utils' own (differential; fixtures made by qemu-img, qemu-io, sgdisk, xorriso)"
  # oslo.utils >= 8 has the inspector (Debian's 6.0 does not): from PyPI, in a venv kept in .build,
  # pinned to the version Sources/ImageFormats ports.
  OSLO_UTILS=10.2.0
  OSLO_VENV=$REPO_ROOT/.build/oslo-utils-venv
  if [ "$("$OSLO_VENV/bin/python" -c 'import oslo_utils.version as v; print(v.version_info.release_string())' 2>/dev/null)" != "$OSLO_UTILS" ]; then
    python3 -m venv --clear "$OSLO_VENV"
    "$OSLO_VENV/bin/pip" install --quiet "oslo.utils==$OSLO_UTILS" cryptography
  fi
  "$OSLO_VENV/bin/python" Tests/Formats/differential.py "$BIN_DIR/image-worker"
fi

if wants fuzz; then
  phase "fuzz: the corpus replayed through every parser's harness, then each under libFuzzer for ${FUZZ_SECONDS:-5} s"
  harnesses=$("$BIN_DIR/image-worker-fuzz" list)
  for harness in $harnesses; do
    "$BIN_DIR/image-worker-fuzz" replay "$harness" "Tests/Fuzz/corpus/$harness"
  done
  # New inputs go to a scratch folder: a test run leaves the repository's corpus as it is. The
  # first fuzzing build (.build-fuzz) takes about ten minutes on two cores.
  FUZZ_SEED=1 FUZZ_SCRATCH_CORPUS=$WORK_DIR/fuzz-corpus "$REPO_ROOT/deploy/fuzz.sh" "${FUZZ_SECONDS:-5}"
fi

if wants interop; then
  phase "interop suites (real oslo.messaging client and listener, /usr/bin/python3)"
  # The operations and broker-loss suites restart the shared broker, so they run last.
  # shellcheck disable=SC2086  # INTEROP_TESTS is a list of names
  (cd Tests/Interop && /usr/bin/python3 -W ignore::DeprecationWarning -m unittest -v ${INTEROP_TESTS:-\
    test_fetch_interop test_bad_input test_egress test_formats test_cache test_connections test_topology test_tls test_operations test_broker_loss})
fi

if wants faults && [ -z "${CLUSTER_SCENARIOS:-}" ]; then
  phase "fault-injection suite: SIGKILLs under load, the broker restarted under load, fuzzed bodies"
  (cd Tests/Faults && /usr/bin/python3 -W ignore::DeprecationWarning fault_suite.py)
fi
# The cluster suite is not part of the default run: its two-host scenarios can see the window
# AMQP 0-9-1 leaves open (a second outcome event from a second host, about 1 task in 1,000; see
# the README's Delivery section and issue 17). CLUSTER_SCENARIOS runs it.
if wants faults && [ -n "${CLUSTER_SCENARIOS:-}" ]; then
  phase "cluster suite: a private three-node RabbitMQ cluster, quorum queues, nodes stopped, frozen and restarted under load"
  CLUSTER_DIR=$WORK_DIR/cluster cluster_start
  export IMAGE_WORKER_TEST_CLUSTER_URL=$CLUSTER_TRANSPORT_URL
  export IMAGE_WORKER_TEST_CLUSTER_CTL=$REPO_ROOT/deploy/lib/rabbitmq_cluster.sh
  export CLUSTER_DIR
  # shellcheck disable=SC2086
  (cd Tests/Faults && /usr/bin/python3 -W ignore::DeprecationWarning cluster_suite.py ${CLUSTER_SCENARIOS:-})
  # Nothing after this phase needs the cluster: its three nodes stop now, not at exit.
  cluster_stop
fi

if wants deploy; then
  phase "deploy/ manifests: parsed and checked; systemd units verified; RabbitMQ definitions imported into a scratch vhost"
  (cd Tests/Deploy && /usr/bin/python3 -m unittest -v test_manifests)
fi

if wants quickstart; then
  phase "the README's quick start: deploy/run.sh, the first task, Ctrl-C (builds the release binary)"
  Tests/RunScript/test_run_script.sh
fi

phase ""
if [ "$TEST_ONLY" = "$PHASES" ]; then log "all tests passed"; else log "passed: $TEST_ONLY"; fi
