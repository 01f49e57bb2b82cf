"""The worker and a real oslo.messaging RPC server with the same options declare the same queues
and exchanges side by side, in either order, without PRECONDITION_FAILED."""
import tempfile
import unittest
import uuid

import oslo_messaging as messaging

import harness

VARIANTS = {
    "default": {},
    "durable": {"amqp_durable_queues": True},
    "quorum": {"rabbit_quorum_queue": True, "rabbit_quorum_delivery_limit": 5},
}


class OsloPeer:
    """A real oslo RPC server on the worker's topic, as a conductor-side peer would run it."""

    def __init__(self, vhost, options):
        self.conf = harness.oslo_conf()
        self.transport = messaging.get_rpc_transport(self.conf, url=harness.url_for(vhost, **options))
        self.name = "oslo-peer-%s" % uuid.uuid4().hex[:6]

        class Endpoint:
            target = messaging.Target(version="1.0")

            def ping(endpoint, ctxt):
                return self.name

        target = messaging.Target(exchange=harness.EXCHANGE, topic=harness.TOPIC, server=self.name)
        self.server = messaging.get_rpc_server(self.transport, target, [Endpoint()], executor="threading")
        self.server.start()

    def stop(self):
        self.server.stop()
        self.server.wait()
        self.transport.cleanup()


class TopologyTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_environment()
        cls.sources = tempfile.mkdtemp(prefix="iw-topology-")

    def run_side_by_side(self, variant, worker_first):
        options = VARIANTS[variant]
        vhost = harness.new_vhost("topology-%s" % variant)
        rabbit_section = {name: str(value).lower() for name, value in options.items()}
        worker = harness.Worker(vhost, allowed_paths=[self.sources], extra={"oslo_messaging_rabbit": rabbit_section})
        peer = None
        conductor = None
        try:
            if worker_first:
                worker.start()
                peer = OsloPeer(vhost, options)
            else:
                peer = OsloPeer(vhost, options)
                worker.start()
            conductor = harness.Conductor(vhost, url_options=options)
            # Each answers on its own server queue: both declared and consume.
            self.assertEqual(conductor.call("ping", server=peer.name, timeout=20), peer.name)
            node = str(uuid.uuid4())
            self.assertEqual(conductor.call("delete_images", server=worker.host, timeout=20, node_uuid=node),
                             {"node_uuid": node, "deleted": False})
            self.assertNotIn("PRECONDITION_FAILED", worker.log_text())
            queues = self.queue_flags(vhost)
            durable = variant != "default"
            self.assertEqual(queues[harness.TOPIC][0], str(durable).lower())
            self.assertEqual(queues["%s.%s" % (harness.TOPIC, worker.host)][0], str(durable).lower())
            if variant == "quorum":
                self.assertIn("quorum", queues[harness.TOPIC][1])
                self.assertIn("x-delivery-limit", queues[harness.TOPIC][1])
        finally:
            if conductor:
                conductor.close()
            if peer:
                peer.stop()
            status = worker.stop()
            worker.cleanup()
        self.assertEqual(status, 0)

    def queue_flags(self, vhost):
        output = harness.broker_ctl("ctl", "list_queues", "-p", vhost, "--no-table-headers", "--quiet", "name", "durable", "arguments")
        flags = {}
        for line in output.splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                flags[parts[0]] = (parts[1], parts[2])
        return flags


def add_variant_tests():
    for variant in VARIANTS:
        for worker_first in (True, False):
            order = "worker_first" if worker_first else "oslo_first"

            def test(self, variant=variant, worker_first=worker_first):
                self.run_side_by_side(variant, worker_first)

            setattr(TopologyTests, "test_%s_%s" % (variant, order), test)


add_variant_tests()

if __name__ == "__main__":
    unittest.main()
