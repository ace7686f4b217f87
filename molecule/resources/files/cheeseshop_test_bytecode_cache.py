"""TEST TOOLING, not part of the product: keeps the bytecode of Ansible's module payloads.

tools/test-image installs this into the -tools images with a .pth file that imports it, so it
runs at the start of the system python3 (virtualenvs do not read that directory). Ansible
sends every task's module as a zip that Python imports with zipimport, which compiles each
source file on every run and never writes bytecode: on a test host about 80 ms of CPU per
module run, in scenarios that spend most of their time running modules on two shared cores.
For root's imports from those payloads only, this keeps each compiled file in a root-only
directory, keyed by the file's path inside the zip and a hash of its source, so a file is
compiled once per host. Anything unexpected falls back to compiling, as Python would.
"""
import hashlib
import marshal
import os
import sys
import zipimport

CACHE = "/var/cache/cheeseshop-test-bytecode"
_compile = zipimport._compile_source


def _compile_once(pathname, source):
    archive, _, inner = pathname.partition(".zip" + os.sep)
    if not inner or "/ansible_" not in archive or os.geteuid() != 0:
        return _compile(pathname, source)
    key = hashlib.sha256(inner.encode() + b"\0" + bytes(source)).hexdigest()
    path = os.path.join(CACHE, f"{sys.implementation.cache_tag}-{key}")
    try:
        with open(path, "rb") as handle:
            return marshal.load(handle)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = _compile(pathname, source)
    try:
        os.makedirs(CACHE, mode=0o700, exist_ok=True)
        partial = f"{path}.{os.getpid()}"
        with open(partial, "wb") as handle:
            marshal.dump(code, handle)
        os.replace(partial, path)
    except OSError:
        pass
    return code


zipimport._compile_source = _compile_once
