"""The running worker driven by a real oslo.messaging client and listener (issue 2's interop list)."""
import hashlib
import os
import unittest
import uuid

import harness
from harness import data_of, for_node


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as image:
        for chunk in iter(lambda: image.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FetchInteropTests(harness.WorkerSuite):
    vhost_prefix = "interop"

    def make_file(self, name, size=1 << 20):
        path = os.path.join(self.sources, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as image:
            image.write(os.urandom(size))
        return path

    def node_path(self, node, name):
        return os.path.join(self.worker.images_dir, node, name)

    def test_a_cast_whole_disk_emits_end_with_size_and_sha256_and_shares_the_inode(self):
        source = self.make_file("whole-%s.img" % uuid.uuid4().hex[:6], size=3 << 20)
        node = str(uuid.uuid4())
        self.conductor.cast("fetch_image", node_uuid=node, instance_info={"image_source": "file://" + source})
        end = self.events.wait_for(for_node(node, "baremetal.image.fetch.end"), description="fetch.end for the cast")
        self.assertEqual(end["priority"], "INFO")
        self.assertEqual(end["publisher_id"], "image-worker.%s" % self.worker.host)
        self.assertEqual(end["payload"]["ironic_object.name"], "ImageFetchPayload")
        image = data_of(end)["images"]["image"]
        self.assertEqual(image["size"], 3 << 20)
        self.assertEqual(image["checksum"], {"algo": "sha256", "value": sha256_of(source)})
        self.assertEqual(image["transfer"], "hardlink")
        disk = self.node_path(node, "disk")
        self.assertEqual(os.stat(disk).st_ino, os.stat(source).st_ino)
        start = self.events.wait_for(for_node(node, "baremetal.image.fetch.start"), description="fetch.start")
        self.assertEqual(data_of(start)["attempt"], 1)
        self.assertEqual(data_of(start)["task_id"], data_of(end)["task_id"])
        # The caller's token never leaves the worker.
        self.assertIsNone(end["context"].get("auth_token"))

    def test_b_call_returns_the_contract_result(self):
        source = self.make_file("call.img")
        node = str(uuid.uuid4())
        context = self.conductor.context()
        result = self.conductor.call("fetch_image", context=context, node_uuid=node,
                                     instance_info={"image_source": "file://" + source, "image_disk_format": "raw"})
        self.assertEqual(set(result), {"node_uuid", "request_id", "task_id", "image_type", "images", "instance_info"})
        self.assertEqual(result["node_uuid"], node)
        self.assertEqual(result["request_id"], context["request_id"])
        self.assertEqual(result["image_type"], "whole-disk")
        image = result["images"]["image"]
        self.assertEqual(set(image), {"href", "service", "path", "size", "disk_format", "updated_at", "checksum", "verified",
                                      "cache", "transfer", "bytes_transferred", "duration_ms", "virtual_size", "source"})
        self.assertEqual(image["service"], "file")
        self.assertEqual(image["path"], self.node_path(node, "disk"))
        self.assertEqual(image["disk_format"], "raw")
        self.assertFalse(image["verified"])
        self.assertEqual(image["cache"], "bypass")
        self.assertRegex(image["updated_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
        info = result["instance_info"]
        self.assertEqual(info["image_os_hash_algo"], "sha256")
        self.assertEqual(info["image_os_hash_value"], sha256_of(source))
        self.assertEqual(info["image_size"], 1 << 20)
        self.assertEqual(info["image_disk_format"], "raw")
        self.assertNotIn("SECRET-TOKEN", str(result))

    def test_b2_a_given_checksum_is_verified(self):
        source = self.make_file("verified.img")
        node = str(uuid.uuid4())
        result = self.conductor.call("fetch_image", node_uuid=node,
                                     instance_info={"image_source": "file://" + source, "image_checksum": sha256_of(source).upper()})
        self.assertTrue(result["images"]["image"]["verified"])

    def test_c_a_path_that_is_not_allowed_raises_ImageRefValidationFailed(self):
        node = str(uuid.uuid4())
        with self.assertRaises(Exception) as raised:
            self.conductor.call("fetch_image", node_uuid=node, instance_info={"image_source": "file:///etc/passwd"})
        self.assertEqual(harness.remote_class_name(raised.exception), "ImageRefValidationFailed")
        try:
            from ironic.common import exception as ironic_exception
        except ImportError:
            ironic_exception = None
        if ironic_exception is not None:
            # A real conductor re-raises it as Ironic's own class, with Ironic's HTTP code.
            self.assertIsInstance(raised.exception, ironic_exception.ImageRefValidationFailed)
            self.assertEqual(raised.exception.code, 500)
        error = self.events.wait_for(for_node(node, "baremetal.image.fetch.error"), description="fetch.error")
        self.assertEqual(error["priority"], "ERROR")
        self.assertEqual(data_of(error)["error"]["code"], "ImageRefValidationFailed")
        self.assertFalse(data_of(error)["error"]["retryable"])
        self.assertFalse(os.path.exists(self.node_path(node, "disk")))

    def test_d_a_call_with_a_call_monitor_timeout_gets_heartbeats_and_completes(self):
        # A sparse 4 GiB file: hashing it takes well over the 1 s monitor timeout, so the call only
        # completes if heartbeats arrive every 0.5 s meanwhile.
        source = os.path.join(self.sources, "sparse-%s.img" % uuid.uuid4().hex[:6])
        with open(source, "wb") as image:
            image.truncate(4 << 30)
        node = str(uuid.uuid4())
        try:
            result = self.conductor.call("fetch_image", timeout=120, call_monitor_timeout=1, node_uuid=node,
                                         instance_info={"image_source": "file://" + source})
        finally:
            os.unlink(source)
        image = result["images"]["image"]
        self.assertEqual(image["size"], 4 << 30)
        self.assertGreater(image["duration_ms"], 1500, "the fetch was too quick to need heartbeats")

    def test_e_an_unknown_method_raises_NoSuchMethod(self):
        with self.assertRaises(Exception) as raised:
            self.conductor.call("make_coffee", node_uuid=str(uuid.uuid4()))
        self.assertEqual(harness.remote_class_name(raised.exception), "NoSuchMethod")
        with self.assertRaises(Exception) as private:
            self.conductor.call("_private", node_uuid=str(uuid.uuid4()))
        self.assertEqual(harness.remote_class_name(private.exception), "NoSuchMethod")

    def test_e2_an_unsupported_version_raises_UnsupportedVersion(self):
        client = self.conductor.client.prepare(version="1.5", timeout=15)
        with self.assertRaises(Exception) as raised:
            client.call(self.conductor.context(), "fetch_image", node_uuid=str(uuid.uuid4()), instance_info={})
        self.assertEqual(harness.remote_class_name(raised.exception), "UnsupportedVersion")

    def test_f_a_partition_image_with_file_kernel_and_ramdisk_writes_three_files(self):
        disk = self.make_file("part/disk.img")
        kernel = self.make_file("part/vmlinuz", size=4096)
        ramdisk = self.make_file("part/initrd", size=8192)
        node = str(uuid.uuid4())
        result = self.conductor.call("fetch_image", node_uuid=node, instance_info={
            "image_source": "file://" + disk, "kernel": "file://" + kernel, "ramdisk": "file://" + ramdisk})
        self.assertEqual(result["image_type"], "partition")
        self.assertEqual(set(result["images"]), {"image", "kernel", "ramdisk"})
        for name, source in (("disk", disk), ("kernel", kernel), ("ramdisk", ramdisk)):
            self.assertEqual(os.stat(self.node_path(node, name)).st_ino, os.stat(source).st_ino, name)
        self.assertEqual(result["images"]["kernel"]["checksum"]["value"], sha256_of(kernel))
        self.assertEqual(result["instance_info"]["kernel"], "file://" + kernel)
        self.assertEqual(result["instance_info"]["ramdisk"], "file://" + ramdisk)

    def test_f2_one_node_at_a_time_and_its_folder_holds_exactly_the_last_fetch(self):
        # §6: a partition fetch of a slow http image, and at once a whole-disk fetch for the same
        # node. Run together, the quick second one would finish first and the first would then
        # leave disk, kernel and ramdisk; one after the other, the second ends last and removes
        # the earlier kernel and ramdisk.
        harness.require_image_servers()
        data = os.urandom(6 << 20)  # 3 s at nginx's 2 MiB/s on /slow2m/
        name = "lock-%s.img" % uuid.uuid4().hex[:6]
        harness.publish_http("slow2m/" + name, data)
        kernel = self.make_file("lock/vmlinuz", size=4096)
        ramdisk = self.make_file("lock/initrd", size=8192)
        whole = self.make_file("lock/whole.img", size=1 << 20)
        node = str(uuid.uuid4())
        self.conductor.cast("fetch_image", node_uuid=node, instance_info={
            "image_source": "%s/slow2m/%s" % (harness.HTTP_URL, name), "image_checksum": hashlib.sha256(data).hexdigest(),
            "kernel": "file://" + kernel, "ramdisk": "file://" + ramdisk})
        self.events.wait_for(for_node(node, "baremetal.image.fetch.start"), description="the first fetch's start")
        self.conductor.cast("fetch_image", node_uuid=node, instance_info={"image_source": "file://" + whole})
        is_end = for_node(node, "baremetal.image.fetch.end")
        first = self.events.wait_for(is_end, timeout=60, description="the first end")
        second = self.events.wait_for(lambda e: is_end(e) and e is not first, timeout=60, description="the second end")
        self.assertEqual([data_of(e)["image_type"] for e in (first, second)], ["partition", "whole-disk"], "the second fetch ended first")
        self.assertEqual(sorted(os.listdir(os.path.join(self.worker.images_dir, node))), ["disk"])
        self.assertEqual(os.stat(self.node_path(node, "disk")).st_ino, os.stat(whole).st_ino)

    def test_g_a_partition_image_without_a_ramdisk_is_MissingParameterValue(self):
        disk = self.make_file("part2/disk.img")
        with self.assertRaises(Exception) as raised:
            self.conductor.call("fetch_image", node_uuid=str(uuid.uuid4()), instance_info={
                "image_source": "file://" + disk, "image_type": "partition", "kernel": "file://" + disk})
        self.assertEqual(harness.remote_class_name(raised.exception), "MissingParameterValue")
        self.assertIn("ramdisk", str(raised.exception))

    def test_h_other_schemes_are_not_supported(self):
        with self.assertRaises(Exception) as raised:
            self.conductor.call("fetch_image", node_uuid=str(uuid.uuid4()), instance_info={"image_source": "ftp://example.com/x.img"})
        self.assertEqual(harness.remote_class_name(raised.exception), "ImageRefValidationFailed")
        self.assertIn("Image download protocol ftp is not supported", str(raised.exception))

    def test_k_cast_https_image_with_a_checksum_file_url(self):
        harness.require_image_servers()
        name = "interop-%s.qcow2" % uuid.uuid4().hex[:6]
        data = os.urandom(200_000)
        harness.publish_http("images/" + name, data)
        harness.publish_http("images/%s.sha256" % name, ("%s  %s\n" % (hashlib.sha256(data).hexdigest(), name)).encode())
        node = str(uuid.uuid4())
        self.conductor.cast("fetch_image", node_uuid=node, instance_info={
            "image_source": "%s/images/%s" % (harness.HTTPS_URL, name),
            "image_checksum": "%s/images/%s.sha256" % (harness.HTTPS_URL, name)})
        end = self.events.wait_for(for_node(node, "baremetal.image.fetch.end"), description="fetch.end for the https image")
        image = data_of(end)["images"]["image"]
        self.assertEqual(image["service"], "http")
        self.assertTrue(image["verified"])
        self.assertEqual(image["checksum"], {"algo": "sha256", "value": hashlib.sha256(data).hexdigest()})
        self.assertEqual(image["transfer"], "download")
        with open(self.node_path(node, "disk"), "rb") as disk:
            self.assertEqual(disk.read(), data)

    def test_l_cast_a_glance_partition_image(self):
        harness.require_image_servers()
        kernel = harness.glance_image(os.urandom(4000))
        ramdisk = harness.glance_image(os.urandom(6000))
        disk_data = os.urandom(50_000)
        disk = harness.glance_image(disk_data, properties={"kernel_id": kernel, "ramdisk_id": ramdisk})
        node = str(uuid.uuid4())
        self.conductor.cast("fetch_image", node_uuid=node, instance_info={"image_source": disk})
        end = self.events.wait_for(for_node(node, "baremetal.image.fetch.end"), description="fetch.end for the Glance image")
        result = data_of(end)
        self.assertEqual(result["image_type"], "partition")
        self.assertEqual(set(result["images"]), {"image", "kernel", "ramdisk"})
        self.assertTrue(all(image["verified"] and image["service"] == "glance" for image in result["images"].values()))
        self.assertEqual(result["instance_info"]["kernel"], kernel)
        self.assertEqual(result["instance_info"]["image_os_hash_value"], hashlib.sha512(disk_data).hexdigest())
        for name in ("disk", "kernel", "ramdisk"):
            self.assertTrue(os.path.exists(self.node_path(node, name)), name)

    def test_m_validate_image_on_a_missing_http_image(self):
        harness.require_image_servers()
        with self.assertRaises(Exception) as raised:
            self.conductor.call("validate_image", node_uuid=str(uuid.uuid4()), instance_info={
                "image_source": "%s/images/missing-%s.img" % (harness.HTTP_URL, uuid.uuid4().hex), "image_checksum": "a" * 64})
        self.assertEqual(harness.remote_class_name(raised.exception), "ImageRefValidationFailed")
        self.assertIn("Got HTTP code 404", str(raised.exception))

    def test_i_delete_images_removes_the_node_folder(self):
        source = self.make_file("delete.img")
        node = str(uuid.uuid4())
        self.conductor.call("fetch_image", node_uuid=node, instance_info={"image_source": "file://" + source})
        self.assertTrue(os.path.exists(self.node_path(node, "disk")))
        self.assertEqual(self.conductor.call("delete_images", node_uuid=node), {"node_uuid": node, "deleted": True})
        self.assertFalse(os.path.exists(os.path.join(self.worker.images_dir, node)))
        self.assertTrue(os.path.exists(source), "deleting a node's images must not touch the source")

    def test_j_show_and_validate_image(self):
        source = self.make_file("show.img", size=12345)
        shown = self.conductor.call("show_image", image_href="file://" + source)
        self.assertEqual(shown["size"], 12345)
        self.assertTrue(shown["no_cache"])
        node = str(uuid.uuid4())
        validated = self.conductor.call("validate_image", node_uuid=node, instance_info={"image_source": "file://" + source})
        self.assertIsNone(validated["images"]["image"]["path"])
        self.assertIsNone(validated["images"]["image"]["transfer"])
        self.assertFalse(os.path.exists(os.path.join(self.worker.images_dir, node)))


if __name__ == "__main__":
    unittest.main()
