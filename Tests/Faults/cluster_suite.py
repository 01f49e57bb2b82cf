"""The cluster suite (issue 17), run by deploy/test.sh in the fault phase, on a private three-node
RabbitMQ cluster on loopback (deploy/lib/rabbitmq_cluster.sh) with quorum queues:

spread:    six workers started against the three-host URL: where each consumer connection landed
           (they must not all be on one node).
consumer:  the node holding the most consumer connections is stopped under load, then started.
leader:    the work queue's quorum leader is stopped under load, then started.
frozen:    a node holding a consumer connection is frozen (SIGSTOP) past the heartbeat threshold:
           the workers notice within 2 x heartbeat_timeout_threshold (printed), move, and nothing
           is lost when it thaws.
rolling:   every node stopped and started in turn under load.
hosts:     all four faults in a row on one load.

Every load scenario runs two workers with separate state folders (two hosts) under tasks cast at a
steady rate through all its faults, and prints tasks, completed, lost, outcome events published
(counted at the broker, from an audit queue bound to the notification topic; the casts the broker
accepted are counted the same way), conflicting outcomes, partial files and the time to recover;
each must have 0 lost, 0 conflicting, 0 partial, outcomes after every fault, and one outcome event
per task (per copy, when the client published a cast twice).

Run with Debian's /usr/bin/python3 and the environment deploy/test.sh sets, plus
IMAGE_WORKER_TEST_CLUSTER_URL and IMAGE_WORKER_TEST_CLUSTER_CTL.
Usage: cluster_suite.py [spread] [consumer] [leader] [frozen] [rolling] [hosts]   (all by default)
"""
import collections
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Interop"))
import harness  # noqa: E402
import fault_suite  # noqa: E402
from fault_suite import OUTCOMES, check, figures, http_images, outcome_report, pump, wait_for_outcomes, partial_files, show_logs  # noqa: E402

CLUSTER_URL = os.environ.get("IMAGE_WORKER_TEST_CLUSTER_URL")
CLUSTER_CTL = os.environ.get("IMAGE_WORKER_TEST_CLUSTER_CTL")
HEARTBEAT_THRESHOLD = 4  # seconds: short, so that a frozen node is noticed quickly
QUORUM = {"rabbit_quorum_queue": True}
# The load: 1 MiB images from nginx's 2 MiB/s path; two workers with two download slots each
# finish about 8 tasks a second, and tasks are cast at CAST_RATE a second from before the first
# fault until TAIL_SECONDS after the last (a fault that hits an idle cluster proves nothing),
# after a first CAST_BURST that keeps a backlog (prefetched requests) for a while.
IMAGE_SIZE = 1 << 20
CAST_RATE = 5
CAST_BURST = 60
TAIL_SECONDS = 5


def ctl(*args, timeout=240):
    return subprocess.run([CLUSTER_CTL, *args], check=True, capture_output=True, text=True, timeout=timeout).stdout


@functools.lru_cache(maxsize=None)
def ports():
    """The three AMQP ports (fixed for the cluster's life: asked once)."""
    return tuple(int(line) for line in ctl("ports").split())


@functools.lru_cache(maxsize=None)
def node_name(index):
    return ctl("node", str(index)).strip()


def node_index(name):
    for index in (1, 2, 3):
        if node_name(index) == name:
            return index
    raise AssertionError("no cluster node is named %s" % name)


def running_node():
    """A node that runs now (for rabbitmqctl queries)."""
    running = ctl("running").split()
    for index in (1, 2, 3):
        if node_name(index) in running:
            return index
    raise AssertionError("no cluster node runs")


def connections(vhost):
    """[(connection name, node name)] of the vhost's client connections, cluster-wide; a
    connection's node is the one whose AMQP port it came in on."""
    node_of_port = {port: node_name(index) for index, port in enumerate(ports(), start=1)}
    out = ctl("ctl", str(running_node()), "list_connections", "-q", "vhost", "port", "client_properties", "--formatter", "json")
    found = []
    for connection in json.loads(out):
        if connection.get("vhost") != vhost:
            continue
        properties = {entry[0]: entry[2] for entry in connection.get("client_properties", []) if len(entry) == 3}
        found.append((properties.get("connection_name", "?"), node_of_port.get(int(connection["port"]), "port %s" % connection["port"])))
    return found


def consumer_nodes(vhost, workers):
    """{worker host: node of its consumer connection}."""
    placed = {}
    for name, node in connections(vhost):
        for worker in workers:
            if name.startswith("image-worker:%s:" % worker.host) and name.endswith(":consumer"):
                placed[worker.host] = node
    return placed


