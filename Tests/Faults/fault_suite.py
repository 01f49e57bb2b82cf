"""The fault-injection suite (issue 5), run by deploy/test.sh after the interop suites:

1. kill:   300 tasks over 3 worker processes while 5 random SIGKILLs hit them (each killed worker is
           restarted): every task ends with exactly one distinct outcome, as a real oslo listener
           sees it, and no partial file exists.
2. broker: the broker is stopped and started under load, with quorum queues: no task is lost.
3. fuzz:   2,000 hostile bodies (random bytes, truncated JSON, wrong types, huge strings, deep
           nesting, wrong content types) interleaved with valid tasks: the worker stays up, every
           valid task completes, every invalid one gets an error event (and the malformed ones are
           dead-lettered).

Each scenario prints its figures; the script exits 1 if any check fails. Run with Debian's
/usr/bin/python3 and the environment deploy/test.sh sets (see Tests/Interop/harness.py).
Usage: fault_suite.py [kill] [broker] [fuzz]   (all three by default)
"""
import hashlib
import json
import os
import signal
import queue
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Interop"))
import harness  # noqa: E402

OUTCOMES = ("baremetal.image.fetch.end", "baremetal.image.fetch.error")
failures = []


def check(condition, message):
    print("    %s %s" % ("ok  " if condition else "FAIL", message))
    if not condition:
        failures.append(message)


def figures(name, **values):
    print("  %s: %s" % (name, ", ".join("%s %s" % (key.replace("_", " "), value) for key, value in values.items())))


def http_images(count, size, folder="slow"):
    """Images on one of nginx's rate-limited paths (`slow`: 16 MiB/s a connection, `slow2m`:
    2 MiB/s), so that kills land in the middle of downloads."""
    images = []
    for index in range(count):
        data = os.urandom(size)
        path = "%s/faults-%s-%d.img" % (folder, uuid.uuid4().hex[:6], index)
        harness.publish_http(path, data)
        images.append(("%s/%s" % (harness.HTTP_URL, path), hashlib.sha256(data).hexdigest(), path))
    return images


def outcome_report(events, nodes):
    """What the listener saw for `nodes`: outcomes grouped by node and by task."""
    by_node = {node: [] for node in nodes}
    for event in events.all_matching(lambda e: e["event_type"] in OUTCOMES, settle=2):
        node = harness.data_of(event).get("node_uuid")
        if node in by_node:
            by_node[node].append(event)
    lost = [node for node, seen in by_node.items() if not seen]
    conflicting = duplicates = failed = 0
    for seen in by_node.values():
        distinct = {e["metadata"]["message_id"]: e for e in seen}
        tasks = {harness.data_of(e)["task_id"] for e in seen}
        if len(distinct) > 1 or len(tasks) > 1:
            conflicting += 1
        duplicates += len(seen) - len(distinct)
        failed += sum(1 for e in distinct.values() if e["event_type"] != OUTCOMES[0])
    return lost, conflicting, duplicates, failed


def pump(events, done, timeout):
    """Moves arriving events into `events.seen` until `done()` or the timeout; returns `done()`."""
    deadline = time.time() + timeout
    while not done() and time.time() < deadline:
        try:
            events.seen.append(events.events.get(timeout=0.2))
        except queue.Empty:
            pass
    return done()


def wait_for_outcomes(events, nodes, timeout):
    """Waits until every node has an outcome event; returns the nodes still without one."""
    remaining = set(nodes)
    checked = 0

    def done():
        nonlocal checked
        for event in events.seen[checked:]:
            if event["event_type"] in OUTCOMES:
                remaining.discard(harness.data_of(event).get("node_uuid"))
        checked = len(events.seen)
        return not remaining

    pump(events, done, timeout)
    return remaining


def settled_depth(vhost, timeout=30):
    """The work queue's (ready, unacknowledged) once it is empty, or as it is after `timeout`:
    duplicates redelivered after their outcome was seen are still answered from the journal."""
    deadline = time.time() + timeout
    while True:
        depth = harness.queue_depths(vhost).get(harness.TOPIC)
        if depth == (0, 0) or time.time() > deadline:
            return depth
        time.sleep(0.5)


