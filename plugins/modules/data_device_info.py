#!/usr/bin/python
# Copyright: cheeseshop.pypi developers
# Apache License 2.0 (see galaxy.yml)
"""Find a data volume's block device and say what it holds, changing nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: data_device_info
short_description: Find the block device of a data volume and probe what it holds
description:
  - Resolves O(device) to a block device. It may be an EBS volume id (C(vol-0abc...)),
    found through C(/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol...). It may be the
    name given when the volume was attached (C(/dev/sdf), C(/dev/xvdf)), through the link Debian's
    C(amazon-ec2-utils) makes, or the Xen C(xvd) name. Or it may be a device path.
  - Probes the device with C(blkid -p) and reports its filesystem type, UUID and partition
    table type, so that a role can refuse a device holding something unexpected before
    changing anything.
  - When the device cannot be found it fails with a message listing the by-id links and the
    disks it saw.
  - Read-only; supports check mode.
version_added: 0.2.0
author: cheeseshop.pypi developers (@cheeseshop)
options:
  device:
    description: EBS volume id, attach-time name or device path.
    type: str
    required: true
  mount_point:
    description:
      - The directory the device is meant to be mounted at. When given, the module also says
        what is mounted there now and, when nothing is, what the directory holds.
    type: path
  root:
    description: Root of the /dev and /sys trees to look in (for tests); C(/) on a real host.
    type: path
    default: /
notes:
  - Needs C(blkid) (util-linux), present on every Debian and Ubuntu host.
"""

EXAMPLES = r"""
- name: Find the packages volume
  cheeseshop.pypi.data_device_info:
    device: vol-0abc123def4567890
  register: data_device
"""

RETURN = r"""
device:
  description: The block device node.
  returned: success
  type: str
  sample: /dev/nvme1n1
found_by:
  description: How it was found.
  returned: success
  type: str
  sample: EBS volume id (/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc123def4567890)
size_bytes:
  description: Size from sysfs.
  returned: success
  type: int
fstype:
  description: Filesystem type; empty when there is none.
  returned: success
  type: str
  sample: ext4
uuid:
  description: Filesystem UUID; empty when there is none.
  returned: success
  type: str
pttype:
  description: Partition table type (gpt or dos); empty when there is none.
  returned: success
  type: str
usage:
  description: What blkid says the signature is (filesystem, raid, crypto or other).
  returned: success
  type: str
mounted_at:
  description: Every place the device is mounted now.
  returned: success
  type: list
  elements: str
  sample: [/srv/pypi]
mount_point_device:
  description: Device number (C(major:minor)) of what is mounted at O(mount_point); empty when
    nothing is mounted there.
  returned: when O(mount_point) is given
  type: str
  sample: "259:1"
mount_point_entries:
  description: Up to 20 names inside O(mount_point) when nothing is mounted there (files that a
    mount would hide); empty when it is a mount point or does not exist.
  returned: when O(mount_point) is given
  type: list
  elements: str
"""

import os
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cheeseshop.pypi.plugins.module_utils import block_device


def readable(module, device, block_only=True):
    """blkid exits 2 both for "no signature" and for a device it cannot read: so read first."""
    try:
        mode = os.stat(device).st_mode
        os.close(os.open(device, os.O_RDONLY))
    except OSError as exc:
        module.fail_json(msg="cannot read %s: %s" % (device, exc.strerror))
    if block_only and not stat.S_ISBLK(mode):
        module.fail_json(msg="%s is not a block device" % device)


def probe(module, device):
    """blkid's low-level probe: {} when the device holds no signature at all (exit code 2)."""
    blkid = module.get_bin_path("blkid", required=True)
    rc, out, err = module.run_command([blkid, "-p", "-o", "export", device])
    if rc == 2 and not err.strip():
        return {}
    if rc != 0:
        module.fail_json(msg="blkid could not probe %s: %s" % (device, (err or out).strip()))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            device=dict(type="str", required=True),
            mount_point=dict(type="path"),
            root=dict(type="path", default="/"),
        ),
        supports_check_mode=True,
    )
    root = module.params["root"]
    try:
        device, how = block_device.find(root, module.params["device"])
    except block_device.LookupError_ as exc:
        module.fail_json(msg=str(exc), seen=block_device.seen(root))
    node = block_device._path(root, device)
    # Test trees (another root) stand regular files in for device nodes.
    readable(module, node, block_only=root == "/")
    found = probe(module, node)
    extra = {}
    if module.params["mount_point"]:
        number, entries = block_device.mount_point_state(root, module.params["mount_point"])
        extra = dict(mount_point_device=number, mount_point_entries=entries)
    module.exit_json(
        changed=False,
        device=device,
        found_by=how,
        size_bytes=block_device.size_bytes(root, device),
        fstype=found.get("TYPE", ""),
        uuid=found.get("UUID", ""),
        pttype=found.get("PTTYPE", ""),
        usage=found.get("USAGE", ""),
        mounted_at=block_device.mounted_at(root, device),
        **extra
    )


if __name__ == "__main__":
    main()
