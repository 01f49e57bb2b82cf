# shellcheck shell=bash
# Shared helpers for deploy/*.sh: PATH, logging, package installation, free ports.
# Source it; it defines functions and sets PATH, nothing else.

# glance-api drags in python3-swiftclient, whose /usr/bin/swift would shadow the toolchain.
export PATH=/opt/swift/usr/bin:$PATH
export DEBIAN_FRONTEND=noninteractive
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export REPO_ROOT

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# What building the worker needs from Debian: librabbitmq (CRabbitMQ, through pkg-config; it brings
# libssl-dev's libcrypto) and the four decompression libraries (CCompression).
BUILD_PACKAGES=(pkg-config librabbitmq-dev libzstd-dev zlib1g-dev liblzma-dev libbz2-dev)

# ensure_packages PACKAGE...: installs, with apt, those of the Debian packages that are missing.
ensure_packages() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "${missing[*]} must be installed; run as root or install sudo (apt-get install ${missing[*]})"
    sudo=sudo
  fi
  log "installing ${missing[*]}"
  $sudo apt-get -o DPkg::Lock::Timeout=300 update -qq
  $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# port_is_free PORT: nothing listens on 127.0.0.1:PORT.
port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Ports are claimed before a server binds them, so that two runs on one machine (two clones
# testing at once) never pick the same one: a claim is a folder named after the port holding the
# claiming script's pid, and a claim whose script is gone is taken over.
PORT_CLAIMS=${TMPDIR:-/tmp}/image-worker-port-claims

# claim_port PORT: succeeds when PORT is free and now claimed by this script ($$).
claim_port() {
  local port=$1 owner fresh
  port_is_free "$port" || return 1
  mkdir -p "$PORT_CLAIMS"
  # The claim appears whole, pid inside, in one rename: a reader never sees it without its owner.
  fresh=$PORT_CLAIMS/.new.$port.$$
  mkdir -p "$fresh" && echo "$$" > "$fresh/pid"
  if mv -T "$fresh" "$PORT_CLAIMS/$port" 2>/dev/null; then return 0; fi
  rm -rf "$fresh"
  owner=$(cat "$PORT_CLAIMS/$port/pid" 2>/dev/null || true)
  [ "$owner" = "$$" ] && return 0
  [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null && return 1
  # The claimant is gone: take the claim over (one taker wins the rename), then claim afresh.
  mv -T "$PORT_CLAIMS/$port" "$PORT_CLAIMS/.stale.$port.$$" 2>/dev/null || return 1
  rm -rf "$PORT_CLAIMS/.stale.$port.$$"
  claim_port "$port"
}

# release_port_claims: gives back the ports this script claimed (at exit).
release_port_claims() {
  local claim
  for claim in "$PORT_CLAIMS"/*; do
    [ "$(cat "$claim/pid" 2>/dev/null)" = "$$" ] && rm -rf "$claim"
  done
  return 0
}

# free_port FIRST LAST: prints a free port in FIRST..LAST and claims it for this script.
free_port() {
  local port
  for port in $(seq "$1" "$2"); do
    if claim_port "$port"; then echo "$port"; return 0; fi
  done
  return 1
}

# require_swift: the toolchain is where the machine keeps it.
require_swift() {
  command -v swift >/dev/null || die "Swift is not at /opt/swift/usr/bin (see README: requirements)"
}

# wait_until SECONDS WHAT COMMAND...: runs COMMAND every 0.1 s until it succeeds; dies naming WHAT
# when it has not within SECONDS (a server that never answers fails the script, never passes).
wait_until() {
  local seconds=$1 what=$2 tries
  shift 2
  for tries in $(seq $((seconds * 10))); do
    "$@" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$what did not happen within $seconds s"
}

# stop_recorded_processes DIR: SIGTERM, then SIGKILL, to every process whose pid a *.pid file in DIR
# records (what the test and benchmark harnesses started), never matching by command line.
stop_recorded_processes() {
  local dir=$1 file pid
  [ -d "$dir" ] || return 0
  for file in "$dir"/*.pid; do
    [ -e "$file" ] || continue
    pid=$(cat "$file" 2>/dev/null || true)
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 1
  for file in "$dir"/*.pid; do
    [ -e "$file" ] || continue
    pid=$(cat "$file" 2>/dev/null || true)
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  done
}