def show_logs(workers, lines=60):
    """The end of each worker's log, when a check failed (CI keeps nothing else)."""
    for worker in workers:
        text = worker.log_text().splitlines()
        print("    --- last %d lines of %s's log ---" % (lines, worker.host))
        for line in text[-lines:]:
            print("    " + line[:300])


def partial_files(images_dir, expected):
    """Staging files anywhere, and final files whose bytes are not the image's."""
    staging = sum(1 for _, _, names in os.walk(images_dir) for name in names if name.startswith(".staging-"))
    wrong = 0
    for node, digest in expected.items():
        path = os.path.join(images_dir, node, "disk")
        if os.path.exists(path):
            with open(path, "rb") as disk:
                wrong += hashlib.sha256(disk.read()).hexdigest() != digest
    return staging, wrong


def tear_down(events, conductor, workers, shared, images):
    """Stops what a scenario started and removes its files."""
    for closer in (events and events.stop, conductor and conductor.close):
        if closer:
            closer()
    for worker in workers:
        worker.cleanup()
    shutil.rmtree(shared, ignore_errors=True)
    for _, _, path in images:
        os.remove(os.path.join(harness.HTTP_ROOT, path))


def scenario_kill(sources):
    print("\n[kill] 300 tasks, 3 workers, 5 random SIGKILLs (each killed worker restarted)")
    vhost = harness.new_vhost("faults-kill")
    shared = tempfile.mkdtemp(prefix="iw-faults-kill-")
    rng = random.Random()
    images = http_images(4, 4 << 20)  # a quarter of a second each at 16 MiB/s
    local = os.path.join(sources, "kill-local.img")
    with open(local, "wb") as out:
        out.write(os.urandom(1 << 20))
    with open(local, "rb") as source:
        local_digest = hashlib.sha256(source.read()).hexdigest()
    settings = {"image_worker": {"max_concurrent_downloads": "2"}, "pxe": {"instance_master_path": ""}}
    workers = [harness.Worker(vhost, allowed_paths=[sources], host="kill-%d" % i, extra=settings, state_dir=shared) for i in range(3)]
    conductor = events = None
    restarts = 0
    kill_statuses = []  # what each killed process died of
    try:
        for worker in workers:
            worker.start()
        conductor = harness.Conductor(vhost)
        events = harness.EventListener(vhost)
        expected = {}
        started = time.time()
        for index in range(300):
            node = str(uuid.uuid4())
            if index % 3 == 2:
                source, digest = "file://" + local, local_digest
            else:
                source, digest, _ = images[index % len(images)]
            expected[node] = digest
            conductor.cast("fetch_image", node_uuid=node, instance_info={"image_source": source, "image_checksum": digest})

        def killer():
            nonlocal restarts
            for _ in range(5):
                time.sleep(rng.uniform(0.5, 1.5))
                victim = rng.choice(workers)
                kill_statuses.append(victim.kill())
                victim.start()
                restarts += 1

        thread = threading.Thread(target=killer)
        thread.start()
        thread.join()
        remaining = wait_for_outcomes(events, expected, timeout=240)
        elapsed = time.time() - started
        lost, conflicting, duplicates, failed = outcome_report(events, expected)
        staging, wrong = partial_files(os.path.join(shared, "images"), expected)
        depth = settled_depth(vhost)
        interrupted = {harness.data_of(e)["node_uuid"] for e in events.seen
                       if e["event_type"] == "baremetal.image.fetch.start" and harness.data_of(e)["attempt"] > 1}
        figures("figures", tasks_sent=len(expected), completed=len(expected) - len(lost) - failed, failed=failed,
                duplicates=duplicates, conflicting=conflicting, lost=len(lost), partial_files=staging + wrong,
                restarts=restarts, tasks_interrupted_and_run_again=len(interrupted), seconds="%.1f" % elapsed)
        check(len(interrupted) > 0, "the kills interrupted running tasks (%d ran again)" % len(interrupted))
        check(not remaining and not lost, "every task has an outcome (lost %d)" % len(lost))
        check(conflicting == 0, "exactly one distinct outcome per task (conflicting %d)" % conflicting)
        check(failed == 0, "every task succeeded (failed %d)" % failed)
        check(staging == 0 and wrong == 0, "no partial file: %d staging, %d wrong" % (staging, wrong))
        check(kill_statuses == [-signal.SIGKILL] * 5, "5 workers died of SIGKILL mid-load and were restarted: %s" % kill_statuses)
        check(depth == (0, 0), "the work queue is empty and nothing is unacknowledged: %s" % (depth,))
        for worker in workers:
            check(worker.stop() == 0, "worker %s exits 0 on SIGTERM" % worker.host)
        if failures:
            show_logs(workers)
    finally:
        tear_down(events, conductor, workers, shared, images)