def queue_depth(vhost, name):
    out = ctl("ctl", str(running_node()), "list_queues", "-q", "-p", vhost, "name", "messages_ready", "messages_unacknowledged")
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == name and parts[1].isdigit():
            return int(parts[1]), int(parts[2])
    return None


def pika_channel(vhost):
    """A pika channel on any running node."""
    import pika
    last = None
    for port in ports():
        try:
            connection = pika.BlockingConnection(pika.ConnectionParameters(
                host="127.0.0.1", port=port, virtual_host=vhost, credentials=pika.PlainCredentials("guest", "guest"),
                connection_attempts=1, socket_timeout=5))
            return connection, connection.channel()
        except Exception as error:  # a stopped node
            last = error
    raise AssertionError("no cluster node accepted a connection: %s" % last)


class AuditQueue:
    """A quorum queue bound to the exchange under `routing_keys`: a copy of every message the broker
    accepted there, counted once each, whatever consumers and listeners do."""

    def __init__(self, vhost, routing_keys):
        self.vhost = vhost
        self.name = "audit-%s" % uuid.uuid4().hex[:8]
        connection, channel = pika_channel(vhost)
        try:
            channel.queue_declare(self.name, durable=True, arguments={"x-queue-type": "quorum"})
            for key in routing_keys:
                channel.queue_bind(self.name, harness.EXCHANGE, routing_key=key)
        finally:
            connection.close()

    def messages(self):
        """Every oslo message in the queue (drained), unwrapped from its envelope."""
        found = []
        connection, channel = pika_channel(self.vhost)
        try:
            while True:
                method, _, body = channel.basic_get(self.name, auto_ack=True)
                if method is None:
                    break
                outer = json.loads(body)
                found.append(json.loads(outer["oslo.message"]) if "oslo.message" in outer else outer)
        finally:
            connection.close()
        return found


def outcome_audit(vhost):
    """Every outcome event the broker accepted on the notification topic."""
    return AuditQueue(vhost, ["%s.%s" % (harness.NOTIFICATION_TOPIC, priority) for priority in ("info", "error")])


def outcome_events(audit):
    """{node_uuid: [message_id, …]} of the outcome events in an outcome audit."""
    found = {}
    for message in audit.messages():
        if message.get("event_type") in OUTCOMES:
            found.setdefault(message["payload"]["ironic_object.data"].get("node_uuid"), []).append(message["message_id"])
    return found


def cast_copies(audit):
    """{node_uuid: copies} of the fetch_image casts in a cast audit (bound to the work topic). A
    client that loses its connection while it publishes publishes the cast again: the broker may
    then hold two copies of one request (one `_unique_id`)."""
    copies = collections.Counter()
    for message in audit.messages():
        if message.get("method") == "fetch_image":
            copies[message["args"]["node_uuid"]] += 1
    return copies


class Feeder(threading.Thread):
    """Casts fetch_image tasks through a real oslo.messaging client at `rate` a second until
    stopped (after a first `burst` at once, so that workers hold prefetched requests when a fault
    hits), so the load runs through every fault however long the faults take (tasks cast up
    front would be done before a slow restart ends). A cast that oslo cannot publish is counted,
    not expected: the cast audit says which tasks the broker accepted."""

    def __init__(self, conductor, images, rate, burst):
        super().__init__(daemon=True)
        self.conductor, self.images, self.rate, self.burst = conductor, images, rate, burst
        self.expected = {}
        self.refused = 0
        self.halt = threading.Event()

    def run(self):
        index = 0
        next_at = time.time()
        while not self.halt.is_set():
            node = str(uuid.uuid4())
            source, digest, _ = self.images[index % len(self.images)]
            index += 1
            try:
                self.conductor.cast("fetch_image", node_uuid=node, instance_info={"image_source": source, "image_checksum": digest})
                self.expected[node] = digest
            except Exception as error:
                self.refused += 1
                print("    (a cast failed: %s)" % error)
            if index > self.burst:
                # Never behind the clock: a cast that blocked through a fault is not made up for
                # by a burst afterwards.
                next_at = max(next_at + 1.0 / self.rate, time.time())
            self.halt.wait(max(0.0, next_at - time.time()))

    def stop(self):
        self.halt.set()
        self.join(timeout=120)
        return dict(self.expected)


def log_lines_about(workers, needles, limit=40):
    """The lines of every worker's log that mention a task's node or task id (why a task got two
    outcome events)."""
    for worker in workers:
        lines = [line for line in worker.log_text().splitlines() if any(needle in line for needle in needles)]
        print("    --- %s: %d lines about %s ---" % (worker.host, len(lines), needles[0]))
        for line in lines[-limit:]:
            print("    " + line[:400])


