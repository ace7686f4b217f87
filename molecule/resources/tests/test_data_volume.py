"""The packages volume: real block devices (loop devices the scenario's create.yml attached on
the controller and passed in as /dev/xvdf and /dev/xvdg), mounted by the data_volume role.

Every test leaves the host as it found it: packages on /dev/xvdf, mounted at /srv/pypi.
The boots (a restart, a missing volume) are in test_boot.py, which supervisor shares.
"""
import os
import shlex
import subprocess

import pytest

from conftest import HOST_CURL, project_playbook, run_playbook, source_of, twine_upload, wait_for_index

testinfra_hosts = ["ansible://pypi_servers"]

DATA_ROOT = "/srv/pypi"
PACKAGES = DATA_ROOT + "/packages"
DATA = "/dev/xvdf"
SPARE = "/dev/xvdg"
SITE = project_playbook("site.yml")


@pytest.fixture(scope="module")
def fstype(test_vars):
    return test_vars.get("data_volume_fstype", "ext4")


def uuid_of(host, device):
    return host.check_output(f"blkid -p -s UUID -o value {device}")


def fs_size(host):
    return int(host.check_output(f"df --block-size=1 --output=size {DATA_ROOT} | tail -1"))


def make_filesystem(host, fstype, device):
    force = "-f" if fstype == "xfs" else "-F"
    host.check_output(f"wipefs -q -a {device} && mkfs.{fstype} -q {force} {device}")


def test_packages_directory_is_on_the_mounted_volume(host, fstype):
    assert source_of(host, DATA_ROOT) == DATA
    mount = host.check_output(f"findmnt --noheadings --output FSTYPE,OPTIONS --mountpoint {DATA_ROOT}").split()
    assert mount[0] == fstype
    assert "noatime" in mount[1].split(",")
    # The packages directory is on that filesystem, not on the root disk under it.
    assert host.check_output(f"findmnt --noheadings --output TARGET --target {PACKAGES}") == DATA_ROOT
    assert host.check_output(f"blkid -p -s LABEL -o value {DATA}") == "pypi-data"
    unit = host.file("/etc/systemd/system/srv-pypi.mount").content_string
    assert f"What=/dev/disk/by-uuid/{uuid_of(host, DATA)}" in unit and "nofail" in unit
    assert host.service("srv-pypi.mount").is_enabled


def test_upload_lands_on_the_volume(host, test_vars, credentials, wheel):
    user = test_vars["cheeseshop_test_user"]
    result = twine_upload(host, test_vars, wheel["path"], user, credentials[user])
    assert result.rc == 0, result.stdout + result.stderr
    stored = f"{PACKAGES}/{os.path.basename(wheel['path'])}"
    assert host.check_output(f"findmnt --noheadings --output SOURCE --target {stored}") == DATA


# An md 1.2 superblock (4 KiB into the device) with the fields mdadm fills, and no array assembled:
# the kernel is the host's. blkid checks magic, major_version and super_offset (in sectors), and
# from util-linux 2.39 (Debian 13) sb_csum over the superblock and its max_dev roles
# (libblkid/src/superblocks/linux_raid.c): so the checksum is the kernel's calc_sb_1_csum, a
# 64-bit sum of 32-bit words with sb_csum zero, folded to 32 bits.
MD_SUPERBLOCK = r"""
import os, struct, sys, uuid
max_dev = 2
sb = bytearray(256 + 2 * max_dev)
struct.pack_into("<IIII", sb, 0, 0xa92b4efc, 1, 0, 0)          # magic, major_version
sb[16:32] = uuid.uuid4().bytes                                 # set_uuid
sb[32:44] = b"cheeseshop:0"                                     # set_name
struct.pack_into("<iiQII", sb, 72, 1, 0, 2048, 0, 2)           # level 1, size, raid_disks 2
struct.pack_into("<QQQ", sb, 128, 2048, 2048, 8)               # data_offset, data_size, super_offset
sb[168:184] = uuid.uuid4().bytes                               # device_uuid
struct.pack_into("<I", sb, 220, max_dev)                       # max_dev
struct.pack_into("<HH", sb, 256, 0, 1)                         # dev_roles
csum = sum(struct.unpack_from("<%dI" % (len(sb) // 4), sb))
struct.pack_into("<I", sb, 216, ((csum >> 32) + csum) & 0xffffffff)
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, bytes(sb), 4096)
os.fsync(fd)
os.close(fd)
"""

# What libblkid finds is the release's (the signatures above); a mount elsewhere or files under the
# mount point, the role finds the same way on every release.
REFUSALS = ["ext2 filesystem", "dos partition table", "LUKS header", "RAID member",
            pytest.param("mounted elsewhere", marks=pytest.mark.scenarios("default")),
            pytest.param("files under the mount point", marks=pytest.mark.scenarios("default"))]