def scenario_broker(sources):
    print("\n[broker] the broker stopped and started under load, quorum queues")
    vhost = harness.new_vhost("faults-broker")
    shared = tempfile.mkdtemp(prefix="iw-faults-broker-")
    images = http_images(2, 4 << 20)  # 200 tasks: about 12 s of downloading at 16 MiB/s over 4 slots
    quorum = {"rabbit_quorum_queue": True}
    settings = {"image_worker": {"max_concurrent_downloads": "2"}, "pxe": {"instance_master_path": ""}}
    workers = [harness.Worker(vhost, allowed_paths=[sources], host="broker-%d" % i, extra=settings, url_options=quorum,
                              state_dir=shared) for i in range(2)]
    conductor = events = None
    try:
        for worker in workers:
            worker.start()
        conductor = harness.Conductor(vhost, url_options=quorum)
        events = harness.EventListener(vhost, url_options=quorum)
        expected = {}
        started = time.time()
        for index in range(200):
            node = str(uuid.uuid4())
            source, digest, _ = images[index % len(images)]
            expected[node] = digest
            conductor.cast("fetch_image", node_uuid=node, instance_info={"image_source": source, "image_checksum": digest})
        finished = lambda: len({harness.data_of(e)["node_uuid"] for e in events.seen if e["event_type"] in OUTCOMES})
        pump(events, lambda: finished() >= 20, timeout=60)  # in full swing
        before_stop = finished()
        down = time.time()
        harness.broker_ctl("stop")
        time.sleep(2)
        harness.broker_ctl("start")
        downtime = time.time() - down
        remaining = wait_for_outcomes(events, expected, timeout=300)
        elapsed = time.time() - started
        lost, conflicting, duplicates, failed = outcome_report(events, expected)
        staging, wrong = partial_files(os.path.join(shared, "images"), expected)
        depth = settled_depth(vhost)
        redelivered = {harness.data_of(e)["node_uuid"] for e in events.seen
                       if e["event_type"] == "baremetal.image.fetch.start" and harness.data_of(e)["attempt"] > 1}
        after_stop = {harness.data_of(e)["node_uuid"] for e in events.seen
                      if e["event_type"] in OUTCOMES and event_time(e) > down}
        figures("figures", tasks_sent=len(expected), done_before_stop=before_stop, ended_after_the_stop=len(after_stop),
                ran_again=len(redelivered),
                completed=len(expected) - len(lost) - failed,
                failed=failed, duplicates=duplicates, conflicting=conflicting, lost=len(lost), partial_files=staging + wrong,
                broker_down_seconds="%.1f" % downtime, seconds="%.1f" % elapsed)
        check(20 <= before_stop and len(after_stop) > 0,
              "the broker went down under load (%d of %d done before, %d ended after)" % (before_stop, len(expected), len(after_stop)))
        check(not remaining and not lost, "no task lost (lost %d)" % len(lost))
        check(conflicting == 0 and failed == 0, "one successful outcome per task (conflicting %d, failed %d)" % (conflicting, failed))
        check(staging == 0 and wrong == 0, "no partial file")
        check(depth == (0, 0), "the work queue is empty: %s" % (depth,))
        for worker in workers:
            check(worker.process.poll() is None, "worker %s survived the broker restart" % worker.host)
            check(worker.stop() == 0, "worker %s exits 0 on SIGTERM" % worker.host)
        if failures:
            show_logs(workers)
    finally:
        tear_down(events, conductor, workers, shared, images)