def start_workers(vhost, sources, count, prefix, state_dirs):
    settings = {"image_worker": {"max_concurrent_downloads": "2"}, "pxe": {"instance_master_path": ""},
                "oslo_messaging_rabbit": {"heartbeat_timeout_threshold": str(HEARTBEAT_THRESHOLD)}}
    workers = [harness.Worker(vhost, allowed_paths=[sources], host="%s-%d" % (prefix, index), extra=settings, url_options=QUORUM,
                              state_dir=state_dirs[index % len(state_dirs)]) for index in range(count)]
    for worker in workers:
        worker.start()
    return workers


def scenario_spread(sources):
    print("\n[spread] six workers against a three-host URL: where their consumer connections land")
    vhost = harness.new_vhost("cluster-spread")
    state = tempfile.mkdtemp(prefix="iw-cluster-spread-")
    workers = []
    try:
        workers = start_workers(vhost, sources, 6, "spread", [state])
        placed = consumer_nodes(vhost, workers)
        for worker in workers:
            print("    %s: consumer on %s" % (worker.host, placed.get(worker.host, "?")))
        nodes = set(placed.values())
        figures("figures", workers=len(workers), consumer_connections_found=len(placed), nodes_used=len(nodes))
        check(len(placed) == 6, "every worker's consumer connection is listed (%d)" % len(placed))
        # Each connection picks its first host at random: all six on one node has odds of 1 in 243.
        check(len(nodes) > 1, "the consumers are not all on one node: %s" % sorted(nodes))
    finally:
        for worker in workers:
            worker.cleanup()
        shutil.rmtree(state, ignore_errors=True)


def log_offsets(workers):
    return {worker.host: len(worker.log_text()) for worker in workers}


def restart_node(index, down_seconds=3):
    """Stops node `index`, leaves it down a while, starts it again; returns when it went down."""
    fault_at = time.time()
    ctl("stop", str(index))
    time.sleep(down_seconds)
    ctl("start", str(index))
    return fault_at


def fault_consumer_node(vhost, workers, log):
    placed = consumer_nodes(vhost, workers)
    busiest = max(set(placed.values()), key=lambda node: list(placed.values()).count(node))
    index = node_index(busiest)
    log("stopping node %d (%s), which holds %d of %d consumer connections" % (index, busiest, list(placed.values()).count(busiest), len(placed)))
    return {}, restart_node(index)


def fault_leader(vhost, workers, log):
    leader = ctl("leader", harness.TOPIC, vhost).strip()
    index = node_index(leader)
    log("stopping node %d (%s), the leader of %s" % (index, leader, harness.TOPIC))
    return {}, restart_node(index)


def fault_frozen(vhost, workers, log):
    """Freezes the node of a consumer connection; returns the detection time (a figure) and when
    the node froze."""
    placed = consumer_nodes(vhost, workers)
    frozen = sorted(placed.values())[0]
    index = node_index(frozen)
    affected = [worker for worker in workers if placed.get(worker.host) == frozen]
    offsets = log_offsets(workers)
    log("freezing node %d (%s), holding the consumer connections of %s" % (index, frozen, ", ".join(w.host for w in affected)))
    frozen_at = time.time()
    ctl("pause", str(index))
    detected = {}
    try:
        deadline = frozen_at + 4 * HEARTBEAT_THRESHOLD
        while len(detected) < len(affected) and time.time() < deadline:
            for worker in affected:
                if worker.host not in detected and re.search(r"lost the connection to the broker.*consumer|consumer.*lost the connection to the broker",
                                                             worker.log_text()[offsets[worker.host]:]):
                    detected[worker.host] = time.time() - frozen_at
            time.sleep(0.1)
        time.sleep(2)  # the workers work on elsewhere meanwhile
    finally:
        ctl("resume", str(index))
    slowest = max(detected.values()) if len(detected) == len(affected) else None
    log("thawed node %d after %.1f s; detection: %s" % (index, time.time() - frozen_at,
                                                        ", ".join("%s %.1f s" % item for item in sorted(detected.items())) or "none"))
    check(slowest is not None, "every consumer connection on the frozen node was given up (%d of %d)" % (len(detected), len(affected)))
    if slowest is not None:
        check(slowest <= 2 * HEARTBEAT_THRESHOLD,
              "the frozen node was noticed within 2 x heartbeat_timeout_threshold: %.1f s <= %d s" % (slowest, 2 * HEARTBEAT_THRESHOLD))
    return {"frozen_node_detected_seconds": "%.1f" % slowest if slowest is not None else "never"}, frozen_at


