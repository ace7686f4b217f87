"""Device lookup over fake /dev and /sys trees, laid out as udev and the kernel lay them out."""
import os

import pytest

from ansible_collections.cheeseshop.pypi.plugins.module_utils import block_device as bd

VOL = "vol-0abc123def4567890"


def disk(root, name, gib=8):
    """A whole disk: a /dev node (a plain file stands in) and its /sys entries."""
    (root / "dev").mkdir(exist_ok=True)
    (root / "dev" / name).write_text("")
    for base in ("sys/class/block", "sys/block"):
        entry = root / base / name
        entry.mkdir(parents=True, exist_ok=True)
        (entry / "size").write_text(str(gib * 2 ** 30 // 512))


def link(root, path, target):
    """A relative symlink, as udev makes them."""
    full = root / path.lstrip("/")
    full.parent.mkdir(parents=True, exist_ok=True)
    full.symlink_to(os.path.relpath(root / target.lstrip("/"), full.parent))


@pytest.fixture
def nitro(tmp_path):
    """A Nitro instance: root disk nvme0n1, the data volume nvme1n1 with its by-id links."""
    disk(tmp_path, "nvme0n1", 8)
    disk(tmp_path, "nvme1n1", 20)
    link(tmp_path, "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0aaaa0000bbbb1111", "/dev/nvme0n1")
    link(tmp_path, "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc123def4567890", "/dev/nvme1n1")
    link(tmp_path, "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc123def4567890-part1", "/dev/nvme1n1")
    return tmp_path


def test_volume_id_finds_the_nvme_device(nitro):
    device, how = bd.find(str(nitro), VOL)
    assert device == "/dev/nvme1n1" and "EBS volume id" in how


def test_unknown_volume_id_lists_what_was_seen(nitro):
    with pytest.raises(bd.LookupError_) as err:
        bd.find(str(nitro), "vol-0fffffffffffffff0")
    message = str(err.value)
    assert "nvme-Amazon_Elastic_Block_Store_vol0abc123def4567890" in message
    assert "-part1" not in message
    assert "/dev/nvme1n1 (20 GiB)" in message and "/dev/nvme0n1 (8 GiB)" in message


def test_attach_name_from_amazon_ec2_utils_link(nitro):
    link(nitro, "/dev/sdf", "/dev/nvme1n1")
    assert bd.find(str(nitro), "/dev/sdf") == ("/dev/nvme1n1", "attach name")


def test_attach_name_on_xen_is_xvd(tmp_path):
    disk(tmp_path, "xvda", 8)
    disk(tmp_path, "xvdf", 20)
    device, how = bd.find(str(tmp_path), "/dev/sdf")
    assert device == "/dev/xvdf" and "as /dev/xvdf" in how


def test_attach_name_without_ec2_utils_on_nitro_says_what_to_do(nitro):
    with pytest.raises(bd.LookupError_) as err:
        bd.find(str(nitro), "/dev/sdf")
    assert "amazon-ec2-utils" in str(err.value) and "vol-" in str(err.value)


def test_plain_path_and_loop_device(tmp_path):
    disk(tmp_path, "loop3", 1)
    link(tmp_path, "/dev/disk/by-uuid/1234-abcd", "/dev/loop3")
    assert bd.find(str(tmp_path), "/dev/loop3") == ("/dev/loop3", "path")
    assert bd.find(str(tmp_path), "/dev/disk/by-uuid/1234-abcd") == ("/dev/loop3", "path")


def test_path_that_is_not_a_block_device_is_refused(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "null").write_text("")
    with pytest.raises(bd.LookupError_, match="is not a block device"):
        bd.find(str(tmp_path), "/dev/null")


def test_missing_path_and_nonsense_are_refused(tmp_path):
    with pytest.raises(bd.LookupError_, match="does not exist"):
        bd.find(str(tmp_path), "/dev/sdz9")
    with pytest.raises(bd.LookupError_, match="neither an EBS volume id"):
        bd.find(str(tmp_path), "data-volume")


def test_size_is_read_from_sysfs(nitro):
    assert bd.size_bytes(str(nitro), "/dev/nvme1n1") == 20 * 2 ** 30
    assert bd.size_bytes(str(nitro), "/dev/nothing") is None


def test_sizes_in_the_report(tmp_path):
    disk(tmp_path, "loop0", 0)
    disk(tmp_path, "vdb", 1)
    assert bd.seen(str(tmp_path))["disks"] == ["/dev/loop0 (0 bytes)", "/dev/vdb (1 GiB)"]
    assert bd.human_size(None) == "size unknown" and bd.human_size(5 * 2 ** 20) == "5 MiB"


def test_link_to_a_file_named_like_a_disk_is_refused(tmp_path):
    """Only the name is in sysfs: the node itself must sit directly in /dev."""
    disk(tmp_path, "sdb", 1)
    (tmp_path / "dev" / "shm").mkdir()
    (tmp_path / "dev" / "shm" / "sdb").write_text("")
    link(tmp_path, "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc123def4567890", "/dev/shm/sdb")
    with pytest.raises(bd.LookupError_, match="not a block device"):
        bd.find(str(tmp_path), VOL)


def mountinfo(root, *lines):
    path = root / "proc" / "self" / "mountinfo"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def test_device_number_and_where_it_is_mounted(tmp_path):
    disk(tmp_path, "nvme1n1")
    (tmp_path / "sys/class/block/nvme1n1/dev").write_text("259:1\n")
    mountinfo(
        tmp_path,
        "22 1 259:0 / / rw,relatime - ext4 /dev/nvme0n1p1 rw",
        r"40 22 259:1 / /srv/pypi\040data rw,noatime - ext4 /dev/nvme1n1 rw",
        "41 22 259:1 / /mnt rw,noatime - ext4 /dev/nvme1n1 rw",
    )
    assert bd.device_number(str(tmp_path), "/dev/nvme1n1") == "259:1"
    assert bd.mounted_at(str(tmp_path), "/dev/nvme1n1") == ["/srv/pypi data", "/mnt"]


def test_mount_point_state_says_what_a_mount_would_hide(tmp_path):
    mountinfo(tmp_path, "22 1 259:0 / / rw - ext4 /dev/root rw", "40 22 7:5 / /srv/pypi rw - ext4 /dev/loop5 rw",
              "41 22 7:6 / /srv/pypi rw - xfs /dev/loop6 rw")
    # Stacked mounts: the last one is in effect.
    assert bd.mount_point_state(str(tmp_path), "/srv/pypi/") == ("7:6", [])
    (tmp_path / "srv/other/packages").mkdir(parents=True)
    assert bd.mount_point_state(str(tmp_path), "/srv/other") == ("", ["packages"])
    assert bd.mount_point_state(str(tmp_path), "/srv/none") == ("", [])


def test_renamed_node_is_found_by_its_device_number(tmp_path, monkeypatch):
    """docker run --device /dev/loop5:/dev/xvdf: no /sys/class/block/xvdf, but 7:5 is loop5."""
    disk(tmp_path, "loop5", 1)
    (tmp_path / "sys/class/block/loop5/dev").write_text("7:5\n")
    link(tmp_path, "/sys/dev/block/7:5", "/sys/class/block/loop5")
    (tmp_path / "dev/xvdf").write_text("")
    real_stat = os.stat

    def fake_stat(path, *args, **kwargs):
        if str(path).endswith("/dev/xvdf"):
            return os.stat_result((0o60600, 0, 0, 1, 0, 0, 0, 0, 0, 0))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(bd.os, "stat", fake_stat)
    monkeypatch.setattr(bd.os, "major", lambda number: 7)
    monkeypatch.setattr(bd.os, "minor", lambda number: 5)
    assert bd.sys_name(str(tmp_path), "/dev/xvdf") == "loop5"
    assert bd.find(str(tmp_path), "/dev/sdf") == ("/dev/xvdf", "attach name, as /dev/xvdf")
    assert bd.size_bytes(str(tmp_path), "/dev/xvdf") == 2 ** 30
    assert bd.device_number(str(tmp_path), "/dev/xvdf") == "7:5"
