#!/usr/bin/env bash
# The README's quick start, checked: deploy/run.sh starts a worker (and its own broker), the
# README's "Your first task" commands, run as they are written, fetch an image, and Ctrl-C stops
# the worker and the broker with exit status 0.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../deploy/lib/common.sh"
cd "$REPO_ROOT"

STATE=$(mktemp -d /tmp/image-worker-runsh.XXXXXX)
PORT=$(free_port 5900 5990) || die "no free port for run.sh's broker"
LOG=$STATE/run.log
runner=""
finish() {
  local status=$?
  if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then kill -TERM -- "-$runner" 2>/dev/null || true; sleep 2; fi
  [ $status -eq 0 ] || { echo "--- run.sh log"; tail -n 40 "$LOG" 2>/dev/null; }
  rm -rf "$STATE"
  release_port_claims
  exit $status
}
trap finish EXIT

# The release build first, without a time limit (minutes on a fresh clone, many more on a busy
# machine): the wait below is then for the worker alone (run.sh's own build finds nothing to do).
log "run.sh: building the release binary"
swift build -c release --product image-worker >"$STATE/build.log" 2>&1 || { tail -n 40 "$STATE/build.log"; die "the release build failed"; }

# Its own session, as a terminal's foreground job would be: Ctrl-C goes to the whole group.
IMAGE_WORKER_STATE_DIR=$STATE/state AMQP_PORT=$PORT setsid deploy/run.sh >"$LOG" 2>&1 &
runner=$!
for _ in $(seq 300); do
  grep -q "consuming requests" "$LOG" && break
  kill -0 "$runner" 2>/dev/null || die "deploy/run.sh exited before the worker was consuming"
  sleep 1
done
grep -q "consuming requests" "$LOG" || die "the worker was not consuming within 5 minutes of starting run.sh"
log "run.sh: worker consuming"

# The README's first-task block, with .run/ pointing at this test's state folder.
block=$(awk '/^### Your first task/{found=1} found && /^```sh/{inside=1; next} inside && /^```/{exit} inside' README.md)
[ -n "$block" ] || die "README.md has no sh block under '### Your first task'"
block=$(STATE="$STATE/state" python3 -c '
import os, sys
text = sys.stdin.read().replace("\x27\"$PWD\"\x27/.run/", os.environ["STATE"] + "/")
print(text.replace(".run/", os.environ["STATE"] + "/"))' <<<"$block")
output=$(bash -euo pipefail -c "$block")
echo "$output" | grep -q '"transfer": "hardlink"' || die "the first task did not hard-link the image: $output"
disk=$STATE/state/images/1be26c0b-03f2-4d2e-ae87-c02d7f33c123/disk
[ "$(stat -c %i "$disk")" = "$(stat -c %i "$STATE/state/sources/demo.img")" ] || die "$disk does not share the source's inode"
log "run.sh: the README's first task fetched $disk"

kill -INT -- "-$runner"
for _ in $(seq 60); do kill -0 "$runner" 2>/dev/null || break; sleep 0.5; done
kill -0 "$runner" 2>/dev/null && die "deploy/run.sh still runs 30 s after Ctrl-C"
status=0
wait "$runner" || status=$?
[ $status -eq 0 ] || die "deploy/run.sh exited with $status after Ctrl-C"
grep -q "\[ImageWorkerCLI\] stopped" "$LOG" || die "the worker did not log a clean stop"
port_is_free "$PORT" || die "run.sh's broker still listens on $PORT after Ctrl-C"
runner=""
log "run.sh: Ctrl-C stopped the worker and the broker, exit 0"
