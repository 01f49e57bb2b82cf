"""The worker's format inspector against oslo.utils' own, on images made here and now.

Run with a Python that has oslo.utils >= 8 (deploy/test.sh makes a venv for it):

    python differential.py path/to/image-worker

Every fixture is made at test time with the real tools (qemu-img, qemu-io, sgdisk, xorriso,
mkfs.vfat), plus the hostile variants those tools refuse to make, patched in place. For each, the
worker's `image-worker inspect --json` and oslo.utils' `detect_file_format` as Ironic calls it
(an iso that is also gpt counts as iso) must agree on the format, the verdict (which safety checks
fail, or that the image cannot be inspected) and, for formats whose header declares it, the
virtual size. (For raw, gpt, qed and luks oslo.utils reports the bytes it read before it decided,
not a size; the worker reports the stream's length there, so those sizes are not compared.)
The table is printed; any disagreement fails the run.
"""
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile

from oslo_utils.imageutils import format_inspector

DECLARED_SIZE_FORMATS = {"qcow2", "vhd", "vhdx", "vmdk", "vdi", "iso"}


def run(*command, **kwargs):
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)


def patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def protective_mbr(extra_partition=False, boot_flag=0):
    mbr = bytearray(512)
    entry = struct.pack("<B3BB3BII", boot_flag, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, 0xFFFFFFFF)
    mbr[446:462] = entry
    if extra_partition:
        mbr[462:478] = struct.pack("<B3BB3BII", 0, 0, 0, 0, 0x83, 0, 0, 0, 2048, 2048)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def make_fixtures(folder):
    """Makes every fixture in `folder`; returns their paths by name, in order."""
    made = {}

    def path(name):
        made[name] = os.path.join(folder, name)
        return made[name]

    def qemu_img(name, fmt, size, *options):
        run("qemu-img", "create", "-q", "-f", fmt, *options, path(name), size)
        return made[name]

    def with_data(name, fmt):
        run("qemu-io", "-f", fmt, "-c", "write -P 0xab 0 1M", "-c", "write -P 0xcd 3M 512k", made[name])

    qemu_img("raw.img", "raw", "4M")
    with_data("raw.img", "raw")
    qemu_img("qcow2-v3.qcow2", "qcow2", "64M", "-o", "compat=1.1")
    with_data("qcow2-v3.qcow2", "qcow2")
    qemu_img("qcow2-v2.qcow2", "qcow2", "64M", "-o", "compat=0.10")
    qemu_img("qcow2-1PiB.qcow2", "qcow2", "1P")
    qemu_img("qcow2-backing-file.qcow2", "qcow2", "64M", "-b", made["raw.img"], "-F", "raw")
    qemu_img("qcow2-data-file.qcow2", "qcow2", "64M", "-o", "data_file=" + os.path.join(folder, "data-file.raw"))
    os.unlink(os.path.join(folder, "data-file.raw"))
    shutil.copy(made["qcow2-v3.qcow2"], path("qcow2-unknown-feature.qcow2"))
    patch(made["qcow2-unknown-feature.qcow2"], 0x4F, b"\x10")
    shutil.copy(made["qcow2-v3.qcow2"], path("qcow1-version.qcow2"))
    patch(made["qcow1-version.qcow2"], 4, struct.pack(">I", 1))
    qemu_img("vhd-dynamic.vhd", "vpc", "64M")
    with_data("vhd-dynamic.vhd", "vpc")
    qemu_img("vhd-fixed.vhd", "vpc", "8M", "-o", "subformat=fixed")
    qemu_img("disk.vhdx", "vhdx", "64M")
    with_data("disk.vhdx", "vhdx")
    qemu_img("monolithic-sparse.vmdk", "vmdk", "64M", "-o", "subformat=monolithicSparse")
    with_data("monolithic-sparse.vmdk", "vmdk")
    qemu_img("stream-optimized.vmdk", "vmdk", "64M", "-o", "subformat=streamOptimized")
    # qemu-img writes the grain directory's offset in the header; a streaming writer puts it in a
    # footer instead (offset ~0 in the header), which is then checked against the header.
    for name, marker_type in (("stream-optimized-footer.vmdk", 3), ("stream-optimized-bad-footer.vmdk", 7)):
        shutil.copy(made["stream-optimized.vmdk"], path(name))
        with open(made[name], "rb") as f:
            header = f.read(512)
        with open(made[name], "ab") as f:
            f.write(struct.pack("<QII", 1, 0, marker_type) + bytes(496) + header + bytes(512))
        patch(made[name], 56, b"\xff" * 8)
    qemu_img("monolithic-flat.vmdk", "vmdk", "8M", "-o", "subformat=monolithicFlat")
    os.unlink(os.path.join(folder, "monolithic-flat-flat.vmdk"))
    qemu_img("two-gb-max-extent-sparse.vmdk", "vmdk", "8M", "-o", "subformat=twoGbMaxExtentSparse")
    for extent in [f for f in os.listdir(folder) if f.startswith("two-gb-max-extent-sparse-")]:
        os.unlink(os.path.join(folder, extent))
    with open(path("descriptor-with-path.vmdk"), "w") as f:
        f.write('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicSparse"\n\n'
                '# Extent description\nRW 16384 SPARSE "/etc/shadow"\n\nddb.virtualHWVersion = "4"\n')
    with open(path("descriptor-crlf-with-path.vmdk"), "w", newline="") as f:
        f.write('# Disk DescriptorFile\r\nversion=1\r\ncreateType="monolithicSparse"\r\n#x\r\nRW 2048 FLAT "/etc/shadow" 0\r\n')
    qemu_img("disk.vdi", "vdi", "64M")
    with_data("disk.vdi", "vdi")
    qemu_img("disk.qed", "qed", "64M")
    run("qemu-img", "create", "-q", "-f", "luks", "--object", "secret,id=sec0,data=passphrase", "-o", "key-secret=sec0",
        path("luks-v1.luks"), "16M")
    shutil.copy(made["luks-v1.luks"], path("luks-v2.luks"))
    patch(made["luks-v2.luks"], 6, struct.pack(">H", 2))
    source = os.path.join(folder, "iso-source")
    os.mkdir(source)
    with open(os.path.join(source, "hello.txt"), "w") as f:
        f.write("hello\n")
    run("xorriso", "-as", "mkisofs", "-quiet", "-o", path("plain.iso"), source)
    shutil.copy(made["plain.iso"], path("iso-with-gpt.iso"))
    patch(made["iso-with-gpt.iso"], 0, protective_mbr())
    run("truncate", "-s", "8M", path("gpt.img"))
    run("sgdisk", "-n", "1:2048:0", "-t", "1:8300", made["gpt.img"])
    shutil.copy(made["gpt.img"], path("gpt-extra-partition.img"))
    patch(made["gpt-extra-partition.img"], 0, protective_mbr(extra_partition=True))
    shutil.copy(made["gpt.img"], path("gpt-bad-boot-flag.img"))
    patch(made["gpt-bad-boot-flag.img"], 0, protective_mbr(boot_flag=0x7F))
    run("truncate", "-s", "8M", path("mbr-two-partitions.img"))
    mbr = bytearray(512)
    mbr[446:462] = struct.pack("<B3BB3BII", 0x80, 0, 0, 0, 0x83, 0, 0, 0, 2048, 4096)
    mbr[462:478] = struct.pack("<B3BB3BII", 0, 0, 0, 0, 0x83, 0, 0, 0, 6144, 4096)
    mbr[510:512] = b"\x55\xaa"
    patch(made["mbr-two-partitions.img"], 0, bytes(mbr))
    run("truncate", "-s", "16M", path("fat.img"))
    run("mkfs.vfat", made["fat.img"])
    shutil.copy(made["qcow2-v3.qcow2"], path("qcow2-and-mbr.qcow2"))
    patch(made["qcow2-and-mbr.qcow2"], 446, protective_mbr()[446:])
    open(path("empty.img"), "wb").close()
    with open(path("tiny.img"), "wb") as f:
        f.write(b"abc")
    with open(path("text.txt"), "w") as f:
        f.write("just some text, not a descriptor\n" * 100)
    return made


