"""Many slow downloads from one image server at once, through the real worker and a real nginx
that sends 2 MiB/s a connection: none fails because it waited for a connection, and
`max_connections_per_host` bounds what the server sees."""
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid

import harness
from harness import data_of


class ConnectionCounter:
    """Samples, with `ss`, the established connections a process holds to a port."""

    def __init__(self, pid, port):
        self.pid, self.port = pid, port
        self.peak = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def count(self):
        out = subprocess.run(["ss", "-tnpH", "state", "established", "dst", "127.0.0.1:%d" % self.port],
                             capture_output=True, text=True, check=True).stdout
        return sum(1 for line in out.splitlines() if "pid=%d," % self.pid in line)

    def run(self):
        while not self.stopped.is_set():
            self.peak = max(self.peak, self.count())
            time.sleep(0.05)

    def stop(self):
        self.stopped.set()
        self.thread.join()
        return self.peak


class ConnectionLimitTests(unittest.TestCase):
    tasks = 20
    image_bytes = 8 << 20  # four seconds a download at 2 MiB/s: twice the connect timeout

    @classmethod
    def setUpClass(cls):
        harness.require_environment()
        harness.require_image_servers()
        cls.vhost = harness.new_vhost("connections")
        cls.sources = tempfile.mkdtemp(prefix="iw-connections-")
        cls.conductor = harness.Conductor(cls.vhost)
        cls.events = harness.EventListener(cls.vhost)
        data = os.urandom(cls.image_bytes)
        cls.name = "many-%s.img" % uuid.uuid4().hex[:8]
        harness.publish_http("slow2m/" + cls.name, data)
        cls.sha256 = hashlib.sha256(data).hexdigest()
        cls.port = urllib.parse.urlparse(harness.HTTP_URL).port

    @classmethod
    def tearDownClass(cls):
        cls.events.stop()
        cls.conductor.close()
        shutil.rmtree(cls.sources, ignore_errors=True)

    def run_tasks(self, worker_options):
        """Casts twenty fetches of the slow image to a fresh worker (no cache: every task
        downloads); returns (end events, error events, peak connections, progress phases)."""
        options = {"max_concurrent_downloads": str(self.tasks)}
        options.update(worker_options)
        worker = harness.Worker(self.vhost, allowed_paths=[self.sources], extra={
            # A connect timeout shorter than every download: waiting counted against it would fail.
            "DEFAULT": {"webserver_connection_timeout": "2"},
            "pxe": {"instance_master_path": ""},
            "image_worker": options,
        })
        try:
            worker.start()
            counter = ConnectionCounter(worker.process.pid, self.port)
            nodes = [str(uuid.uuid4()) for _ in range(self.tasks)]
            for node in nodes:
                self.conductor.cast("fetch_image", node_uuid=node, instance_info={
                    "image_source": "%s/slow2m/%s" % (harness.HTTP_URL, self.name), "image_checksum": self.sha256})
            wanted = set(nodes)
            done = lambda event: (event["event_type"] in ("baremetal.image.fetch.end", "baremetal.image.fetch.error")
                                  and data_of(event).get("node_uuid") in wanted)
            deadline = time.time() + 180
            while len(self.events.all_matching(done, settle=0.2)) < self.tasks and time.time() < deadline:
                time.sleep(0.2)
            peak = counter.stop()
            outcomes = self.events.all_matching(done, settle=0)
            ends = [data_of(e) for e in outcomes if e["event_type"].endswith(".end")]
            errors = [data_of(e) for e in outcomes if e["event_type"].endswith(".error")]
            for end in ends:  # the files, before the worker's folder goes
                image = end["images"]["image"]
                image["size_on_disk"] = os.path.getsize(image["path"]) if os.path.exists(image["path"]) else None
            phases = {data_of(e).get("phase") for e in self.events.seen
                      if e["event_type"] == "baremetal.image.fetch.progress" and data_of(e).get("node_uuid") in wanted}
            self.assertEqual(worker.stop(), 0)
            return ends, errors, peak, phases
        finally:
            worker.cleanup()

    def assert_all_complete(self, ends, errors):
        self.assertEqual(errors, [], "no task may fail for waiting its turn")
        self.assertEqual(len(ends), self.tasks)
        for end in ends:
            image = end["images"]["image"]
            self.assertTrue(image["verified"])
            self.assertEqual(image["checksum"]["value"], self.sha256)
            self.assertEqual(image["size_on_disk"], self.image_bytes)

    def test_max_concurrent_downloads_slow_downloads_from_one_server_all_complete(self):
        ends, errors, peak, _ = self.run_tasks({})
        self.assert_all_complete(ends, errors)
        print("\n  %d slow downloads at once from one server: peak %d connections" % (self.tasks, peak))
        self.assertGreater(peak, 8, "more downloads ran at once than async-http-client's default pool of 8")
        self.assertLessEqual(peak, self.tasks)

    def test_four_connections_per_host_queue_the_rest_without_failing(self):
        ends, errors, peak, phases = self.run_tasks({"max_connections_per_host": "4"})
        self.assert_all_complete(ends, errors)
        print("\n  max_connections_per_host = 4: peak %d connections at the server; progress phases %s" % (peak, sorted(p for p in phases if p)))
        self.assertLessEqual(peak, 4)
        self.assertGreaterEqual(peak, 1)
        self.assertIn("queued", phases, "waiting tasks report phase: queued")


if __name__ == "__main__":
    unittest.main()
