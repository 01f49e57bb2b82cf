#!/usr/bin/env bash
# Benchmarks image-worker beside the tools operators use today, on this machine, in one run.
# Not a test: it prints figures. Usage: deploy/bench.sh [RUNS] (default 10)
#
# Measured now: downloading 1 GiB (and 64 MiB) from a local nginx with sha256 verification:
#   image-worker fetch --output (the whole process)  vs  curl -s -o  and  curl | sha256sum
# Each row: median wall time over RUNS, min–max, peak RSS; runs of the commands are interleaved
# so that drift hits them alike; the page cache is warm (these are CPU and memory figures).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$REPO_ROOT/deploy/lib/tls.sh"
source "$REPO_ROOT/deploy/lib/nginx.sh"

RUNS=${1:-10}
require_swift
ensure_packages pkg-config librabbitmq-dev nginx curl time openssl
cd "$REPO_ROOT"
log "building the release binary"
swift build -c release --product image-worker >/dev/null
BIN=$REPO_ROOT/.build/release/image-worker

WORK=$(mktemp -d /tmp/image-worker-bench.XXXXXX)
cleanup() { nginx_stop "$WORK/nginx"; rm -rf "$WORK"; }
trap cleanup EXIT
make_test_certificates "$WORK/tls"
HTTP_PORT=$(free_port 18700 18799)
nginx_start "$WORK/nginx" "$HTTP_PORT" "$(free_port 18800 18899)" "$WORK/tls"
DATA=$WORK/nginx/data/images
for size in 64 1024; do
  head -c "${size}M" /dev/urandom > "$DATA/img-${size}M.bin"
  sha256sum "$DATA/img-${size}M.bin" | cut -d' ' -f1 > "$DATA/img-${size}M.sha256"
done
OUT=$WORK/out
mkdir -p "$OUT"

# measure NAME COMMAND...: one run; appends "seconds kilobytes" to $WORK/NAME.times
measure() {
  local name=$1
  shift
  rm -f "$OUT"/*
  sync
  /usr/bin/time -f "%e %M" -o "$WORK/time.one" "$@" >/dev/null 2>"$WORK/stderr.one" \
    || { cat "$WORK/stderr.one" >&2; die "$name failed"; }
  cat "$WORK/time.one" >> "$WORK/$name.times"
}

# report NAME LABEL [BASELINE]: median, min–max, peak RSS and the ratio to BASELINE's median
report() {
  python3 - "$WORK/$1.times" "$2" "${3:+$WORK/$3.times}" <<'PY'
import statistics, sys
def load(path):
    rows = [line.split() for line in open(path) if line.strip()]
    return [float(r[0]) for r in rows], [int(r[1]) for r in rows]
times, rss = load(sys.argv[1])
line = "%-46s %8.0f ms  %6.0f–%-6.0f ms  %7.1f MiB" % (sys.argv[2], statistics.median(times) * 1000, min(times) * 1000, max(times) * 1000, max(rss) / 1024)
if len(sys.argv) > 3 and sys.argv[3]:
    base, _ = load(sys.argv[3])
    line += "   %.2f× faster" % (statistics.median(base) / statistics.median(times))
print(line)
PY
}

for size in 64 1024; do
  url="http://127.0.0.1:$HTTP_PORT/images/img-${size}M.bin"
  sum=$(cat "$DATA/img-${size}M.sha256")
  log "HTTP ${size} MiB: $RUNS runs of each command, interleaved"
  for _ in $(seq "$RUNS"); do
    measure "iw-$size" "$BIN" fetch "$url" --checksum "$sum" --output "$OUT/iw.img" --set image_worker.images_dir="$WORK/images"
    measure "curl-$size" curl -s -o "$OUT/curl.img" "$url"
    measure "curlsha-$size" bash -c "curl -s '$url' | sha256sum > '$OUT/sum'"
  done
done

echo
printf '%-46s %11s  %15s  %11s\n' "HTTP download (warm cache, loopback nginx)" "median" "min–max" "peak RSS"
for size in 64 1024; do
  report "curl-$size" "curl -s -o, ${size} MiB (no verification)"
  report "curlsha-$size" "curl | sha256sum, ${size} MiB"
  report "iw-$size" "image-worker fetch, ${size} MiB, sha256 verified" "curl-$size"
done
peak=$(sort -k2 -n "$WORK/iw-1024.times" | tail -n1 | awk '{print $2}')
echo
if [ "$peak" -lt $((64 * 1024)) ]; then
  echo "target: peak RSS under 64 MiB while downloading 1 GiB — held ($((peak / 1024)) MiB)"
else
  echo "target: peak RSS under 64 MiB while downloading 1 GiB — NOT held ($((peak / 1024)) MiB)"
fi
