#!/usr/bin/env bash
# Runs the Swift suites (unit and integration, against the real servers deploy/test.sh starts)
# under ThreadSanitizer, then under AddressSanitizer. Each sanitizer builds into its own
# .build-thread / .build-address (a first build takes about as long as the plain one).
#
#   deploy/sanitize.sh                 both
#   deploy/sanitize.sh thread          one of them
#
# A sanitizer's report fails its run (ThreadSanitizer exits 66 at the end, AddressSanitizer
# aborts at the first report) and the log above shows its stacks. AddressSanitizer runs with
# detect_leaks=0: LeakSanitizer reports XCTest's own harness allocations.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
export PATH=/opt/swift/usr/bin:$PATH

sanitizers=("$@")
[ ${#sanitizers[@]} -gt 0 ] || sanitizers=(thread address)
for sanitizer in "${sanitizers[@]}"; do
  case $sanitizer in
    thread|address) ;;
    *) die "unknown sanitizer '$sanitizer' (thread or address)" ;;
  esac
done

failed=()
for sanitizer in "${sanitizers[@]}"; do
  log "the Swift suites under the $sanitizer sanitizer"
  if SANITIZER=$sanitizer TEST_ONLY=swift "$REPO_ROOT/deploy/test.sh"; then
    log "$sanitizer sanitizer: clean"
  else
    log "$sanitizer sanitizer: FAILED (its reports are above)"
    failed+=("$sanitizer")
  fi
done
[ ${#failed[@]} -eq 0 ] || die "sanitizers with reports: ${failed[*]}"
log "every sanitizer clean: ${sanitizers[*]}"
