"""TEST TOOLING, not part of the product: remembers which module_utils each file imports.

For every task whose module it has not sent yet in this run, ansible-playbook builds the
module's payload: it compiles the module and every module_utils file it reaches into a syntax
tree, only to list their imports. Every ansible-playbook run starts that over, and the tests
run ansible-playbook a few hundred times: in a no-op site.yml it was about a quarter of the
controller's CPU, on CI's two shared cores.

Enabled in .config/molecule/config.yml (so for molecule's runs and the tests' own), this
keeps the import lists on disk, keyed by a hash of the file's source, its name and Ansible's
version: the same source always lists the same imports, so a changed file is simply a new
key. Ansible still finds, reads and packs every file itself; only the parse is skipped.
Anything unexpected falls back to Ansible's own code.
"""
import hashlib
import json
import os

from ansible import __version__ as ANSIBLE_VERSION
from ansible.executor import module_common
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: cheeseshop_test_import_cache
type: aggregate
short_description: Test tooling, keeps the import lists of module payloads between runs
description: Test tooling of the molecule scenarios of cheeseshop.pypi, never part of the collection.
requirements: [enabled in callbacks_enabled]
"""

CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                     "cheeseshop-test-import-cache")


def _key(module_fqn, source, is_pkg_init):
    data = source.encode() if isinstance(source, str) else bytes(source)
    head = f"{ANSIBLE_VERSION}\0{module_fqn}\0{bool(is_pkg_init)}\0".encode()
    return hashlib.sha256(head + data).hexdigest()


def _install():
    """Patch module_common once per process (Ansible's plugin loader may import this twice)."""
    if getattr(module_common, "_cheeseshop_import_cache", False):
        return
    compile_tree = module_common._compile_module_ast
    metadata = module_common._get_module_metadata
    finder_init = module_common.ModuleDepFinder.__init__

    class Source:
        """What _compile_module_ast was given, compiled only if something needs the tree."""
        __slots__ = ("name", "source")

        def __init__(self, name, source):
            self.name, self.source = name, source

        def tree(self):
            return compile_tree(self.name, self.source)

    def init(self, module_fqn, tree, is_pkg_init=False, *args, **kwargs):
        """ModuleDepFinder's two results (submodules, optional_imports), from disk when known."""
        if not isinstance(tree, Source):
            finder_init(self, module_fqn, tree, is_pkg_init, *args, **kwargs)
            return
        path = os.path.join(CACHE, _key(module_fqn, tree.source, is_pkg_init))
        try:
            with open(path, encoding="utf-8") as handle:
                known = json.load(handle)
            self.submodules = {tuple(name) for name in known["submodules"]}
            self.optional_imports = {tuple(name) for name in known["optional_imports"]}
            self.module_fqn, self.is_pkg_init = module_fqn, is_pkg_init
            return
        except (OSError, ValueError, KeyError, TypeError):
            pass
        finder_init(self, module_fqn, tree.tree(), is_pkg_init, *args, **kwargs)
        try:
            os.makedirs(CACHE, mode=0o700, exist_ok=True)
            partial = f"{path}.{os.getpid()}"
            with open(partial, "w", encoding="utf-8") as handle:
                json.dump({"submodules": sorted(self.submodules),
                           "optional_imports": sorted(self.optional_imports)}, handle)
            os.replace(partial, path)
        except OSError:
            pass

    module_common._compile_module_ast = Source
    module_common._get_module_metadata = lambda tree: metadata(tree.tree() if isinstance(tree, Source) else tree)
    module_common.ModuleDepFinder.__init__ = init
    module_common._cheeseshop_import_cache = True


_install()


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "cheeseshop_test_import_cache"
    CALLBACK_NEEDS_ENABLED = True
