#!/usr/bin/env python3
"""Compares each Swift test's duration in loaded runs with its duration run alone.

    compare_durations.py ALONE_LOG LOADED_LOG [LOADED_LOG...] [--limit SECONDS]

ALONE_LOG is the output of `deploy/test.sh` on a quiet machine (its Swift phase runs one test at a
time); each LOADED_LOG the output of a run on a busy machine. Prints every
test whose loaded duration exceeds its own by more than the limit (default 5 s), the largest
excess of each run, and the Swift phase's wall time; exits 1 when any test is over the limit.
"""
import re
import sys

LINE = re.compile(r'^✔ Test "(.*)" passed after ([0-9.]+) seconds')
PHASE = re.compile(r"phase done in (\d+) s: Swift test suites")


def durations(path):
    found = {}
    phase = None
    with open(path, errors="replace") as log:
        for line in log:
            match = LINE.match(line)
            if match:
                found[match.group(1)] = max(found.get(match.group(1), 0.0), float(match.group(2)))
            match = PHASE.search(line)
            if match:
                phase = int(match.group(1))
    return found, phase


def main():
    arguments = sys.argv[1:]
    limit = 5.0
    if "--limit" in arguments:
        index = arguments.index("--limit")
        limit = float(arguments[index + 1])
        del arguments[index:index + 2]
    alone, alone_phase = durations(arguments[0])
    print("alone: %d tests, Swift phase %s s" % (len(alone), alone_phase))
    failed = False
    for path in arguments[1:]:
        loaded, phase = durations(path)
        excess = sorted(((loaded[name] - alone[name], name) for name in loaded if name in alone), reverse=True)
        missing = sorted(set(alone) - set(loaded))
        print("%s: %d tests, Swift phase %s s, largest excess %+.2f s (%s)" % (
            path, len(loaded), phase, excess[0][0] if excess else 0, excess[0][1] if excess else "-"))
        for over, name in excess:
            if over > limit:
                failed = True
                print("  over the limit: %+.2f s  %s (alone %.2f s, loaded %.2f s)" % (over, name, alone[name], loaded[name]))
        if missing:
            failed = True
            print("  not passed in this run: %s" % ", ".join(missing[:10]))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
