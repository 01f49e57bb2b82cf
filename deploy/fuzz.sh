#!/usr/bin/env bash
# Fuzzes every parser of hostile bytes with libFuzzer (Swift's -sanitize=fuzzer, with
# AddressSanitizer): the oslo envelope and JSON, transport URLs, image references, checksum files,
# INI and netrc files, HTTP dates, Content-Range (Sources/ImageWorkerFuzz/FuzzHarness.swift says
# what each must keep).
#
#   deploy/fuzz.sh              every harness for 60 s
#   deploy/fuzz.sh 600 json     one harness for 10 minutes
#
# It builds image-worker-fuzz into .build-fuzz (a first build takes several minutes), then runs
# each harness for SECONDS on its corpus, Tests/Fuzz/corpus/<harness>: inputs that reach new code
# are added there (commit them: the corpus is the regression test every `deploy/test.sh` replays).
# Each harness prints its executions per second and corpus size. With FUZZ_SCRATCH_CORPUS=DIR
# (deploy/test.sh does this) new inputs go to DIR/<harness> instead, and the repository's corpus
# is only read, and FUZZ_SEED=N makes a run repeatable (deploy/test.sh uses 1, so that a test run
# does not fail at random on an input a longer run has not found yet). A crash or a broken invariant
# fails the script; libFuzzer saves the input as .build-fuzz/findings/<harness>/crash-*, and
#   .build/debug/image-worker-fuzz replay <harness> <that file>
# replays it without the fuzzing runtime.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
export PATH=/opt/swift/usr/bin:$PATH
require_swift
ensure_packages "${BUILD_PACKAGES[@]}" libssl-dev

seconds=${1:-60}
[[ $seconds =~ ^[0-9]+$ ]] || die "SECONDS must be a whole number, not '$seconds'"
shift $(( $# > 0 ? 1 : 0 ))

cd "$REPO_ROOT"
log "building image-worker-fuzz with libFuzzer and AddressSanitizer into .build-fuzz"
# lld: gold crashes (an internal error in format_file_lineno) when it reports a link error here.
swift build --product image-worker-fuzz --scratch-path .build-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -use-ld=lld 2>&1 \
  | { grep -Ev "unhandled|CMakeLists" || true; } || die "the fuzzing build failed (see above)"
binary=$(swift build --product image-worker-fuzz --scratch-path .build-fuzz --show-bin-path)/image-worker-fuzz

harnesses=("$@")
for harness in "${harnesses[@]}"; do
  [ -d "Tests/Fuzz/corpus/$harness" ] || die "no harness '$harness' (one folder per harness in Tests/Fuzz/corpus)"
done
if [ ${#harnesses[@]} -eq 0 ]; then
  # One corpus folder per harness (FuzzHarness.all).
  mapfile -t harnesses < <(cd Tests/Fuzz/corpus && ls -d -- */ | tr -d /)
fi
[ ${#harnesses[@]} -gt 0 ] || die "no harness found"

failed=()
summary=()
for harness in "${harnesses[@]}"; do
  corpus=Tests/Fuzz/corpus/$harness
  findings=.build-fuzz/findings/$harness
  mkdir -p "$corpus" "$findings"
  # libFuzzer adds new inputs to the first folder it is given.
  folders=("$corpus")
  if [ -n "${FUZZ_SCRATCH_CORPUS:-}" ]; then
    mkdir -p "$FUZZ_SCRATCH_CORPUS/$harness"
    folders=("$FUZZ_SCRATCH_CORPUS/$harness" "$corpus")
  fi
  log "fuzzing $harness for $seconds s (corpus $corpus)"
  output=$(mktemp)
  # rss_limit_mb: a parser that grows without bound is a finding; ASan's leak check would report
  # the Swift runtime's own caches, so it is off.
  seed=()
  [ -n "${FUZZ_SEED:-}" ] && seed=(-seed="$FUZZ_SEED")
  if FUZZ_HARNESS=$harness ASAN_OPTIONS=detect_leaks=0 "$binary" "${seed[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 \
       -max_len=65536 -timeout=10 -print_final_stats=1 -artifact_prefix="$findings/" "${folders[@]}" >"$output" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$output")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$output")
    size=$(find "${folders[@]}" -type f | wc -l)
    summary+=("$(printf '%-16s %10s runs %8s exec/s %6s inputs in the corpus' "$harness" "$runs" "$rate" "$size")")
  else
    tail -40 "$output"
    failed+=("$harness")
  fi
  rm -f "$output"
done

log "summary ($seconds s each):"
for line in "${summary[@]}"; do printf '  %s\n' "$line"; done
[ ${#failed[@]} -eq 0 ] || die "harnesses with findings: ${failed[*]} (inputs in .build-fuzz/findings/)"