def oslo_verdict(path):
    """What Ironic gets from oslo.utils: detect_file_format (iso beats gpt), then safety_check."""
    def detect():
        with open(path, "rb") as f:
            wrapper = format_inspector.InspectWrapper(f)
            try:
                for _ in format_inspector._chunked_reader(wrapper, 4096):
                    found = pick(wrapper)
                    if found:
                        return found
            finally:
                wrapper.close()
            return pick(wrapper)

    def pick(wrapper):
        try:
            return wrapper.format
        except format_inspector.ImageFormatError:
            names = {str(x) for x in wrapper.formats or []}
            if names == {"iso", "gpt"}:
                return [x for x in wrapper.formats if str(x) == "iso"][0]
            raise

    verdict = {"format": None, "failures": [], "problem": False, "virtual_size": None}
    try:
        inspector = detect()
    except Exception as error:  # noqa: BLE001 - any exception means Ironic refuses the image
        verdict["problem"] = str(error) or repr(error)
        return verdict
    verdict["format"] = str(inspector)
    try:
        inspector.safety_check()
    except format_inspector.SafetyCheckFailed as failed:
        verdict["failures"] = sorted(failed.failures)
    except Exception as error:  # noqa: BLE001
        verdict["problem"] = str(error) or repr(error)
    try:
        verdict["virtual_size"] = inspector.virtual_size
    except Exception as error:  # noqa: BLE001
        verdict["problem"] = verdict["problem"] or repr(error)
    return verdict


