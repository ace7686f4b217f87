"""The tests' import cache (molecule/resources/plugins/callback/cheeseshop_test_import_cache.py)
must change no payload: the modules the roles run are packed byte for byte as Ansible packs
them, on a cold cache and on a warm one. Run in a child process: the cache patches Ansible for
the process it is loaded in."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]

PACK = r"""
import datetime, hashlib, io, json, os, sys, zipfile
from ansible.plugins.loader import init_plugin_loader
init_plugin_loader([os.path.join(sys.argv[1], ".ansible", "collections")])
import ansible
from ansible._internal._ansiballz import _builder
from ansible._internal._datatag._tags import Origin
from ansible.executor import module_common
import importlib.util

def pack(path, fqn):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        data = open(path, "rb").read()
        module_common.recursive_finder(os.path.basename(path)[:-3], fqn, Origin(path=path).tag(data), zf,
                                       datetime.datetime(2020, 1, 1), _builder.ExtensionManager.create(task_vars={}))
    packed = zipfile.ZipFile(io.BytesIO(out.getvalue()))
    return {name: hashlib.sha256(packed.read(name)).hexdigest() for name in sorted(packed.namelist())}

core = os.path.dirname(ansible.__file__)
modules = [(os.path.join(core, "modules", name + ".py"), "ansible.modules." + name)
           for name in ("copy", "stat", "apt", "systemd_service", "pip", "file")]
modules += [(importlib.util.find_spec(fqn).origin, fqn) for fqn in (
    "ansible_collections.community.crypto.plugins.modules.x509_certificate",
    "ansible_collections.community.crypto.plugins.modules.acme_certificate",
    "ansible_collections.community.general.plugins.modules.htpasswd",
    "ansible_collections.ansible.posix.plugins.modules.mount")]
result = {"plain": {fqn: pack(path, fqn) for path, fqn in modules}}
sys.path.insert(0, os.path.join(sys.argv[1], "molecule", "resources", "plugins", "callback"))
import cheeseshop_test_import_cache  # noqa: E402,F401 (patches module_common)
result["cold"] = {fqn: pack(path, fqn) for path, fqn in modules}
result["warm"] = {fqn: pack(path, fqn) for path, fqn in modules}
result["cached"] = len(os.listdir(cheeseshop_test_import_cache.CACHE))
print(json.dumps(result))
"""


def test_the_import_cache_packs_every_module_as_ansible_does(tmp_path):
    run = subprocess.run([sys.executable, "-c", PACK, str(ROOT)], capture_output=True, text=True, check=False,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert len(result["plain"]) == 10 and all(len(files) > 5 for files in result["plain"].values())
    assert result["cold"] == result["plain"]
    assert result["warm"] == result["plain"]
    # The cold round wrote what the warm one read: an import list for each file it parsed.
    assert result["cached"] > 50