def fault_rolling(vhost, workers, log):
    fault_at = time.time()
    for index in (1, 2, 3):
        log("rolling restart: node %d" % index)
        restart_node(index, down_seconds=2)
    return {}, fault_at


def run_load(name, description, sources, faults):
    """Two workers on two hosts; tasks cast at a steady rate from before the first fault until
    after the last; `faults` applied one after the other."""
    print("\n[%s] %s" % (name, description))
    vhost = harness.new_vhost("cluster-" + name)
    hosts = [tempfile.mkdtemp(prefix="iw-cluster-%s-host%d-" % (name, index)) for index in range(2)]
    images = http_images(2, IMAGE_SIZE, folder="slow2m")
    workers, conductor, events, feeder = [], None, None, None
    started = time.time()

    def log(text):
        print("    %5.1f s  %s" % (time.time() - started, text))

    try:
        workers = start_workers(vhost, sources, 2, "%s-host" % name, hosts)
        audit = outcome_audit(vhost)
        casts = AuditQueue(vhost, [harness.TOPIC])
        conductor = harness.Conductor(vhost, url_options=QUORUM)
        events = harness.EventListener(vhost, url_options=QUORUM)
        feeder = Feeder(conductor, images, CAST_RATE, CAST_BURST)
        feeder.start()
        done = lambda: len({harness.data_of(e)["node_uuid"] for e in events.seen if e["event_type"] in OUTCOMES})
        pump(events, lambda: done() >= 10, timeout=60)
        extra = {}
        fault_times = []
        fault_ends = []
        for fault in faults:
            figures_of_fault, fault_at = fault(vhost, workers, log)
            extra.update(figures_of_fault)
            fault_times.append(fault_at)
            fault_ends.append(time.time())
            pump(events, lambda: False, timeout=TAIL_SECONDS)  # the load goes on after each fault
        expected = feeder.stop()
        log("%d tasks cast (%d casts failed at the client)" % (len(expected), feeder.refused))
        remaining = wait_for_outcomes(events, expected, timeout=300)
        # The time to recover from a fault: the longest the cluster went without an outcome event
        # from the fault's start until the next fault (or the last outcome). Tasks were being cast
        # all along, so a window without any outcome is a worker that did not recover in time.
        outcome_times = sorted(fault_suite.event_time(e) for e in events.seen if e["event_type"] in OUTCOMES)
        recovery = []
        for index, fault_at in enumerate(fault_times):
            until = fault_times[index + 1] if index + 1 < len(fault_times) else outcome_times[-1]
            window = [fault_at] + [when for when in outcome_times if fault_at < when <= until]
            recovery.append(max(later - earlier for earlier, later in zip(window, window[1:])) if len(window) > 1 else None)
        # Work resumed: outcomes in the TAIL_SECONDS after each fault ended (the node started
        # again, thawed), not only during it from a worker the fault did not touch.
        resumed = [sum(1 for when in outcome_times if ended < when <= ended + TAIL_SECONDS) for ended in fault_ends]
        staging = wrong = 0
        for host in hosts:
            # A node's folder exists only on the host that ran it; partial_files skips the others.
            host_staging, host_wrong = partial_files(os.path.join(host, "images"), expected)
            staging += host_staging
            wrong += host_wrong
        time.sleep(2)  # redeliveries answered from a journal settle
        published = outcome_events(audit)
        copies = cast_copies(casts)
        accepted = sum(1 for node in expected if copies[node])
        per_task = [len(published.get(node, [])) for node in expected]
        # A redelivery of a finished request does not publish its event again, but a copy the
        # client published again is a duplicate, answered with its whole outcome again (§6).
        repeated = [node for node in expected if len(published.get(node, [])) > max(1, copies[node])]
        missing = sum(1 for count in per_task if count == 0)
        cast_twice = sum(1 for node in expected if copies[node] > 1)
        depth = queue_depth(vhost, harness.TOPIC)
        # Two copies of one cast (the client published it again) that went to the two hosts run
        # on each, since the hosts' journals do not know of each other: two outcomes, each with
        # its own ids, are then the contract's answer (§6), not a conflict.
        lost, _, _, failed = outcome_report(events, expected)
        _, conflicting, _, _ = outcome_report(events, {node: digest for node, digest in expected.items() if copies[node] <= 1})
        resumed_text = " / ".join(str(count) for count in resumed)
        figures("figures", tasks=len(expected), accepted_by_broker=accepted, completed=len(expected) - len(lost) - failed,
                lost=len(lost), failed=failed, cast_twice_by_the_client=cast_twice, outcome_events_at_broker=sum(per_task), tasks_with_repeated_events=len(repeated),
                tasks_without_event=missing, conflicting=conflicting, partial_files=staging + wrong,
                longest_pause_in_outcomes_after_each_fault=" / ".join("%.1f s" % r if r is not None else "no outcome" for r in recovery),
                outcomes_in_the_tail_after_each_fault_ended=resumed_text,
                **extra, seconds="%.1f" % (time.time() - started))
        check(accepted == len(expected), "the broker accepted every task cast (%d of %d)" % (accepted, len(expected)))
        check(not remaining and not lost, "no task lost (lost %d)" % len(lost))
        check(all(count > 0 for count in resumed), "outcomes resumed after every fault ended, under load (%s in the %d s after each)"
              % (resumed_text, TAIL_SECONDS))
        check(conflicting == 0 and failed == 0, "one successful outcome per task (conflicting %d, failed %d)" % (conflicting, failed))
        check(not repeated and missing == 0, "one outcome event per task at the broker, one per copy of a cast the client published twice "
              "(%d events for %d tasks, %d cast twice; %d repeated, %d missing)" % (sum(per_task), len(expected), cast_twice, len(repeated), missing))
        check(staging == 0 and wrong == 0, "no partial file (%d staging, %d wrong)" % (staging, wrong))
        check(depth == (0, 0), "the work queue is empty: %s" % (depth,))
        for worker in workers:
            check(worker.process.poll() is None, "worker %s survived" % worker.host)
            check(worker.stop() == 0, "worker %s exits 0 on SIGTERM" % worker.host)
        if failed:
            # Which errors, so a failure says its cause without the worker logs.
            reasons = collections.Counter("%s: %s" % (harness.data_of(e)["error"].get("code"), harness.data_of(e)["error"].get("message", "")[:160])
                                          for e in events.seen if e["event_type"] == OUTCOMES[1] and harness.data_of(e).get("node_uuid") in expected)
            for reason, count in reasons.most_common(5):
                print("    failed %d×  %s" % (count, reason))
        for node in repeated[:3]:
            log_lines_about(workers, [node] + sorted({harness.data_of(e)["task_id"] for e in events.seen
                                                      if e["event_type"] in OUTCOMES and harness.data_of(e).get("node_uuid") == node}))
        if fault_suite.failures:
            show_logs(workers)
    finally:
        if feeder and feeder.is_alive():
            feeder.stop()
        for closer in (events and events.stop, conductor and conductor.close):
            if closer:
                try:
                    closer()
                except Exception as error:
                    print("    (closing: %s)" % error)
        for worker in workers:
            worker.cleanup()
        for host in hosts:
            shutil.rmtree(host, ignore_errors=True)
        for _, _, path in images:
            os.remove(os.path.join(harness.HTTP_ROOT, path))


