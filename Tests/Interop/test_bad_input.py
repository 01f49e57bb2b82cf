"""Malformed messages and hostile references: each gets the contract's error, nothing is written
outside images_dir, and the worker keeps consuming."""
import json
import os
import shutil
import tempfile
import time
import unittest
import uuid

import harness
from harness import data_of, envelope


class BadInputTests(harness.WorkerSuite):
    vhost_prefix = "bad-input"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.good = os.path.join(cls.sources, "good.img")
        with open(cls.good, "wb") as image:
            image.write(os.urandom(65536))
        cls.sources_before = sorted(os.listdir(cls.sources))

    def setUp(self):
        self.created = []  # what the test itself puts in the sources folder (symlinks, fifos, folders)

    def tearDown(self):
        # Whatever the test sent, the worker still serves, and nothing was written where it must not be.
        node = str(uuid.uuid4())
        result = self.conductor.call("fetch_image", node_uuid=node, instance_info={"image_source": "file://" + self.good})
        self.assertEqual(result["images"]["image"]["size"], 65536)
        self.assertEqual(sorted(os.listdir(self.sources)), sorted(self.sources_before + self.created))
        type(self).sources_before = sorted(self.sources_before + self.created)  # kept for the next tests
        self.assert_images_dir_holds_only_node_files()

    def assert_images_dir_holds_only_node_files(self):
        for entry in os.listdir(self.worker.images_dir):
            uuid.UUID(entry)  # only node folders named by UUIDs
            for name in os.listdir(os.path.join(self.worker.images_dir, entry)):
                self.assertIn(name, ("disk", "kernel", "ramdisk"), "unexpected file %s/%s" % (entry, name))

    def call_error(self, **kwargs):
        with self.assertRaises(Exception) as raised:
            self.conductor.call("fetch_image", **kwargs)
        return harness.remote_class_name(raised.exception), str(raised.exception)

    def error_event(self, node, timeout=20):
        return data_of(self.events.wait_for(harness.for_node(node, "baremetal.image.fetch.error"), timeout=timeout,
                                            description="fetch.error for %s" % node))

    # Malformed messages, sent as raw bytes.

    def raw_reply(self, message, content_type="application/json", unique_id=None):
        """Sends a call as raw bytes; returns its final reply."""
        replies = harness.ReplyQueue(self.vhost)
        try:
            message = dict(message, _msg_id=uuid.uuid4().hex, _reply_q=replies.name, _unique_id=unique_id or uuid.uuid4().hex)
            harness.raw_publish(self.vhost, envelope(message), content_type=content_type)
            reply = replies.get()
        finally:
            replies.close()
        self.assertTrue(reply["ending"])
        return reply

    def raw_call(self, message, content_type="application/json", unique_id=None):
        """Sends a call that must fail as raw bytes; returns its failure."""
        reply = self.raw_reply(message, content_type=content_type, unique_id=unique_id)
        self.assertIsNone(reply["result"])
        return json.loads(reply["failure"])

    def test_a_unique_id_reused_for_another_request_is_refused(self):
        # §6: a request is its _unique_id and what it asks. A delete_images that reuses a fetch's
        # id is refused; it is not answered with the fetch's outcome (which would delete nothing
        # and say it had). The fetch itself, sent again, is a duplicate and gets its outcome again.
        node = str(uuid.uuid4())
        unique_id = uuid.uuid4().hex
        fetch = {"method": "fetch_image", "version": "1.0",
                 "args": {"node_uuid": node, "instance_info": {"image_source": "file://" + self.good}}}
        first = self.raw_reply(fetch, unique_id=unique_id)
        self.assertIsNone(first["failure"])
        self.assertEqual(first["result"]["images"]["image"]["size"], 65536)
        failure = self.raw_call({"method": "delete_images", "version": "1.0", "args": {"node_uuid": node}}, unique_id=unique_id)
        self.assertEqual(failure["class"], "InvalidParameterValue")
        self.assertIn("'_unique_id' %s already identifies a request with other content" % unique_id, failure["message"])
        self.assertTrue(os.path.exists(os.path.join(self.worker.images_dir, node, "disk")), "the refused delete deleted nothing")
        refused = self.error_event(node)
        self.assertEqual(refused["error"]["code"], "InvalidParameterValue")
        self.assertNotEqual(refused["task_id"], unique_id, "the refusal's event carries the first request's task id")
        other_node = dict(fetch, args=dict(fetch["args"], node_uuid=str(uuid.uuid4())))
        self.assertEqual(self.raw_call(other_node, unique_id=unique_id)["class"], "InvalidParameterValue")
        self.assertFalse(os.path.exists(os.path.join(self.worker.images_dir, other_node["args"]["node_uuid"])))
        again = self.raw_reply(fetch, unique_id=unique_id)
        self.assertEqual(again["result"], first["result"], "the same request again is a duplicate: the same outcome")

    def test_non_json_body(self):
        marker = time.time()
        harness.raw_publish(self.vhost, b"\x00\xffthis is not json {")
        event = self.events.wait_for(
            lambda e: e["event_type"] == "baremetal.image.fetch.error" and "not valid JSON" in data_of(e)["error"]["message"]
            and e["metadata"]["timestamp"] >= time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(marker - 1)),
            description="error event for a non-JSON body")
        self.assertEqual(data_of(event)["error"]["code"], "InvalidParameterValue")
        self.assertEqual(data_of(event)["error"]["http_status"], 400)

    def test_wrong_content_type(self):
        node = str(uuid.uuid4())
        failure = self.raw_call({"method": "fetch_image", "args": {"node_uuid": node, "instance_info": {"image_source": "file://" + self.good}}},
                                content_type="text/plain")
        self.assertEqual(failure["class"], "InvalidParameterValue")
        self.assertEqual(failure["module"], "ironic.common.exception")
        self.assertIn("text/plain", failure["message"])
        self.assertEqual(self.error_event(node)["error"]["code"], "InvalidParameterValue")
        self.assertFalse(os.path.exists(os.path.join(self.worker.images_dir, node)))

    def test_a_reply_queue_the_broker_cannot_route_to(self):
        # An AMQP routing key holds 255 bytes: a reply to this queue could never be published.
        # Refused like a malformed message (an error event, no reply attempted), and the next
        # call (tearDown's) is answered, so it did not stop the worker's publishing.
        node = str(uuid.uuid4())
        message = {"method": "fetch_image", "args": {"node_uuid": node, "instance_info": {"image_source": "file://" + self.good}},
                   "_msg_id": uuid.uuid4().hex, "_reply_q": "reply_" + "q" * 300, "_unique_id": uuid.uuid4().hex}
        harness.raw_publish(self.vhost, envelope(message))
        error = self.error_event(node)["error"]
        self.assertEqual(error["code"], "InvalidParameterValue")
        self.assertIn("'_reply_q' is 306 bytes long", error["message"])
        self.assertFalse(os.path.exists(os.path.join(self.worker.images_dir, node)))

    def test_no_method(self):
        failure = self.raw_call({"args": {"node_uuid": str(uuid.uuid4())}})
        self.assertEqual(failure["class"], "InvalidParameterValue")
        self.assertIn("no 'method'", failure["message"])

    def test_args_of_the_wrong_type(self):
        failure = self.raw_call({"method": "fetch_image", "args": ["not", "an", "object"]})
        self.assertEqual(failure["class"], "InvalidParameterValue")
        code, message = self.call_error(node_uuid=str(uuid.uuid4()), instance_info="file:///x")
        self.assertEqual(code, "InvalidParameterValue")
        self.assertIn("instance_info must be an object", message)
        code, message = self.call_error(node_uuid=12, instance_info={"image_source": "file://" + self.good})
        self.assertEqual(code, "InvalidParameterValue")
        code, message = self.call_error(node_uuid=str(uuid.uuid4()), instance_info={"image_source": ["file:///x"]})
        self.assertEqual(code, "InvalidParameterValue")
        self.assertIn("image_source must be a string", message)

    def test_node_uuid_that_is_a_path(self):
        code, message = self.call_error(node_uuid="../../etc", instance_info={"image_source": "file://" + self.good})
        self.assertEqual(code, "InvalidParameterValue")
        self.assertIn("is not a UUID", message)
        self.assertFalse(os.path.exists(os.path.normpath(os.path.join(self.worker.images_dir, "../../etc"))))

    # Hostile references.

    def assert_refused(self, image_source, expected_text):
        node = str(uuid.uuid4())
        code, message = self.call_error(node_uuid=node, instance_info={"image_source": image_source})
        self.assertEqual(code, "ImageRefValidationFailed", message)
        self.assertIn(expected_text, message)
        event = self.error_event(node)
        self.assertEqual(event["error"]["code"], "ImageRefValidationFailed")
        self.assertEqual(event["role"], "image")
        self.assertFalse(os.path.exists(os.path.join(self.worker.images_dir, node, "disk")))

    def test_etc_passwd(self):
        self.assert_refused("file:///etc/passwd", "The path /etc is not permitted")

    def test_dev_zero(self):
        started = time.time()
        self.assert_refused("file:///dev/zero", "The path /dev is not permitted")
        self.assertLess(time.time() - started, 10, "/dev/zero must be refused before it is read")

    def test_symlink_in_an_allowed_folder_to_etc_hostname(self):
        link = os.path.join(self.sources, "innocent-%s.img" % uuid.uuid4().hex[:6])
        os.symlink("/etc/hostname", link)
        self.created.append(os.path.basename(link))
        self.assert_refused("file://" + link, "The path /etc is not permitted")

    def test_symlink_in_an_allowed_folder_to_a_folder_outside(self):
        outside = tempfile.mkdtemp(prefix="iw-outside-")
        try:
            with open(os.path.join(outside, "secret.img"), "wb") as secret:
                secret.write(b"secret")
            link = os.path.join(self.sources, "escape-%s" % uuid.uuid4().hex[:6])
            os.symlink(outside, link)
            self.created.append(os.path.basename(link))
            self.assert_refused("file://%s/secret.img" % link, "not allowed for image source file URLs")
        finally:
            shutil.rmtree(outside)

    def test_dot_dot_out_of_the_allowed_folder(self):
        self.assert_refused("file://%s/../../etc/hostname" % self.sources, "The path /etc is not permitted")

    def test_a_directory(self):
        folder = os.path.join(self.sources, "folder-%s" % uuid.uuid4().hex[:6])
        os.mkdir(folder)
        self.created.append(os.path.basename(folder))
        self.assert_refused("file://" + folder, "not a regular file")

    def test_a_fifo(self):
        fifo = os.path.join(self.sources, "fifo-%s" % uuid.uuid4().hex[:6])
        os.mkfifo(fifo)
        self.created.append(os.path.basename(fifo))
        self.assert_refused("file://" + fifo, "not a regular file")

    def test_a_missing_file(self):
        self.assert_refused("file://%s/nope-%s.img" % (self.sources, uuid.uuid4().hex), "Specified image file not found.")

    def test_outside_the_allowed_paths(self):
        elsewhere = tempfile.NamedTemporaryFile(prefix="iw-elsewhere-", delete=False)
        elsewhere.write(b"x")
        elsewhere.close()
        try:
            self.assert_refused("file://" + elsewhere.name, "not allowed for image source file URLs")
        finally:
            os.unlink(elsewhere.name)
        # The same answer for a path that does not exist: the refusal is no existence oracle.
        self.assert_refused("file://" + elsewhere.name, "not allowed for image source file URLs")
        self.assert_refused("file:///var/nope-%s/x.img" % uuid.uuid4().hex, "not allowed for image source file URLs")

    def test_a_checksum_that_does_not_match_leaves_nothing(self):
        node = str(uuid.uuid4())
        code, message = self.call_error(node_uuid=node, instance_info={"image_source": "file://" + self.good, "image_checksum": "0" * 64})
        self.assertEqual(code, "ImageChecksumError")
        event = self.error_event(node)
        self.assertEqual(event["error"]["code"], "ImageChecksumError")
        folder = os.path.join(self.worker.images_dir, node)
        self.assertEqual(os.listdir(folder) if os.path.exists(folder) else [], [])

    def test_md5_checksum_and_unknown_algorithm(self):
        code, _ = self.call_error(node_uuid=str(uuid.uuid4()), instance_info={"image_source": "file://" + self.good, "image_checksum": "whirlpool:abcd"})
        self.assertEqual(code, "ImageChecksumAlgorithmFailure")

    def test_a_name_with_spaces_and_non_ascii_works(self):
        name = "my image – ñoño 画像.img"
        path = os.path.join(self.sources, name)
        with open(path, "wb") as image:
            image.write(os.urandom(4096))
        self.created.append(name)
        for reference in ("file://" + path, "file://" + __import__("urllib.parse").parse.quote(path)):
            node = str(uuid.uuid4())
            result = self.conductor.call("fetch_image", node_uuid=node, instance_info={"image_source": reference})
            self.assertEqual(result["images"]["image"]["size"], 4096)
            self.assertEqual(os.stat(os.path.join(self.worker.images_dir, node, "disk")).st_ino, os.stat(path).st_ino)


if __name__ == "__main__":
    unittest.main()
