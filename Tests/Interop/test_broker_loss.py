"""Broker loss: the broker is stopped under an idle worker and started again; a task sent
afterwards completes without restarting the worker. Runs last: it restarts the shared broker."""
import os
import shutil
import tempfile
import time
import unittest
import uuid

import harness


class BrokerLossTests(unittest.TestCase):
    def test_a_task_after_a_broker_restart_completes_without_restarting_the_worker(self):
        harness.require_environment()
        vhost = harness.new_vhost("broker-loss")
        sources = tempfile.mkdtemp(prefix="iw-loss-")
        image = os.path.join(sources, "after-restart.img")
        with open(image, "wb") as data:
            data.write(os.urandom(100_000))
        worker = harness.Worker(vhost, allowed_paths=[sources])
        try:
            worker.start()
            pid = worker.process.pid
            log_mark = len(worker.log_text())
            harness.broker_ctl("stop")
            time.sleep(3)
            self.assertIsNone(worker.process.poll(), "the worker died with the broker")
            harness.broker_ctl("start")
            worker.wait_for_log("reconnected to the broker", timeout=90, after=log_mark)
            node = str(uuid.uuid4())
            result = self.call_until_answered(vhost, node, image, deadline=time.time() + 90)
            self.assertEqual(result["images"]["image"]["size"], 100_000)
            self.assertEqual(worker.process.pid, pid)
            self.assertIsNone(worker.process.poll())
            self.assertTrue(os.path.exists(os.path.join(worker.images_dir, node, "disk")))
        finally:
            status = worker.stop()
            worker.cleanup()
            shutil.rmtree(sources, ignore_errors=True)
        self.assertEqual(status, 0)

    def call_until_answered(self, vhost, node, image, deadline):
        # The worker re-declares its (non-durable) queues once it is back; until then a call can
        # land in no queue, so ask again until the deadline.
        last_error = None
        while time.time() < deadline:
            conductor = harness.Conductor(vhost)
            try:
                return conductor.call("fetch_image", timeout=10, node_uuid=node, instance_info={"image_source": "file://" + image})
            except Exception as error:  # MessagingTimeout while the worker is still reconnecting
                last_error = error
            finally:
                conductor.close()
            time.sleep(1)
        raise AssertionError("no answer after the broker restart: %r" % last_error)


if __name__ == "__main__":
    unittest.main()
