"""The egress policy (contract §5.1) through the real worker: references that point at loopback,
the metadata service or a refused port are refused with ImageRefValidationFailed before any
connection, for the image and for every redirect hop, with the same words whether or not
something listens there."""
import hashlib
import os
import re
import time
import urllib.parse
import uuid

import harness
from harness import data_of


class DefaultPolicyTests(harness.WorkerSuite):
    """A worker with the contract's default policy: loopback refused (every test server is there)."""
    vhost_prefix = "egress-default"
    worker_extra = {"image_worker": {"disallowed_networks": harness.CONTRACT_DISALLOWED_NETWORKS}}

    @classmethod
    def setUpClass(cls):
        harness.require_image_servers()
        cls.metrics_port = harness.free_port()
        cls.worker_extra = {"image_worker": dict(cls.worker_extra["image_worker"], metrics_address="127.0.0.1:%d" % cls.metrics_port)}
        super().setUpClass()
        harness.wait_for_http("http://127.0.0.1:%d/healthz" % cls.metrics_port)
        cls.data = os.urandom(4096)
        cls.name = "egress-%s.img" % uuid.uuid4().hex
        harness.publish_http("images/" + cls.name, cls.data)
        cls.port = urllib.parse.urlparse(harness.HTTP_URL).port

    def refused(self, image_source, method="fetch_image"):
        node = str(uuid.uuid4())
        started = time.monotonic()
        with self.assertRaises(Exception) as raised:
            kwargs = {"node_uuid": node, "instance_info": {"image_source": image_source, "image_checksum": hashlib.sha256(self.data).hexdigest()}}
            self.conductor.call(method, **kwargs)
        elapsed = time.monotonic() - started
        self.assertEqual(harness.remote_class_name(raised.exception), "ImageRefValidationFailed", str(raised.exception))
        self.assertIn("is not an allowed destination", str(raised.exception))
        self.assertLess(elapsed, 10, "a refusal makes no connection and no retries")
        self.assertFalse(os.path.exists(os.path.join(self.worker.images_dir, node, "disk")))
        return str(raised.exception)

    def test_loopback_image_server_is_refused(self):
        before = harness.nginx_requests("GET", "/images/" + self.name)
        self.refused("http://127.0.0.1:%d/images/%s" % (self.port, self.name))
        self.assertEqual(harness.nginx_requests("GET", "/images/" + self.name), before, "nginx was contacted")

    def test_every_spelling_of_loopback_is_refused(self):
        for host in ("2130706433", "0x7f.0.0.1", "127.1", "[::ffff:127.0.0.1]", "localhost"):
            with self.subTest(host=host):
                self.refused("http://%s:%d/images/%s" % (host, self.port, self.name))

    def test_the_metadata_service_is_refused(self):
        for host in ("169.254.169.254", "2852039166", "0xa9.0xfe.0xa9.0xfe", "[::ffff:169.254.169.254]"):
            with self.subTest(host=host):
                self.refused("http://%s/latest/meta-data/" % host)

    def test_no_port_scan_oracle(self):
        # The worker's own /metrics listens; a closed port does not: the same answer for both.
        listening = self.refused("http://127.0.0.1:%d/metrics" % self.metrics_port, method="validate_image")
        closed = self.refused("http://127.0.0.1:%d/metrics" % harness.free_port(), method="validate_image")
        self.assertEqual(self.without_port(listening), self.without_port(closed))

    @staticmethod
    def without_port(message):
        return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", message.split("\n")[0])

    def test_show_image_is_refused_too(self):
        with self.assertRaises(Exception) as raised:
            self.conductor.call("show_image", image_href="http://169.254.169.254/latest/meta-data/")
        self.assertEqual(harness.remote_class_name(raised.exception), "ImageRefValidationFailed")
        self.assertIn("is not an allowed destination", str(raised.exception))

    def test_the_refusal_is_reported_in_the_error_event(self):
        node = str(uuid.uuid4())
        with self.assertRaises(Exception):
            self.conductor.call("fetch_image", node_uuid=node, instance_info={
                "image_source": "http://169.254.169.254/latest/meta-data/", "image_checksum": "a" * 64})
        event = data_of(self.events.wait_for(harness.for_node(node, "baremetal.image.fetch.error"), description="fetch.error"))
        self.assertEqual(event["error"]["code"], "ImageRefValidationFailed")
        self.assertFalse(event["error"]["retryable"])


class RedirectHopTests(harness.WorkerSuite):
    """Loopback allowed (the test servers), a port refused: every redirect hop is checked."""
    vhost_prefix = "egress-redirects"

    @classmethod
    def setUpClass(cls):
        harness.require_image_servers()
        cls.refused_port = harness.free_port()
        cls.worker_extra = {"image_worker": {"disallowed_ports": str(cls.refused_port)}}
        super().setUpClass()
        cls.data = os.urandom(4096)
        cls.name = "hop-%s.img" % uuid.uuid4().hex
        harness.publish_http("images/" + cls.name, cls.data)

    def fetch_error(self, image_source):
        node = str(uuid.uuid4())
        with self.assertRaises(Exception) as raised:
            self.conductor.call("fetch_image", node_uuid=node, instance_info={"image_source": image_source, "image_checksum": "a" * 64})
        self.assertFalse(os.path.exists(os.path.join(self.worker.images_dir, node, "disk")))
        return harness.remote_class_name(raised.exception), str(raised.exception)

    def test_a_redirect_to_the_metadata_service_is_refused(self):
        code, message = self.fetch_error("%s/redirect/to-metadata" % harness.HTTP_URL)
        self.assertEqual(code, "ImageRefValidationFailed")
        self.assertIn("http://169.254.169.254:80 is not an allowed destination", message)

    def test_a_redirect_to_a_refused_port_is_refused(self):
        code, message = self.fetch_error("%s/redirect/to-port/%d/images/%s" % (harness.HTTP_URL, self.refused_port, self.name))
        self.assertEqual(code, "ImageRefValidationFailed")
        self.assertIn("127.0.0.1:%d is not an allowed destination" % self.refused_port, message)

    def test_an_allowed_redirect_still_works(self):
        port = urllib.parse.urlparse(harness.HTTP_URL).port
        node = str(uuid.uuid4())
        result = self.conductor.call("fetch_image", node_uuid=node, instance_info={
            "image_source": "%s/redirect/to-port/%d/images/%s" % (harness.HTTP_URL, port, self.name),
            "image_checksum": hashlib.sha256(self.data).hexdigest()})
        self.assertEqual(result["images"]["image"]["size"], len(self.data))


if __name__ == "__main__":
    import unittest
    unittest.main()
