"""The master image cache across real worker processes, against the real nginx."""
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import uuid

import harness
from harness import data_of, for_node


class CacheTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_environment()
        harness.require_image_servers()
        if not harness.NGINX_ACCESS_LOG:
            raise (AssertionError if harness.CI else unittest.SkipTest)("IMAGE_WORKER_TEST_NGINX_ACCESS_LOG is not set")
        cls.vhost = harness.new_vhost("cache")
        cls.shared = tempfile.mkdtemp(prefix="iw-cache-")
        cls.conductor = harness.Conductor(cls.vhost)
        cls.events = harness.EventListener(cls.vhost)

    @classmethod
    def tearDownClass(cls):
        cls.events.stop()
        cls.conductor.close()
        shutil.rmtree(cls.shared, ignore_errors=True)

    def setUp(self):
        self.workers = []

    def tearDown(self):
        for worker in self.workers:
            worker.cleanup()

    def worker(self, masters, images=None):
        extra = {"pxe": {"instance_master_path": masters}}
        if images:
            extra["image_worker"] = {"images_dir": images}
        worker = harness.Worker(self.vhost, allowed_paths=[self.shared], extra=extra)
        self.workers.append(worker)
        return worker.start()

    def image(self, folder="images", size=2 << 20):
        name = "cache-%s.img" % uuid.uuid4().hex[:8]
        data = os.urandom(size)
        harness.publish_http("%s/%s" % (folder, name), data)
        return name, data, hashlib.sha256(data).hexdigest()

    def wait_for_ends(self, nodes, timeout=120):
        return [data_of(self.events.wait_for(for_node(node, "baremetal.image.fetch.end"), timeout=timeout)) for node in nodes]

    def test_twenty_tasks_in_one_worker_cause_one_download(self):
        masters = tempfile.mkdtemp(prefix="iw-masters-", dir=self.shared)
        self.worker(masters)
        name, data, sha = self.image(size=8 << 20)
        nodes = [str(uuid.uuid4()) for _ in range(20)]
        for node in nodes:
            self.conductor.cast("fetch_image", node_uuid=node, instance_info={
                "image_source": "%s/images/%s" % (harness.HTTP_URL, name), "image_checksum": sha})
        results = self.wait_for_ends(nodes)
        self.assertEqual(harness.nginx_requests("GET", "/images/" + name, 200), 1)
        images = [result["images"]["image"] for result in results]
        self.assertEqual(sorted(image["cache"] for image in images), ["hit"] * 19 + ["miss"])
        self.assertTrue(all(image["transfer"] == ("download" if image["cache"] == "miss" else "hardlink") for image in images))
        self.assertTrue(all(image["verified"] and image["checksum"]["value"] == sha for image in images))
        inodes = {os.stat(image["path"]).st_ino for image in images}
        self.assertEqual(len(inodes), 1, "every node's disk is a link of one master")

    def test_two_worker_processes_sharing_the_cache_cause_one_download(self):
        masters = tempfile.mkdtemp(prefix="iw-masters-", dir=self.shared)
        first, second = self.worker(masters), self.worker(masters)
        name, _, sha = self.image(size=8 << 20)
        nodes = []
        for worker in (first, second):
            for _ in range(10):
                node = str(uuid.uuid4())
                nodes.append(node)
                self.conductor.cast("fetch_image", server=worker.host, node_uuid=node, instance_info={
                    "image_source": "%s/images/%s" % (harness.HTTP_URL, name), "image_checksum": sha})
        results = self.wait_for_ends(nodes)
        self.assertEqual(harness.nginx_requests("GET", "/images/" + name, 200), 1)
        self.assertEqual(sum(1 for r in results if r["images"]["image"]["cache"] == "miss"), 1)

    def test_a_worker_killed_mid_download_leaves_nothing_and_the_task_completes_after_restart(self):
        masters = tempfile.mkdtemp(prefix="iw-masters-", dir=self.shared)
        images = tempfile.mkdtemp(prefix="iw-images-", dir=self.shared)
        name, data, sha = self.image(folder="slow", size=96 << 20)  # 6 s at 16 MiB/s
        victim = self.worker(masters, images)
        node = str(uuid.uuid4())
        self.conductor.cast("fetch_image", node_uuid=node, instance_info={
            "image_source": "%s/slow/%s" % (harness.HTTP_URL, name), "image_checksum": sha})
        deadline = time.time() + 30
        while time.time() < deadline and not any(e.startswith(".staging-") for e in os.listdir(masters)):
            time.sleep(0.05)
        time.sleep(1)
        staging = [e for e in os.listdir(masters) if e.startswith(".staging-")]
        self.assertTrue(staging, "the download never started")
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        self.assertFalse(os.path.exists(os.path.join(images, node, "disk")), "a partial disk under its final name")
        survivor = self.worker(masters, images)
        result = self.wait_for_ends([node])[0]
        self.assertEqual(result["images"]["image"]["size"], len(data))
        self.assertTrue(result["images"]["image"]["verified"])
        with open(os.path.join(images, node, "disk"), "rb") as disk:
            self.assertEqual(hashlib.sha256(disk.read()).hexdigest(), sha)
        self.assertEqual([e for e in os.listdir(masters) if e.startswith(".staging-")], [], "the dead worker's staging file stayed")
        self.assertEqual([e for e in os.listdir(os.path.join(images, node)) if e != "disk"], [])
        self.assertIn("removed staging files left in the image cache", survivor.log_text())

    def test_changed_validators_mean_a_new_download_unchanged_ones_a_hit(self):
        masters = tempfile.mkdtemp(prefix="iw-masters-", dir=self.shared)
        self.worker(masters)
        name, _, sha = self.image()
        href = "%s/images/%s" % (harness.HTTP_URL, name)
        first = self.conductor.call("fetch_image", node_uuid=str(uuid.uuid4()), instance_info={"image_source": href, "image_checksum": sha})
        heads = harness.nginx_requests("HEAD", "/images/" + name)
        second = self.conductor.call("fetch_image", node_uuid=str(uuid.uuid4()), instance_info={"image_source": href, "image_checksum": sha})
        self.assertEqual((first["images"]["image"]["cache"], second["images"]["image"]["cache"]), ("miss", "hit"))
        self.assertEqual(harness.nginx_requests("GET", "/images/" + name, 200), 1, "a hit must not GET the body")
        self.assertEqual(harness.nginx_requests("HEAD", "/images/" + name), heads + 1, "a hit revalidates with HEAD")
        time.sleep(1.1)  # a new Last-Modified second, and with it a new ETag
        data = os.urandom(2 << 20)
        harness.publish_http("images/" + name, data)
        third = self.conductor.call("fetch_image", node_uuid=str(uuid.uuid4()), instance_info={
            "image_source": href, "image_checksum": hashlib.sha256(data).hexdigest()})
        self.assertEqual(third["images"]["image"]["cache"], "miss")
        self.assertEqual(harness.nginx_requests("GET", "/images/" + name, 200), 2)

    def test_no_store_images_bypass_the_cache(self):
        masters = tempfile.mkdtemp(prefix="iw-masters-", dir=self.shared)
        self.worker(masters)
        name, _, sha = self.image(folder="nostore")
        result = self.conductor.call("fetch_image", node_uuid=str(uuid.uuid4()), instance_info={
            "image_source": "%s/nostore/%s" % (harness.HTTP_URL, name), "image_checksum": sha})
        self.assertEqual((result["images"]["image"]["cache"], result["images"]["image"]["transfer"]), ("bypass", "download"))
        self.assertEqual([e for e in os.listdir(masters) if not e.startswith(".")], [])

    def test_insufficient_disk_space_on_a_small_file_system(self):
        mount = tempfile.mkdtemp(prefix="iw-small-", dir=self.shared)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mount], check=True)
        try:
            worker = self.worker(os.path.join(mount, "masters"), os.path.join(mount, "images"))
            name, _, sha = self.image(size=40 << 20)
            node = str(uuid.uuid4())
            with self.assertRaises(Exception) as raised:
                self.conductor.call("fetch_image", node_uuid=node, instance_info={
                    "image_source": "%s/images/%s" % (harness.HTTP_URL, name), "image_checksum": sha})
            self.assertEqual(harness.remote_class_name(raised.exception), "InsufficientDiskSpace")
            self.assertIn("doesn't have enough disk space", str(raised.exception))
            self.assertIn(os.path.join(mount, "masters"), str(raised.exception))
            error = data_of(self.events.wait_for(for_node(node, "baremetal.image.fetch.error")))
            self.assertEqual(error["error"]["code"], "InsufficientDiskSpace")
            leftovers = [os.path.join(d, f) for d, _, files in os.walk(mount) for f in files if not f.endswith(".lock")]
            self.assertEqual(leftovers, [])
            worker.stop()
        finally:
            subprocess.run(["umount", mount], check=False)

    def test_concurrent_downloads_reserve_their_space_on_a_small_file_system(self):
        # 40 MiB free, two 24 MiB images at 16 MB/s each: both fit alone, not together. Each
        # download reserves its size while it runs, so the second one is refused at once with
        # InsufficientDiskSpace, and the first completes (without the reservations both would start,
        # and both would fail on a full disk midway).
        mount = tempfile.mkdtemp(prefix="iw-small-", dir=self.shared)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", mount], check=True)
        try:
            worker = self.worker(os.path.join(mount, "masters"), os.path.join(mount, "images"))
            images = [self.image(folder="slow", size=24 << 20) for _ in range(2)]
            nodes = [str(uuid.uuid4()) for _ in images]
            for node, (name, _, sha) in zip(nodes, images):
                self.conductor.cast("fetch_image", node_uuid=node, instance_info={
                    "image_source": "%s/slow/%s" % (harness.HTTP_URL, name), "image_checksum": sha})
            outcomes = {}
            for node in nodes:
                event = self.events.wait_for(lambda e, node=node: data_of(e).get("node_uuid") == node and e["event_type"] in (
                    "baremetal.image.fetch.end", "baremetal.image.fetch.error"), timeout=120)
                outcomes[node] = (event["event_type"], data_of(event).get("error", {}).get("code"))
            self.assertEqual(sorted(outcomes.values()), [("baremetal.image.fetch.end", None),
                                                         ("baremetal.image.fetch.error", "InsufficientDiskSpace")], outcomes)
            refused = next(node for node, outcome in outcomes.items() if outcome[1])
            self.assertFalse(os.path.exists(os.path.join(mount, "images", refused, "disk")))
            staging = [f for _, _, files in os.walk(mount) for f in files if f.startswith(".staging-")]
            self.assertEqual(staging, [])
            worker.stop()
        finally:
            subprocess.run(["umount", mount], check=False)

    def test_clean_up_cache_removes_only_unlinked_masters(self):
        masters = tempfile.mkdtemp(prefix="iw-masters-", dir=self.shared)
        self.worker(masters)
        (name_a, _, sha_a), (name_b, _, sha_b) = self.image(), self.image()
        node_a, node_b = str(uuid.uuid4()), str(uuid.uuid4())
        for node, name, sha in ((node_a, name_a, sha_a), (node_b, name_b, sha_b)):
            self.conductor.call("fetch_image", node_uuid=node, instance_info={
                "image_source": "%s/images/%s" % (harness.HTTP_URL, name), "image_checksum": sha})
        self.conductor.call("delete_images", node_uuid=node_a)
        report = self.conductor.call("clean_up_cache", amount=1 << 40)
        self.assertEqual(report["removed"], 1)
        self.assertEqual(report["freed_bytes"], 2 << 20)
        remaining = [e for e in os.listdir(masters) if not e.startswith(".") and not e.endswith(".json")]
        self.assertEqual(len(remaining), 1)
        # The fanout cast reaches every worker and is harmless on an empty selection.
        self.conductor.client.prepare(fanout=True).cast(self.conductor.context(), "clean_up_cache")


if __name__ == "__main__":
    unittest.main()
