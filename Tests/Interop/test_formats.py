"""Format inspection through the real worker (contract §3.3 steps 3 and 4): images made here by
qemu-img and served by the real nginx (and Glance), fetched with the real oslo.messaging client.
Hostile and mismatched images end in ImageUnacceptable with nothing placed; safe ones are placed
with their detected format, virtual size and source block; kernels are never inspected."""
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import time
import uuid

import harness
from harness import data_of, for_node


def qemu_img(folder, fmt, size, *options):
    path = os.path.join(folder, "%s.%s" % (uuid.uuid4().hex[:8], fmt))
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *options, path, size], check=True)
    return path


def read(path):
    with open(path, "rb") as f:
        return f.read()


def mbr_disk(boot_flag=0x00, size=1 << 20):
    """A raw disk with a protective MBR (a GPT disk as the inspector sees it)."""
    disk = bytearray(size)
    disk[446:462] = struct.pack("<B3BB3BII", boot_flag, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, 0xFFFFFFFF)
    disk[510:512] = b"\x55\xaa"
    return bytes(disk)


class FormatSuite(harness.WorkerSuite):
    """A worker, a folder for images made by qemu-img, and ways to fetch them through nginx."""

    @classmethod
    def setUpClass(cls):
        harness.require_image_servers()
        super().setUpClass()
        cls.folder = tempfile.mkdtemp(prefix="iw-formats-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.folder, ignore_errors=True)
        super().tearDownClass()

    def serve(self, data):
        name = "formats-%s.img" % uuid.uuid4().hex[:8]
        harness.publish_http("images/" + name, data)
        return "%s/images/%s" % (harness.HTTP_URL, name), hashlib.sha256(data).hexdigest()

    def fetch(self, data, **info):
        url, sha = self.serve(data)
        node = str(uuid.uuid4())
        return node, self.conductor.call("fetch_image", node_uuid=node, instance_info=dict({"image_source": url, "image_checksum": sha}, **info))

    def refused(self, data, *words, **info):
        url, sha = self.serve(data)
        node = str(uuid.uuid4())
        with self.assertRaises(Exception) as raised:
            self.conductor.call("fetch_image", node_uuid=node, instance_info=dict({"image_source": url, "image_checksum": sha}, **info))
        self.assertEqual(harness.remote_class_name(raised.exception), "ImageUnacceptable", str(raised.exception))
        for word in words:
            self.assertIn(word, str(raised.exception))
        error = data_of(self.events.wait_for(for_node(node, "baremetal.image.fetch.error")))
        self.assertEqual(error["error"]["code"], "ImageUnacceptable")
        folder = os.path.join(self.worker.images_dir, node)
        self.assertEqual(os.listdir(folder) if os.path.isdir(folder) else [], [], "a refused image left files")
        return str(raised.exception)



class FormatTests(FormatSuite):
    vhost_prefix = "formats"
    # Ironic's default list, vmdk and vhd, so that they are converted; vdi stays outside.
    worker_extra = {"conductor": {"permitted_image_formats": "raw, gpt, qcow2, iso, vmdk, vhd"}}

    @classmethod
    def setUpClass(cls):
        cls.metrics_port = harness.free_port()
        cls.worker_extra = dict(cls.worker_extra, image_worker={"metrics_address": "127.0.0.1:%d" % cls.metrics_port})
        super().setUpClass()

    def test_z_metrics_count_inspections_refusals_and_conversions(self):
        # Runs last (unittest sorts by name): every test above has counted by now.
        samples = harness.scrape(self.metrics_port)
        for name, least in (('image_worker_image_refusals_total{reason="unsafe"}', 4),
                            ('image_worker_image_refusals_total{reason="not_permitted"}', 1),
                            ('image_worker_image_refusals_total{reason="format_mismatch"}', 2),
                            ('image_worker_image_inspections_total{format="qcow2"}', 3),
                            ('image_worker_image_conversions_total{from="qcow2"}', 1),
                            ('image_worker_image_conversions_total{from="vmdk"}', 1)):
            self.assertGreaterEqual(samples.get(name, 0), least, name)

    def test_a_qcow2_with_a_backing_file_is_refused(self):
        base = qemu_img(self.folder, "raw", "1M")
        self.refused(read(qemu_img(self.folder, "qcow2", "64M", "-b", base, "-F", "raw")), "backing_file", "Image has a backing file")

    def test_a_qcow2_with_an_external_data_file_is_refused(self):
        data_file = os.path.join(self.folder, "data-%s.raw" % uuid.uuid4().hex[:6])
        self.refused(read(qemu_img(self.folder, "qcow2", "64M", "-o", "data_file=" + data_file)), "data_file")

    def test_a_flat_vmdk_descriptor_is_refused(self):
        self.refused(read(qemu_img(self.folder, "vmdk", "8M", "-o", "subformat=monolithicFlat")), "Unsupported subformat")

    def test_a_declared_raw_image_holding_a_qcow2_is_refused_naming_both(self):
        self.refused(read(qemu_img(self.folder, "qcow2", "64M")), "declared raw", "qcow2", image_disk_format="raw")

    def test_a_glance_image_declared_raw_holding_a_qcow2_is_refused(self):
        image_id = harness.glance_image(read(qemu_img(self.folder, "qcow2", "64M")))
        node = str(uuid.uuid4())
        with self.assertRaises(Exception) as raised:
            self.conductor.call("fetch_image", node_uuid=node, instance_info={"image_source": image_id})
        self.assertEqual(harness.remote_class_name(raised.exception), "ImageUnacceptable")
        self.assertIn("declared raw but its content is qcow2", str(raised.exception))

    def test_a_format_outside_the_permitted_list_is_refused(self):
        self.refused(read(qemu_img(self.folder, "vdi", "16M")), "vdi is not permitted", "permitted_image_formats: gpt, iso, qcow2, raw, vhd, vmdk")

    def converted(self, fmt, *options):
        """An image of `fmt` with known data (qemu-io), and what `qemu-img convert` makes of it."""
        source = qemu_img(self.folder, fmt, "64M", *options)
        subprocess.run(["qemu-io", "-f", fmt, "-c", "write -P 0xab 0 1M", "-c", "write -P 0xcd 30M 512k", source],
                       check=True, stdout=subprocess.DEVNULL)
        reference = source + ".raw"
        subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", source, reference], check=True)
        return read(source), read(reference)

    def assert_converted(self, fmt, data, raw):
        node, result = self.fetch(data)
        image = result["images"]["image"]
        raw_sha = hashlib.sha256(raw).hexdigest()
        self.assertEqual((image["disk_format"], image["virtual_size"], image["size"]), ("raw", len(raw), len(raw)))
        self.assertEqual(image["checksum"], {"algo": "sha256", "value": raw_sha})
        self.assertEqual(image["source"], {"disk_format": fmt, "compression": None, "size": len(data),
                                           "checksum": {"algo": "sha256", "value": hashlib.sha256(data).hexdigest()}})
        self.assertEqual(read(image["path"]), raw, "the bytes differ from qemu-img convert's")
        self.assertLess(os.stat(image["path"]).st_blocks * 512, len(raw) // 4, "the converted image is not sparse")
        info = result["instance_info"]
        self.assertEqual((info["image_disk_format"], info["image_os_hash_algo"], info["image_os_hash_value"], info["image_size"]),
                         ("raw", "sha256", raw_sha, len(raw)))
        self.assertIn("image_checksum", info)
        self.assertIsNone(info["image_checksum"])
        self.assertEqual([f for f in os.listdir(os.path.dirname(image["path"])) if f.startswith(".")], [], "staging files left")

    def test_a_qcow2_is_converted_to_raw_as_qemu_img_converts_it_sparse(self):
        self.assert_converted("qcow2", *self.converted("qcow2"))

    def test_a_vmdk_is_converted_to_raw_as_qemu_img_converts_it(self):
        self.assert_converted("vmdk", *self.converted("vmdk", "-o", "subformat=monolithicSparse"))

    def test_a_vhd_is_converted_to_raw_as_qemu_img_converts_it(self):
        self.assert_converted("vhd", *self.converted("vpc"))

    def test_a_qcow2_of_1_pib_is_refused_at_once_with_nothing_left(self):
        data = read(qemu_img(self.folder, "qcow2", "1P"))
        url, sha = self.serve(data)
        node = str(uuid.uuid4())
        with self.assertRaises(Exception) as raised:
            self.conductor.call("fetch_image", node_uuid=node, instance_info={"image_source": url, "image_checksum": sha})
        self.assertEqual(harness.remote_class_name(raised.exception), "InsufficientDiskSpace", str(raised.exception))
        folder = os.path.join(self.worker.images_dir, node)
        self.assertEqual(os.listdir(folder) if os.path.isdir(folder) else [], [])

    def test_a_zstd_frame_declaring_a_pebibyte_is_refused_for_the_free_space_at_once(self):
        started = time.monotonic()
        self.refused(zstd_frame_declaring(1 << 50), "decompressed size exceeds the free space")
        self.assertLess(time.monotonic() - started, 30)

    def test_a_gpt_disk_is_gpt_and_raw_in_instance_info(self):
        node, result = self.fetch(mbr_disk(), image_disk_format="raw")
        image = result["images"]["image"]
        self.assertEqual((image["disk_format"], image["virtual_size"]), ("gpt", 1 << 20))
        self.assertEqual(result["instance_info"]["image_disk_format"], "raw")

    def test_a_kernel_that_looks_like_a_broken_gpt_is_left_alone(self):
        kernel_url, _ = self.serve(mbr_disk(boot_flag=0x7F))
        ramdisk_url, _ = self.serve(os.urandom(4096))
        node, result = self.fetch(os.urandom(1 << 20), kernel=kernel_url, ramdisk=ramdisk_url)
        self.assertEqual(result["image_type"], "partition")
        self.assertNotIn("virtual_size", result["images"]["kernel"])
        self.assertEqual(read(result["images"]["kernel"]["path"]), mbr_disk(boot_flag=0x7F))
        # The same bytes as the disk image are refused: the kernel passed because it was not inspected.
        self.refused(mbr_disk(boot_flag=0x7F), "mbr")


class NoConversionTests(FormatSuite):
    vhost_prefix = "formats-asis"
    worker_extra = {"DEFAULT": {"force_raw_images": "false"}}

    def test_a_safe_qcow2_is_placed_as_served_with_its_format_virtual_size_and_source(self):
        data = read(qemu_img(self.folder, "qcow2", "64M"))
        node, result = self.fetch(data)
        image = result["images"]["image"]
        self.assertEqual((image["disk_format"], image["virtual_size"], image["size"]), ("qcow2", 64 << 20, len(data)))
        self.assertEqual(image["source"], {"disk_format": "qcow2", "compression": None, "size": len(data), "checksum": image["checksum"]})
        self.assertEqual(result["instance_info"]["image_disk_format"], "qcow2")
        self.assertNotIn("image_checksum", result["instance_info"])
        self.assertEqual(read(image["path"]), data)


class InspectionDisabledTests(FormatSuite):
    vhost_prefix = "formats-off"
    worker_extra = {"conductor": {"disable_deep_image_inspection": "true"}}

    def test_nothing_is_inspected_compared_or_converted(self):
        base = qemu_img(self.folder, "raw", "1M")
        data = read(qemu_img(self.folder, "qcow2", "64M", "-b", base, "-F", "raw"))
        node, result = self.fetch(data, image_disk_format="raw")
        image = result["images"]["image"]
        self.assertNotIn("virtual_size", image)
        self.assertEqual(image["disk_format"], "raw", "the declared format, unchecked")
        self.assertEqual(read(image["path"]), data, "converted although nothing was inspected")


def compressed(data, compression, *options):
    """`data` compressed by the compression's own tool, reading stdin (so zstd declares no size)."""
    tool = {"zstd": ["zstd", "-q", "-c"], "gzip": ["gzip", "-c"], "xz": ["xz", "-c"], "bzip2": ["bzip2", "-c"]}[compression]
    return subprocess.run(tool + list(options), input=data, stdout=subprocess.PIPE, check=True).stdout


def zstd_frame_declaring(size):
    """A zstd frame header that declares `size` decompressed bytes, and one empty raw block."""
    # Frame_Header_Descriptor 0xC0: an 8-byte Frame_Content_Size, a Window_Descriptor, no checksum.
    return b"\x28\xb5\x2f\xfd" + bytes([0xC0, 0x00]) + struct.pack("<Q", size) + bytes([0x01, 0x00, 0x00])


def raw_disk():
    """Random bytes, a long run of zeros (a hole once placed), random bytes."""
    return os.urandom(1 << 20) + bytes(15 << 20) + os.urandom(65536)


class CompressionTests(FormatSuite):
    """Contract §3.3 step 2 through the real worker, with [image_worker] max_image_size at 256 MiB."""
    vhost_prefix = "formats-compressed"
    max_image_size = 256 << 20
    worker_extra = {"image_worker": {"max_image_size": str(256 << 20)}}

    def assert_decompressed(self, compression):
        data = raw_disk()
        served = compressed(data, compression)
        node, result = self.fetch(served)
        image = result["images"]["image"]
        sha = hashlib.sha256(data).hexdigest()
        self.assertEqual((image["disk_format"], image["size"], image["virtual_size"]), ("raw", len(data), len(data)))
        self.assertEqual(image["checksum"], {"algo": "sha256", "value": sha})
        self.assertEqual(image["source"], {"disk_format": "raw", "compression": compression, "size": len(served),
                                           "checksum": {"algo": "sha256", "value": hashlib.sha256(served).hexdigest()}})
        self.assertEqual(read(image["path"]), data, "the decompressed bytes differ")
        self.assertLess(os.stat(image["path"]).st_blocks * 512, 4 << 20, "the zeros were written, not left as a hole")
        info = result["instance_info"]
        self.assertEqual((info["image_disk_format"], info["image_os_hash_value"], info["image_size"]), ("raw", sha, len(data)))
        self.assertIsNone(info["image_checksum"])
        self.assertEqual([f for f in os.listdir(os.path.dirname(image["path"])) if f.startswith(".")], [], "staging files left")

    def test_a_zstd_image_is_decompressed(self):
        self.assert_decompressed("zstd")

    def test_a_gzip_image_is_decompressed(self):
        self.assert_decompressed("gzip")

    def test_an_xz_image_is_decompressed(self):
        self.assert_decompressed("xz")

    def test_a_bzip2_image_is_decompressed(self):
        self.assert_decompressed("bzip2")

    def test_a_zstd_qcow2_is_decompressed_then_converted(self):
        source = qemu_img(self.folder, "qcow2", "64M")
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 2M 1M", source], check=True, stdout=subprocess.DEVNULL)
        raw = source + ".raw"
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", source, raw], check=True)
        served = compressed(read(source), "zstd")
        node, result = self.fetch(served)
        image = result["images"]["image"]
        self.assertEqual((image["disk_format"], image["size"]), ("raw", 64 << 20))
        self.assertEqual(image["source"]["disk_format"], "qcow2")
        self.assertEqual(image["source"]["compression"], "zstd")
        self.assertEqual(image["source"]["checksum"]["value"], hashlib.sha256(served).hexdigest())
        self.assertEqual(read(image["path"]), read(raw))

    def assert_bomb_refused(self, served, *words):
        started = time.monotonic()
        self.refused(served, *words)
        self.assertLess(time.monotonic() - started, 60, "the bomb was not stopped early")
        masters = os.path.join(self.worker.state_dir, "master_images")
        self.assertEqual([f for f in os.listdir(masters) if f.startswith(".staging")], [], "a staging file stayed in the cache")

    def test_a_zstd_bomb_stops_at_max_image_size_with_nothing_left(self):
        # 1 GiB of zeros in about 32 KiB, with no size declared: stopped once 256 MiB came out.
        bomb = compressed(bytes(1 << 30), "zstd")
        self.assertLess(len(bomb), 1 << 20)
        self.assert_bomb_refused(bomb, "decompressed size exceeds [image_worker] max_image_size (268435456 bytes)")

    def test_a_zstd_frame_declaring_a_pebibyte_is_refused_before_any_work(self):
        self.assert_bomb_refused(zstd_frame_declaring(1 << 50), "max_image_size")

    def test_a_truncated_gzip_image_is_refused(self):
        served = compressed(raw_disk(), "gzip")
        self.refused(served[:len(served) // 2], "gzip content does not decompress", "truncated")

    def test_a_second_node_is_a_cache_hit_on_the_converted_master(self):
        source = qemu_img(self.folder, "qcow2", "32M")
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", source], check=True, stdout=subprocess.DEVNULL)
        served = compressed(read(source), "zstd")
        url, sha = self.serve(served)
        results = []
        for _ in range(2):
            node = str(uuid.uuid4())
            results.append(self.conductor.call("fetch_image", node_uuid=node, instance_info={"image_source": url, "image_checksum": sha}))
        first, second = (r["images"]["image"] for r in results)
        self.assertEqual((first["cache"], second["cache"]), ("miss", "hit"))
        self.assertEqual(second["transfer"], "hardlink")
        self.assertEqual(os.stat(first["path"]).st_ino, os.stat(second["path"]).st_ino, "the second node's disk is not the master")
        for key in ("disk_format", "size", "virtual_size", "checksum", "source"):
            self.assertEqual(first[key], second[key], key)
        self.assertEqual(second["source"]["disk_format"], "qcow2")
        self.assertEqual(results[1]["instance_info"]["image_os_hash_value"], first["checksum"]["value"])
        # The master holds the converted bytes: the hit was judged by its source's format.
        self.assertEqual(read(second["path"])[:1 << 20], b"\x11" * (1 << 20))

    def test_a_cached_converted_master_is_still_checked_against_the_declared_format(self):
        data = read(qemu_img(self.folder, "qcow2", "16M"))
        url, sha = self.serve(data)
        self.conductor.call("fetch_image", node_uuid=str(uuid.uuid4()), instance_info={"image_source": url, "image_checksum": sha})
        node = str(uuid.uuid4())
        with self.assertRaises(Exception) as raised:
            self.conductor.call("fetch_image", node_uuid=node, instance_info={"image_source": url, "image_checksum": sha,
                                                                              "image_disk_format": "raw"})
        self.assertIn("declared raw but its content is qcow2", str(raised.exception))

    def test_a_glance_qcow2_is_converted_once_and_linked_for_the_next_node(self):
        data = read(qemu_img(self.folder, "qcow2", "16M"))
        image_id = harness.glance_image(data, properties={"disk_format": "qcow2"})
        results = [self.conductor.call("fetch_image", node_uuid=str(uuid.uuid4()), instance_info={"image_source": image_id})
                   for _ in range(2)]
        first, second = (r["images"]["image"] for r in results)
        self.assertEqual((first["cache"], second["cache"]), ("miss", "hit"))
        self.assertEqual((first["disk_format"], second["disk_format"]), ("raw", "raw"))
        self.assertEqual(second["source"]["disk_format"], "qcow2")
        self.assertEqual(os.stat(first["path"]).st_ino, os.stat(second["path"]).st_ino)


class DecompressionDisabledTests(FormatSuite):
    vhost_prefix = "formats-nodecompress"
    worker_extra = {"conductor": {"disable_zstandard_decompression": "true"}}

    def test_zstd_is_left_compressed_when_ironic_s_option_says_so_and_is_then_raw(self):
        data = raw_disk()
        served = compressed(data, "zstd")
        node, result = self.fetch(served)
        image = result["images"]["image"]
        self.assertEqual(read(image["path"]), served)
        self.assertEqual(image["source"]["compression"], None)

    def test_gzip_is_still_decompressed(self):
        data = raw_disk()
        node, result = self.fetch(compressed(data, "gzip"))
        self.assertEqual(read(result["images"]["image"]["path"]), data)
