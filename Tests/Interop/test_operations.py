"""Operations: /metrics counts what the worker does, /readyz follows the broker, and SIGTERM in the
middle of a download hands the task to another worker. Restarts the shared broker: runs just before
test_broker_loss, at the end."""
import hashlib
import os
import shutil
import tempfile
import time
import unittest
import uuid

import harness


def wait_until(predicate, timeout, interval=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


class MonitoredWorkerTests(unittest.TestCase):
    def setUp(self):
        harness.require_environment()
        self.vhost = harness.new_vhost("operations")
        self.sources = tempfile.mkdtemp(prefix="iw-ops-")
        self.image = os.path.join(self.sources, "disk.img")
        with open(self.image, "wb") as out:
            out.write(os.urandom(300_000))
        self.port = harness.free_port()
        self.worker = harness.Worker(self.vhost, allowed_paths=[self.sources],
                                     extra={"image_worker": {"metrics_address": "127.0.0.1:%d" % self.port, "log_format": "json"}})
        self.worker.start()
        # The monitoring server starts beside the RPC server: "consuming requests" may come first.
        harness.wait_for_http("http://127.0.0.1:%d/metrics" % self.port)
        self.conductor = harness.Conductor(self.vhost)

    def tearDown(self):
        self.conductor.close()
        status = self.worker.stop()
        self.worker.cleanup()
        shutil.rmtree(self.sources, ignore_errors=True)
        self.assertEqual(status, 0)

    def test_metrics_count_tasks_by_method_outcome_and_code(self):
        ok = 'image_worker_tasks_total{method="fetch_image",outcome="success",code=""}'
        failed = 'image_worker_tasks_total{method="fetch_image",outcome="failure",code="ImageRefValidationFailed"}'
        refused = 'image_worker_tasks_total{method="unknown",outcome="refused",code="NoSuchMethod"}'
        before = harness.scrape(self.port)
        for _ in range(2):
            self.conductor.call("fetch_image", node_uuid=str(uuid.uuid4()), instance_info={"image_source": "file://" + self.image})
        with self.assertRaises(Exception):
            self.conductor.call("fetch_image", node_uuid=str(uuid.uuid4()),
                                instance_info={"image_source": "file://" + self.sources + "/missing.img"})
        with self.assertRaises(Exception):
            self.conductor.call("no_such_method_%s" % uuid.uuid4().hex[:4])
        # A task is counted when it settles, after its reply: when it is acknowledged.
        deadline = time.monotonic() + 10
        while True:
            after = harness.scrape(self.port)
            moved = lambda name: after.get(name, 0) - before.get(name, 0)
            if (moved(ok), moved(failed), moved(refused)) == (2, 1, 1) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        print("\n  metrics moved: success %d, failure %d, refused %d, images placed %d" % (
            moved(ok), moved(failed), moved(refused), moved('image_worker_images_total{transfer="hardlink"}')))
        self.assertEqual(moved(ok), 2)
        self.assertEqual(moved(failed), 1)
        self.assertEqual(moved(refused), 1, "an unknown method is counted as 'unknown', not under its own name")
        self.assertFalse(any("no_such_method" in name for name in after), "a caller's method name must not become a label")
        self.assertEqual(moved('image_worker_task_duration_seconds_count{method="fetch_image",outcome="success"}'), 2)
        self.assertEqual(moved('image_worker_images_total{transfer="hardlink"}'), 2)
        self.assertEqual(moved('image_worker_image_bytes_total{transfer="hardlink"}'), 600_000)
        self.assertEqual(after["image_worker_tasks_in_flight"], 0)
        # One series per broker of the URL, labelled host:port; 1 where the connection is.
        connected = {name: value for name, value in after.items() if name.startswith('image_worker_broker_connected{connection="consumer",node="')}
        self.assertEqual(sorted(connected.values()), [1], connected)
        # JSON logs carry the task's ids.
        records = [line for line in self.worker.log_text().splitlines() if '"fetched images"' in line]
        self.assertTrue(records and all('"request_id": "req-' in r and '"node_uuid"' in r and '"task_id"' in r for r in records), records[:2])
        self.assertNotIn("SECRET-TOKEN", self.worker.log_text())

    def test_readyz_goes_unready_while_the_broker_is_down_and_ready_after(self):
        url = "http://127.0.0.1:%d" % self.port
        self.assertTrue(wait_until(lambda: harness.http_get(url + "/readyz")[0] == 200, 30), "never ready")
        reconnects = harness.scrape(self.port).get('image_worker_broker_reconnects_total{connection="consumer"}', 0)
        harness.broker_ctl("stop")
        try:
            self.assertTrue(wait_until(lambda: harness.http_get(url + "/readyz")[0] == 503, 60), "still ready with the broker down")
            status, body = harness.http_get(url + "/readyz")
            print("\n  broker down: /readyz %s %r" % (status, body.strip()))
            self.assertIn("broker", body)
            self.assertEqual(harness.http_get(url + "/healthz")[0], 200, "liveness must not follow the broker")
        finally:
            harness.broker_ctl("start")
        self.assertTrue(wait_until(lambda: harness.http_get(url + "/readyz")[0] == 200, 90), "not ready again after the broker came back")
        self.assertGreater(harness.scrape(self.port)['image_worker_broker_reconnects_total{connection="consumer"}'], reconnects)


class GracefulHandOverTests(unittest.TestCase):
    def test_sigterm_mid_download_requeues_to_another_worker_and_exits_0_within_the_grace_period(self):
        harness.require_environment()
        harness.require_image_servers()
        vhost = harness.new_vhost("handover")
        shared = tempfile.mkdtemp(prefix="iw-handover-")
        data = os.urandom(96 << 20)  # 6 s at nginx's 16 MiB/s on /slow/
        name = "slow/handover-%s.img" % uuid.uuid4().hex[:6]
        harness.publish_http(name, data)
        grace = 2
        settings = {"image_worker": {"graceful_shutdown_timeout": str(grace)}, "pxe": {"instance_master_path": ""}}
        first = harness.Worker(vhost, allowed_paths=[shared], host="first", extra=settings, state_dir=shared)
        second = harness.Worker(vhost, allowed_paths=[shared], host="second", extra=settings, state_dir=shared)
        conductor = events = None
        try:
            first.start()
            conductor = harness.Conductor(vhost)
            events = harness.EventListener(vhost)
            node = str(uuid.uuid4())
            conductor.cast("fetch_image", node_uuid=node, instance_info={
                "image_source": "%s/%s" % (harness.HTTP_URL, name), "image_checksum": hashlib.sha256(data).hexdigest()})
            events.wait_for(lambda e: harness.for_node(node, "baremetal.image.fetch.progress")(e)
                            and harness.data_of(e)["phase"] == "download", timeout=30, description="the download under way")
            second.start()
            started = time.time()
            status = first.stop(timeout=grace + 30)
            took = time.time() - started
            end = events.wait_for(harness.for_node(node, "baremetal.image.fetch.end"), timeout=60, description="the end from the second worker")
            print("\n  first worker exited %d after %.1f s (grace %d s); the task ended on %s" % (status, took, grace, end["publisher_id"]))
            self.assertEqual(status, 0)
            self.assertLess(took, grace + 10)
            self.assertEqual(end["publisher_id"], "image-worker.second")
            self.assertEqual(harness.data_of(end)["images"]["image"]["size"], len(data))
            ends = events.all_matching(harness.for_node(node, "baremetal.image.fetch.end"), settle=1)
            errors = events.all_matching(harness.for_node(node, "baremetal.image.fetch.error"), settle=0)
            self.assertEqual(len({e["metadata"]["message_id"] for e in ends}), 1, "one outcome")
            self.assertEqual(errors, [], "the cancelled run must not report an error")
            folder = os.path.join(shared, "images", node)
            self.assertEqual(sorted(os.listdir(folder)), ["disk"], "no staging file left behind")
            with open(os.path.join(folder, "disk"), "rb") as disk:
                self.assertEqual(hashlib.sha256(disk.read()).hexdigest(), hashlib.sha256(data).hexdigest())
            self.assertEqual(harness.queue_depths(vhost).get(harness.TOPIC), (0, 0))
        finally:
            if events:
                events.stop()
            if conductor:
                conductor.close()
            for worker in (first, second):
                worker.cleanup()
            shutil.rmtree(shared, ignore_errors=True)
            os.remove(os.path.join(harness.HTTP_ROOT, name))


if __name__ == "__main__":
    unittest.main()