def event_time(event):
    """When the worker made an event (oslo's metadata timestamp, UTC), in seconds since the epoch."""
    import calendar
    stamp = event["metadata"]["timestamp"]
    whole, _, fraction = stamp.partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%d %H:%M:%S")) + float("0." + (fraction or "0"))


def hostile_bodies(rng, count):
    """(body, content type, kind) for `count` messages no valid request looks like."""
    valid = {"method": "fetch_image", "version": "1.0", "args": {"node_uuid": str(uuid.uuid4()), "instance_info": {"image_source": "file:///x"}},
             "_unique_id": "u"}
    text = harness.envelope(valid)

    def wrong_type():
        message = json.loads(json.dumps(valid))
        message["_unique_id"] = uuid.uuid4().hex
        field, value = rng.choice([("method", 42), ("args", [1, 2]), ("args", "x"), ("version", 1.5), ("method", None),
                                   ("args", {"node_uuid": {"a": 1}}), ("args", {"node_uuid": str(uuid.uuid4()), "instance_info": 7}),
                                   ("_context_request_id", ["r"]), ("_timeout", "soon")])
        message[field] = value
        if rng.random() < 0.3:
            return json.dumps({"oslo.version": "2.0", "oslo.message": message}).encode()  # not a string inside
        return harness.envelope(message)

    def huge():
        message = dict(valid, _unique_id=uuid.uuid4().hex)
        big = "A" * rng.randint(1 << 20, 3 << 20)
        if rng.random() < 0.5:
            message["method"] = big
        else:
            message["args"] = {"node_uuid": str(uuid.uuid4()), "instance_info": {"image_source": "file:///" + big}}
        return harness.envelope(message)

    def deep():
        depth = rng.randint(2_000, 200_000)
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
        return (opener * depth + "1" + closer * depth).encode()

    makers = [
        ("random bytes", lambda: os.urandom(rng.randint(0, 2048)), "application/json"),
        ("truncated JSON", lambda: text[:rng.randint(0, len(text) - 2)], "application/json"),
        ("wrong types", wrong_type, "application/json"),
        ("huge strings", huge, "application/json"),
        ("deep nesting", deep, "application/json"),
        ("wrong content type", lambda: harness.envelope(dict(valid, _unique_id=uuid.uuid4().hex)),
         rng.choice(["text/plain", "application/xml", "application/octet-stream"])),
        ("not an object", lambda: rng.choice([b"[]", b'"x"', b"42", b"null", b"true"]), "application/json"),
        ("invalid UTF-8", lambda: b'{"oslo.version": "2.0", "oslo.message": "\xff\xfe"}', "application/json"),
        ("unknown or private method", lambda: harness.envelope(dict(valid, method=rng.choice(["nope", "_fetch_image", "__init__"]),
                                                                     _unique_id=uuid.uuid4().hex)), "application/json"),
    ]
    bodies = []
    for index in range(count):
        kind, make, content_type = makers[index % len(makers)]
        bodies.append((make(), content_type, kind))
    rng.shuffle(bodies)
    return bodies