@pytest.mark.parametrize("content", REFUSALS)
def test_device_holding_something_else_is_refused_and_kept(host, name, fstype, content):
    extra = {"pypi_data_device": SPARE}
    if content == "ext2 filesystem":
        make_filesystem(host, "ext2", SPARE)
        host.check_output(f"mkdir -p /mnt/spare && mount {SPARE} /mnt/spare && "
                          "head -c 100000 /dev/urandom > /mnt/spare/data && umount /mnt/spare")
        expected = "holds ext2"
    elif content == "dos partition table":
        host.check_output(f"wipefs -q -a {SPARE} && printf 'label: dos\\n,,L\\n' | "
                          f"sfdisk --quiet --no-reread --no-tell-kernel {SPARE}")
        expected = "holds a dos partition table"
    elif content == "LUKS header":
        # The start of a LUKS1 header (magic and version) is what blkid reads as an encrypted volume.
        host.check_output(f"wipefs -q -a {SPARE} && printf 'LUKS\\272\\276\\000\\001' | "
                          f"dd of={SPARE} conv=notrunc status=none")
        expected = "holds crypto_LUKS (crypto)"
    elif content == "RAID member":
        host.check_output(f"wipefs -q -a {SPARE} && python3 -c {shlex.quote(MD_SUPERBLOCK)} {SPARE}")
        # The same low-level probe the role makes: a checksum blkid rejected would test nothing.
        probed = dict(line.split("=", 1) for line in host.check_output(f"blkid -p -o export {SPARE}").splitlines())
        assert (probed.get("TYPE"), probed.get("USAGE")) == ("linux_raid_member", "raid"), probed
        expected = "holds linux_raid_member (raid), not " + fstype
    elif content == "mounted elsewhere":
        make_filesystem(host, fstype, SPARE)
        host.check_output(f"mkdir -p /mnt/spare && mount {SPARE} /mnt/spare")
        expected = "is mounted at /mnt/spare"
    else:
        # A blank device for a mount point that already holds files: mounting would hide them.
        host.check_output(f"wipefs -q -a {SPARE} && mkdir -p /srv/other && touch /srv/other/stray")
        extra.update({"data_volume_mount_point": "/srv/other", "pypi_packages_dir": "/srv/other/packages",
                      "pypi_indexes_dir": "/srv/other/indexes"})
        expected = "/srv/other is not a mount point yet but holds stray"
    before = host.check_output(f"sha256sum < {SPARE}")
    unit_before = host.file("/etc/systemd/system/srv-pypi.mount").content_string
    try:
        rc, out, _ = run_playbook(name, SITE, extra, tags="data_volume")
        assert rc == 2, out  # a failed task; 1 or 4 would be a crash or an unreachable host
        assert expected in " ".join(out.split()) and "nothing was changed" in out.lower(), out
        if content != "mounted elsewhere":  # a mounted ext4 writes its own superblock and journal
            assert host.check_output(f"sha256sum < {SPARE}") == before
        assert host.file("/etc/systemd/system/srv-pypi.mount").content_string == unit_before
        assert source_of(host, DATA_ROOT) == DATA
    finally:
        host.run("umount /mnt/spare; rm -rf /srv/other")
        if content == "RAID member":  # no md superblock left on a loop device of the host's kernel
            host.run(f"wipefs -q -a {SPARE}")


@pytest.mark.scenarios("default")
def test_volume_that_holds_packages_is_mounted_as_it_is_and_served(host, name, fstype, reader):
    """A volume from another instance: mounted, never reformatted, its packages listed on the
    page nginx serves."""
    page = f"{HOST_CURL} -u {shlex.quote(reader[0] + ':' + reader[1])} https://localhost/simple/cheeseshop-carried/"
    make_filesystem(host, fstype, SPARE)
    carried = host.check_output("/usr/local/bin/make_wheel.py cheeseshop-carried 2.0.0 /var/tmp/carried")
    host.check_output(f"mkdir -p /mnt/spare && mount {SPARE} /mnt/spare && mkdir /mnt/spare/packages && "
                      f"cp {carried} /mnt/spare/packages/ && umount /mnt/spare")
    uuid = uuid_of(host, SPARE)
    try:
        # The roles that keep something on the volume, as on the way back below.
        rc, out, _ = run_playbook(name, SITE, {"pypi_data_device": SPARE}, tags="data_volume,pypiserver,pages")
        assert rc == 0, out
        assert source_of(host, DATA_ROOT) == SPARE
        assert uuid_of(host, SPARE) == uuid
        wait_for_index(host)
        assert os.path.basename(carried) in host.check_output(page)
    finally:
        # Back to the scenario's volume, with everything uploaded to it so far: the roles that
        # keep something on the volume (its mount, the packages and pages directories) are all
        # the way back needs.
        rc, out, _ = run_playbook(name, SITE, tags="data_volume,pypiserver,pages")
        assert rc == 0, out
    assert source_of(host, DATA_ROOT) == DATA
    wait_for_index(host)
    assert host.check_output(f"{page} -o /dev/null -w '%{{http_code}}'") == "404"


def test_grown_volume_gets_a_grown_filesystem(host, name, loops, fstype):
    # Online ext4 resize needs CAP_SYS_RESOURCE, which root has on a real host; xfs_growfs
    # needs CAP_SYS_ADMIN only. Some container hosts grant no SYS_RESOURCE at all (this CI
    # machine), so the debian13 scenario (xfs) proves the growth there.
    bounding = int(host.check_output("awk '/^CapBnd/ {print $2}' /proc/1/status"), 16)
    if fstype == "ext4" and not bounding >> 24 & 1:
        pytest.skip("online ext4 resize needs CAP_SYS_RESOURCE, which this container host cannot grant")
    data = loops["data"]
    before = fs_size(host)
    grown = os.path.getsize(data["file"]) + 256 * 2 ** 20
    os.truncate(data["file"], grown)
    subprocess.run(["losetup", "--set-capacity", data["device"]], check=True)
    assert int(host.check_output(f"blockdev --getsize64 {DATA}")) == grown

    rc, out, _ = run_playbook(name, SITE, tags="data_volume")
    assert rc == 0, out
    assert fs_size(host) > before + 200 * 2 ** 20

    rc, out, _ = run_playbook(name, SITE, tags="data_volume")
    assert rc == 0 and "changed=0" in out, out