def worker_verdict(binary, path):
    completed = subprocess.run([binary, "inspect", "--json", path], capture_output=True, text=True)
    if completed.returncode not in (0, 1):
        raise AssertionError("image-worker inspect %s exited %d: %s" % (path, completed.returncode, completed.stderr))
    report = json.loads(completed.stdout)
    failed_checks = sorted(f["check"] for f in report["failures"])
    problem = [r for r in report["reasons"] if not any(r.startswith(c + ": ") for c in failed_checks)]
    return {"format": report.get("format"), "failures": failed_checks, "problem": problem[0] if problem else False,
            "virtual_size": report.get("virtual_size"), "safe": report["safe"]}


def main():
    logging.disable(logging.CRITICAL)  # oslo.utils logs every failed check; the table says it
    binary = os.path.abspath(sys.argv[1])
    folder = tempfile.mkdtemp(prefix="iw-formats-")
    try:
        fixtures = make_fixtures(folder)
        rows, disagreements = [], []
        for name, path in fixtures.items():
            ours, theirs = worker_verdict(binary, path), oslo_verdict(path)
            same = (ours["format"] == theirs["format"] and ours["failures"] == theirs["failures"]
                    and bool(ours["problem"]) == bool(theirs["problem"])
                    and ours["safe"] == (not theirs["problem"] and not theirs["failures"] and theirs["format"] is not None))
            if same and theirs["format"] in DECLARED_SIZE_FORMATS and not theirs["problem"]:
                same = ours["virtual_size"] == theirs["virtual_size"]

            def show(v):
                verdict = "refused: " + ",".join(v["failures"]) if v["failures"] else ("error" if v["problem"] else "safe")
                size = v["virtual_size"] if v["format"] in DECLARED_SIZE_FORMATS else "-"
                return "%-6s %-28s %s" % (v["format"], verdict, size)
            rows.append((name, show(ours), show(theirs), "ok" if same else "DIFFERENT"))
            if not same:
                disagreements.append((name, ours, theirs))
        print("%-34s | %-52s | %-52s | %s" % ("fixture", "image-worker (format, verdict, virtual size)", "oslo.utils", ""))
        for row in rows:
            print("%-34s | %-52s | %-52s | %s" % row)
        for name, ours, theirs in disagreements:
            print("\n%s:\n  image-worker: %s\n  oslo.utils:   %s" % (name, ours, theirs))
        print("\n%d fixtures, %d disagreements" % (len(rows), len(disagreements)))
        return 1 if disagreements else 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