SCENARIOS = {
    "spread": scenario_spread,
    "consumer": lambda sources: run_load("consumer", "the node holding the consumer connections stopped under load", sources, [fault_consumer_node]),
    "leader": lambda sources: run_load("leader", "the work queue's quorum leader stopped under load", sources, [fault_leader]),
    "frozen": lambda sources: run_load("frozen", "a node frozen past the heartbeat threshold under load", sources, [fault_frozen]),
    "rolling": lambda sources: run_load("rolling", "a rolling restart of all three nodes under load", sources, [fault_rolling]),
    "hosts": lambda sources: run_load("hosts", "two hosts through every fault in a row", sources,
                                      [fault_consumer_node, fault_leader, fault_frozen, fault_rolling]),
}


def main():
    harness.require_environment()
    harness.require_image_servers()
    if not CLUSTER_URL or not CLUSTER_CTL:
        message = "IMAGE_WORKER_TEST_CLUSTER_URL and IMAGE_WORKER_TEST_CLUSTER_CTL are not set (deploy/test.sh sets them)"
        if harness.CI:
            print("FAIL " + message)
            return 1
        print("skipped: " + message)
        return 0
    # The harness's helpers (vhosts, URLs) work on the cluster from here on.
    harness.AMQP_URL = CLUSTER_URL
    harness.BROKER_CTL = CLUSTER_CTL
    chosen = sys.argv[1:] or list(SCENARIOS)
    sources = tempfile.mkdtemp(prefix="iw-cluster-src-")
    try:
        for name in chosen:
            SCENARIOS[name](sources)
    finally:
        shutil.rmtree(sources, ignore_errors=True)
    failures = fault_suite.failures
    print("\ncluster suite: %s" % ("all checks passed" if not failures else "%d check(s) failed:\n  %s" % (len(failures), "\n  ".join(failures))))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
