# Copyright: cheeseshop.pypi developers
# Apache License 2.0 (see galaxy.yml)
"""Find the block device of a data volume: by EBS volume id, by the /dev/sdX name given at
attach time, or by a plain path. Pure functions over a root directory, so that unit tests can
use fake /dev and /sys trees.

On Nitro instances the kernel names an EBS volume /dev/nvmeXn1. systemd's udev rules link it
from /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id without dash>, and Debian's
amazon-ec2-utils adds the /dev/sdX (or /dev/xvdX) name given when the volume was attached.
"""

from __future__ import annotations

import os
import re
import stat

VOLUME_ID_RE = re.compile(r"^vol-[0-9a-f]{8,17}$")
ATTACH_NAME_RE = re.compile(r"^/dev/(sd|xvd)([a-z]{1,2})$")
EBS_BY_ID_PREFIX = "nvme-Amazon_Elastic_Block_Store_"


class LookupError_(Exception):
    """The device cannot be found; the message says what was looked at and what was seen."""


def _path(root, path):
    return os.path.join(root, path.lstrip("/"))


def _unroot(root, path):
    rel = os.path.relpath(path, root)
    return "/" + rel if rel != "." else "/"


def resolve(root, path):
    """The real device node behind a path (links followed), as seen from inside root."""
    return _unroot(root, os.path.realpath(_path(root, path)))


def sys_name(root, dev):
    """The kernel's name for a device node, or None when sysfs knows no block device behind it.

    Usually the node's own name. A node made under another name (a container started with
    --device /dev/loop5:/dev/xvdf) is matched by its device number instead.
    """
    name = os.path.basename(dev)
    if os.path.exists(_path(root, "/sys/class/block/" + name)):
        return name
    try:
        info = os.stat(_path(root, dev))
    except OSError:
        return None
    if not stat.S_ISBLK(info.st_mode):
        return None
    number = "%d:%d" % (os.major(info.st_rdev), os.minor(info.st_rdev))
    target = os.path.realpath(_path(root, "/sys/dev/block/" + number))
    return os.path.basename(target) if os.path.exists(target) else None


def is_block_device_name(root, dev):
    """True when sysfs knows the device (a disk or partition, loop devices too)."""
    return sys_name(root, dev) is not None


def _sys_attribute(root, dev, attribute):
    name = sys_name(root, dev)
    if name is None:
        return None
    try:
        with open(_path(root, "/sys/class/block/%s/%s" % (name, attribute))) as handle:
            return handle.read().strip()
    except OSError:
        return None


def size_bytes(root, dev):
    try:
        return int(_sys_attribute(root, dev, "size")) * 512
    except (TypeError, ValueError):
        return None


def device_number(root, dev):
    """The device number, as sysfs and /proc/self/mountinfo write it ("7:5")."""
    return _sys_attribute(root, dev, "dev")


def _unescape(field):
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def mounts(root):
    """[(major:minor, mount point)] of every mount this process sees."""
    found = []
    with open(_path(root, "/proc/self/mountinfo")) as handle:
        for line in handle:
            fields = line.split()
            if len(fields) > 4:
                found.append((fields[2], _unescape(fields[4])))
    return found


def mounted_at(root, dev):
    """Every mount point of the device."""
    number = device_number(root, dev)
    return [path for found, path in mounts(root) if number and found == number]


def mount_point_state(root, mount_point):
    """(device number mounted at the path or "", up to 20 names a mount there would hide)."""
    mount_point = os.path.normpath(mount_point)
    there = [number for number, path in mounts(root) if path == mount_point]
    if there:
        # Mounts stack: the last one listed is the one in effect.
        return there[-1], []
    directory = _path(root, mount_point)
    return "", sorted(os.listdir(directory))[:20] if os.path.isdir(directory) else []


def human_size(size):
    if size is None:
        return "size unknown"
    for unit, factor in (("GiB", 2 ** 30), ("MiB", 2 ** 20)):
        if size >= factor:
            return "%d %s" % (size // factor, unit)
    return "%d bytes" % size


def seen(root):
    """What a failed lookup reports: EBS-looking by-id links, then every whole disk and its size."""
    by_id_dir = _path(root, "/dev/disk/by-id")
    links = sorted(os.listdir(by_id_dir)) if os.path.isdir(by_id_dir) else []
    disks = []
    block_dir = _path(root, "/sys/block")
    for name in sorted(os.listdir(block_dir)) if os.path.isdir(block_dir) else []:
        disks.append("/dev/%s (%s)" % (name, human_size(size_bytes(root, name))))
    return {"by_id": [l for l in links if "-part" not in l], "disks": disks}


def _describe(root):
    found = seen(root)
    return "seen in /dev/disk/by-id: %s; disks: %s" % (
        ", ".join(found["by_id"]) or "nothing", ", ".join(found["disks"]) or "none")


def _checked(root, device, how, spec):
    """A lookup result is a node directly in /dev that sysfs knows as a block device."""
    if os.path.dirname(device) != "/dev" or not is_block_device_name(root, device):
        raise LookupError_("%s resolves to %s, which is not a block device. %s" % (spec, device, _describe(root)))
    return device, how


def find(root, spec):
    """(device, how it was found) for an EBS volume id, an attach-time name or a device path."""
    spec = spec.strip()
    if VOLUME_ID_RE.match(spec):
        link = "/dev/disk/by-id/" + EBS_BY_ID_PREFIX + spec.replace("-", "", 1)
        if os.path.exists(_path(root, link)):
            return _checked(root, resolve(root, link), "EBS volume id (%s)" % link, spec)
        raise LookupError_(
            "no device for EBS volume %s: %s does not exist. Is the volume attached to this "
            "instance, and is it a Nitro instance (NVMe)? %s" % (spec, link, _describe(root)))
    match = ATTACH_NAME_RE.match(spec)
    if match:
        letters = match.group(2)
        # amazon-ec2-utils links the attach-time name; Xen instances show /dev/xvdX for /dev/sdX.
        for candidate in (spec, "/dev/xvd" + letters, "/dev/sd" + letters):
            if os.path.exists(_path(root, candidate)):
                how = "attach name" if candidate == spec else "attach name, as %s" % candidate
                return _checked(root, resolve(root, candidate), how, spec)
        raise LookupError_(
            "no device for the attach name %s: neither it nor /dev/xvd%s exists. On Nitro "
            "instances the sdX link comes from the amazon-ec2-utils package (udev rules); give the "
            "volume id (vol-...) instead, or check the attachment. %s" % (spec, letters, _describe(root)))
    if spec.startswith("/dev/"):
        if os.path.exists(_path(root, spec)):
            return _checked(root, resolve(root, spec), "path", spec)
        raise LookupError_("%s does not exist. %s" % (spec, _describe(root)))
    raise LookupError_(
        "'%s' is neither an EBS volume id (vol-0abc...), an attach name (/dev/sdf, /dev/xvdf) nor "
        "a device path (/dev/...)" % spec)
