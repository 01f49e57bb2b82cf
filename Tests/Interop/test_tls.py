"""The worker reaches the broker over TLS as oslo configures it ([oslo_messaging_rabbit] ssl,
ssl_ca_file), while conductors use the plain listener of the same broker."""
import os
import shutil
import tempfile
import unittest
import uuid

import harness

TLS_URL = os.environ.get("IMAGE_WORKER_TEST_AMQPS_URL")
TLS_DIR = os.environ.get("IMAGE_WORKER_TEST_TLS_DIR")


class TLSTests(unittest.TestCase):
    def test_a_worker_on_tls_serves_a_conductor_on_plain_amqp(self):
        harness.require_environment()
        if not (TLS_URL and TLS_DIR):
            if harness.CI:
                raise AssertionError("IMAGE_WORKER_TEST_AMQPS_URL and IMAGE_WORKER_TEST_TLS_DIR are required under CI")
            raise unittest.SkipTest("no TLS listener (deploy/test.sh starts one)")
        vhost = harness.new_vhost("tls")
        sources = tempfile.mkdtemp(prefix="iw-tls-")
        image = os.path.join(sources, "tls.img")
        with open(image, "wb") as data:
            data.write(os.urandom(5000))
        tls_port = TLS_URL.rsplit(":", 1)[1].strip("/")
        worker = harness.Worker(vhost, allowed_paths=[sources], extra={
            "DEFAULT": {"transport_url": "rabbit://guest:guest@localhost:%s/%s" % (tls_port, vhost)},
            "oslo_messaging_rabbit": {"ssl": "true", "ssl_ca_file": os.path.join(TLS_DIR, "ca.pem")},
        })
        conductor = None
        try:
            worker.start()
            conductor = harness.Conductor(vhost)
            node = str(uuid.uuid4())
            result = conductor.call("fetch_image", node_uuid=node, instance_info={"image_source": "file://" + image})
            self.assertEqual(result["images"]["image"]["size"], 5000)
            self.assertIn("amqps://guest@localhost:%s" % tls_port, worker.log_text())
        finally:
            if conductor:
                conductor.close()
            status = worker.stop()
            worker.cleanup()
            shutil.rmtree(sources, ignore_errors=True)
        self.assertEqual(status, 0)


if __name__ == "__main__":
    unittest.main()