def scenario_fuzz(sources):
    print("\n[fuzz] 2,000 hostile bodies interleaved with 100 valid tasks, dead-letter exchange configured")
    seed = int(os.environ.get("IMAGE_WORKER_FUZZ_SEED", random.SystemRandom().randrange(1 << 32)))
    rng = random.Random(seed)
    vhost = harness.new_vhost("faults-fuzz")
    dead_letters = "ironic.image_worker.dead_letter"
    worker = harness.Worker(vhost, allowed_paths=[sources], host="fuzz",
                            extra={"image_worker": {"dead_letter_exchange": dead_letters, "max_concurrent_downloads": "8"}})
    events = None
    try:
        worker.start()
        events = harness.EventListener(vhost)
        local = os.path.join(sources, "fuzz.img")
        with open(local, "wb") as out:
            out.write(os.urandom(50_000))
        hostile = hostile_bodies(rng, 2000)
        valid_nodes = set()
        messages = [(body, content_type) for body, content_type, _ in hostile]
        for _ in range(100):
            node = str(uuid.uuid4())
            valid_nodes.add(node)
            body = harness.envelope({"method": "fetch_image", "version": "1.0", "_unique_id": uuid.uuid4().hex,
                                     "_context_request_id": "req-%s" % uuid.uuid4(),
                                     "args": {"node_uuid": node, "instance_info": {"image_source": "file://" + local}}})
            messages.insert(rng.randrange(len(messages) + 1), (body, "application/json"))
        started = time.time()
        harness.raw_publish_many(vhost, messages)
        remaining = wait_for_outcomes(events, valid_nodes, timeout=240)
        # Then every error event for the hostile ones.
        hostile_error = lambda e: e["event_type"] == OUTCOMES[1] and harness.data_of(e).get("node_uuid") not in valid_nodes
        counted = {"events": 0, "errors": 0}

        def all_errors_seen():
            for event in events.seen[counted["events"]:]:
                counted["errors"] += hostile_error(event)
            counted["events"] = len(events.seen)
            return counted["errors"] >= len(hostile)

        pump(events, all_errors_seen, timeout=180)
        errors = events.all_matching(hostile_error, settle=2)
        elapsed = time.time() - started
        ends = {harness.data_of(e)["node_uuid"] for e in events.seen if e["event_type"] == OUTCOMES[0]}
        dead_lettered = harness.queue_depths(vhost).get(dead_letters, (0, 0))[0]
        codes = {}
        for event in errors:
            code = harness.data_of(event)["error"]["code"]
            codes[code] = codes.get(code, 0) + 1
        alive = worker.process.poll() is None
        figures("figures", seed=seed, hostile_bodies=len(hostile), error_events=len(errors), dead_lettered=dead_lettered,
                valid_tasks=len(valid_nodes), valid_completed=len(valid_nodes & ends), worker_alive=alive, seconds="%.1f" % elapsed)
        figures("error codes", **codes)
        check(alive, "the worker stayed up")
        check(not remaining and valid_nodes <= ends, "every valid task completed (%d of %d)" % (len(valid_nodes & ends), len(valid_nodes)))
        check(len(errors) == len(hostile), "one error event per hostile body (%d for %d)" % (len(errors), len(hostile)))
        check(set(codes) <= {"InvalidParameterValue", "NoSuchMethod", "UnsupportedVersion", "MissingParameterValue",
                             "InvalidImageRef", "ImageRefValidationFailed"}, "only input-error codes: %s" % sorted(codes))
        check(0 < dead_lettered <= len(hostile), "malformed bodies are dead-lettered (%d)" % dead_lettered)
        check(harness.queue_depths(vhost).get(harness.TOPIC) == (0, 0), "the work queue is empty")
        check(worker.stop() == 0, "the worker exits 0 on SIGTERM")
    finally:
        if events:
            events.stop()
        worker.cleanup()


def main():
    harness.require_environment()
    harness.require_image_servers()
    chosen = sys.argv[1:] or ["kill", "broker", "fuzz"]
    sources = tempfile.mkdtemp(prefix="iw-faults-src-")
    try:
        for name in chosen:
            {"kill": scenario_kill, "broker": scenario_broker, "fuzz": scenario_fuzz}[name](sources)
    finally:
        shutil.rmtree(sources, ignore_errors=True)
    print("\nfault suite: %s" % ("all checks passed" if not failures else "%d check(s) failed:\n  %s" % (len(failures), "\n  ".join(failures))))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
