#!/usr/bin/env python3
"""Write a minimal, valid pure-Python wheel without any build backend.

Tests need real distributions to upload and install, quickly and offline:
    make_wheel.py NAME VERSION OUTDIR [NOTE]   -> prints the wheel's path
The wheel holds one module, named after the project, whose VERSION matches and whose NOTE
is the optional fourth argument (two wheels of one version that differ in content).
With PAYLOAD_MB=N in the environment the wheel also carries N MiB of random bytes (stored, not
compressed), for upload-size tests; with REQUIRES_PYTHON=SPEC or REQUIRES_DIST=REQUIREMENT its
metadata says Requires-Python or Requires-Dist.
"""
import base64
import hashlib
import os
import re
import sys
import zipfile
from pathlib import Path


def record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def main(name, version, outdir, note=""):
    dist = re.sub(r"[-_.]+", "_", name).lower()
    module = dist
    dist_info = f"{dist}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'VERSION = "{version}"\nNOTE = "{note}"\n'.encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            "Summary: cheeseshop.pypi test package\n"
            + (f"Requires-Python: {os.environ['REQUIRES_PYTHON']}\n" if os.environ.get("REQUIRES_PYTHON") else "")
            + (f"Requires-Dist: {os.environ['REQUIRES_DIST']}\n" if os.environ.get("REQUIRES_DIST") else "")
        ).encode(),
        f"{dist_info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: cheeseshop-make-wheel\n"
            "Root-Is-Purelib: true\nTag: py3-none-any\n"
        ).encode(),
    }
    payload_mb = int(os.environ.get("PAYLOAD_MB", "0"))
    if payload_mb:
        files[f"{module}/payload.bin"] = os.urandom(payload_mb * 1024 * 1024)
    record = [record_line(p, d) for p, d in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = Path(outdir) / f"{dist}-{version}-py3-none-any.whl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as whl:
        for path, data in files.items():
            compress = zipfile.ZIP_STORED if path.endswith(".bin") else zipfile.ZIP_DEFLATED
            whl.writestr(path, data, compress_type=compress)
    print(out)


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit("usage: make_wheel.py NAME VERSION OUTDIR [NOTE]")
    main(*sys.argv[1:])
