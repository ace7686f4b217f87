"""data_device_info: the module's probe against real images (blkid reads regular files too)."""
import shutil
import subprocess

import pytest

from ansible_collections.cheeseshop.pypi.plugins.modules import data_device_info as mod

pytestmark = pytest.mark.skipif(not shutil.which("blkid"), reason="blkid (util-linux) is needed")


class FakeModule:
    """What probe() uses of AnsibleModule, running the real commands."""

    def get_bin_path(self, name, required=False):
        return shutil.which(name) or "/usr/sbin/" + name

    def run_command(self, args):
        run = subprocess.run(args, capture_output=True, text=True, check=False)
        return run.returncode, run.stdout, run.stderr

    def fail_json(self, **kwargs):
        raise AssertionError(kwargs["msg"])


def image(tmp_path, name, mib=20):
    path = tmp_path / name
    with open(path, "wb") as handle:
        handle.truncate(mib * 2 ** 20)
    return str(path)


def test_blank_device_holds_nothing(tmp_path):
    assert mod.probe(FakeModule(), image(tmp_path, "blank")) == {}


@pytest.mark.skipif(not shutil.which("mkfs.ext4"), reason="e2fsprogs is needed")
def test_ext4_is_reported_with_its_uuid(tmp_path):
    path = image(tmp_path, "ext4")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-U", "0c9a8f5e-1d2b-4c3d-9e8f-7a6b5c4d3e2f", path], check=True)
    found = mod.probe(FakeModule(), path)
    assert found["TYPE"] == "ext4" and found["UUID"] == "0c9a8f5e-1d2b-4c3d-9e8f-7a6b5c4d3e2f"


def test_partition_table_is_reported(tmp_path):
    """A DOS (MBR) table with one Linux partition, written by hand: no fdisk needed."""
    path = image(tmp_path, "mbr")
    entry = bytes([0x00, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (20480).to_bytes(4, "little")
    with open(path, "r+b") as handle:
        handle.seek(446)
        handle.write(entry)
        handle.seek(510)
        handle.write(b"\x55\xaa")
    assert mod.probe(FakeModule(), path).get("PTTYPE") == "dos"


def test_unreadable_or_missing_device_is_never_called_blank(tmp_path):
    with pytest.raises(AssertionError, match="cannot read"):
        mod.readable(FakeModule(), str(tmp_path / "missing"))
    with pytest.raises(AssertionError, match="not a block device"):
        mod.readable(FakeModule(), image(tmp_path, "file"))
    mod.readable(FakeModule(), image(tmp_path, "file2"), block_only=False)
