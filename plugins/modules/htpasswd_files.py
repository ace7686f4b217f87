#!/usr/bin/python
# Copyright: cheeseshop.pypi developers
# Apache License 2.0 (see galaxy.yml)
"""Write several htpasswd files from one list of users, hashing each password once."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: htpasswd_files
short_description: Keep a set of htpasswd files in step with a list of users
description:
  - Writes each file in O(files) so that it holds exactly the users named in its C(members),
    with the password given in O(users).
  - Hashes with the host's C(libcrypt) (libxcrypt), the same library nginx verifies with, so
    nginx and pypiserver (passlib/libpass with bcrypt) both accept the result. No Python
    package is needed on the host and it works on Python 3.13, which has no C(crypt) module.
  - A stored hash is kept when the password still verifies against it and it uses the
    configured scheme and cost, so a rerun with the same passwords changes nothing. Each user
    is verified once per run, and the same hash is written to every file the user is in.
  - Every input is checked before any file is touched.
  - Files are replaced atomically, with their owner, group and mode set before the rename.
  - No password or hash is ever returned.
version_added: 0.2.0
author: cheeseshop.pypi developers (@cheeseshop)
options:
  users:
    description:
      - Every user the inventory knows. Users with O(users[].state=absent) are removed from
        every file.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: User name (no C(:), no whitespace, at most 64 characters).
        type: str
        required: true
      password:
        description: Clear-text password; required when present. At most 72 bytes with bcrypt. Never logged.
        type: str
      state:
        description: Whether the user may exist at all.
        type: str
        choices: [present, absent]
        default: present
  files:
    description: The files to write.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path of the htpasswd file; its directory must exist.
        type: path
        required: true
      members:
        description: Names from O(users) (present ones) that belong in this file.
        type: list
        elements: str
        default: []
      owner:
        description: Owner of the file.
        type: str
        default: root
      group:
        description: Group of the file (the service that reads it).
        type: str
        default: root
      mode:
        description: Mode of the file.
        type: str
        default: "0640"
  exclusive:
    description:
      - Remove entries for names that O(users) does not mention at all.
      - When false, such entries (added by hand, say) are kept as they are; listed users who
        are not members of a file are always removed from it.
    type: bool
    default: false
  scheme:
    description: Hash scheme for new hashes.
    type: str
    choices: [bcrypt, sha512_crypt]
    default: bcrypt
  bcrypt_cost:
    description: bcrypt cost (log2 of the rounds).
    type: int
    default: 10
  sha512_rounds:
    description: sha512-crypt rounds.
    type: int
    default: 5000
notes:
  - Supports check mode and reports what would change, by user name.
"""

EXAMPLES = r"""
- name: Readers and uploaders of one index
  cheeseshop.pypi.htpasswd_files:
    users: "{{ pypi_users }}"
    files:
      - path: /etc/pypi-users/main-readers.htpasswd
        members: [alice, bob]
        group: www-data
      - path: /etc/pypi-users/main-uploaders.htpasswd
        members: [alice]
        group: pypiserver
  no_log: true
"""

RETURN = r"""
files:
  description: What changed in each file, by user name.
  returned: always
  type: list
  elements: dict
  contains:
    path: {description: The file., type: str}
    changed: {description: Whether its content or attributes changed., type: bool}
    added: {description: Users added., type: list, elements: str}
    removed: {description: Users removed., type: list, elements: str}
    updated: {description: "Users whose hash was replaced (new password, scheme or cost).", type: list, elements: str}
    unmanaged: {description: Entries kept because O(exclusive) is false., type: list, elements: str}
rehashed:
  description: Users given a new hash in this run.
  returned: always
  type: list
  elements: str
"""

import ctypes
import ctypes.util
import grp
import hmac
import os
import pwd
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule

NAME_MAX = 64
BCRYPT_MAX_BYTES = 72
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")
BCRYPT_RE = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
SHA512_RE = re.compile(r"^\$6\$(?:rounds=(\d+)\$)?[^$]{1,16}\$[./A-Za-z0-9]{86}$")


class CryptError(Exception):
    pass


class LibCrypt:
    """crypt(3) and crypt_gensalt(3) from libxcrypt, called through ctypes."""

    def __init__(self, lib=None):
        if lib is None:
            name = "libcrypt.so.1"
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                found = ctypes.util.find_library("crypt")
                if not found:
                    raise CryptError("libcrypt.so.1 (libxcrypt) was not found on this host")
                lib = ctypes.CDLL(found)
        if not hasattr(lib, "crypt_gensalt"):
            raise CryptError("this libcrypt has no crypt_gensalt(); libxcrypt (Debian's libcrypt1) is needed")
        self._gensalt = lib.crypt_gensalt
        self._gensalt.restype = ctypes.c_char_p
        self._gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
        self._crypt = lib.crypt
        self._crypt.restype = ctypes.c_char_p
        self._crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]

    def crypt(self, password, setting):
        out = self._crypt(password.encode("utf-8"), setting.encode("ascii"))
        # libxcrypt returns a string starting with '*' (never a valid hash) on failure.
        if not out or out.startswith(b"*"):
            raise CryptError("crypt() refused the setting %r" % setting.split("$")[1:2])
        return out.decode("ascii")

    def new_hash(self, password, scheme, cost):
        prefix = b"$2b$" if scheme == "bcrypt" else b"$6$"
        # A NULL random source makes libxcrypt draw the salt from the kernel.
        setting = self._gensalt(prefix, cost, None, 0)
        if not setting:
            raise CryptError("crypt_gensalt() failed for %s with cost %d" % (scheme, cost))
        return self.crypt(password, setting.decode("ascii"))

    def verify(self, password, stored):
        try:
            return hmac.compare_digest(self.crypt(password, stored), stored)
        except (CryptError, UnicodeError):  # a damaged or foreign entry never verifies
            return False


def scheme_matches(stored, scheme, cost):
    """True when a stored hash uses the configured scheme and cost (else it is replaced)."""
    if scheme == "bcrypt":
        match = BCRYPT_RE.match(stored)
        return bool(match) and int(match.group(1)) == cost
    match = SHA512_RE.match(stored)
    return bool(match) and int(match.group(1) or 5000) == cost


def parse(text):
    """name -> hash, in file order; blank and comment lines are dropped."""
    entries = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if sep:
            entries[name] = stored.strip()
    return entries


def render(entries):
    return "".join("%s:%s\n" % (name, entries[name]) for name in sorted(entries))


def check_inputs(users, files, scheme):
    """Every problem with the input, by user or file name, before anything is touched."""
    problems = []
    seen = set()
    present = set()
    for user in users:
        name = user["name"]
        if ":" in name:
            problems.append("user %r: ':' separates name and hash in htpasswd files" % name)
        elif re.search(r"\s", name):
            problems.append("user %r: whitespace is not allowed in a name" % name)
        elif len(name) > NAME_MAX:
            problems.append("user %r: longer than %d characters" % (name[:20] + "...", NAME_MAX))
        elif not NAME_RE.match(name):
            problems.append("user %r: use letters, digits and . _ @ + - (starting with a letter or digit)" % name)
        if name in seen:
            problems.append("user %r: listed more than once" % name)
        seen.add(name)
        if user["state"] == "present":
            present.add(name)
            password = user.get("password") or ""
            if not password:
                problems.append("user %r: empty or missing password" % name)
            elif scheme == "bcrypt" and len(password.encode("utf-8")) > BCRYPT_MAX_BYTES:
                problems.append("user %r: password longer than %d bytes, which bcrypt would silently cut"
                                % (name, BCRYPT_MAX_BYTES))
            elif "\x00" in password:
                problems.append("user %r: password contains a NUL byte" % name)
    paths = set()
    for spec in files:
        if not os.path.isabs(spec["path"]):
            problems.append("file %r: the path must be absolute" % spec["path"])
        if spec["path"] in paths:
            problems.append("file %r: listed more than once" % spec["path"])
        paths.add(spec["path"])
        for member in spec["members"]:
            if member not in present:
                problems.append("file %r: member %r is not a present user" % (spec["path"], member))
    return problems


def choose_hashes(crypt, users, existing, members, scheme, cost):
    """One hash per user who is in some file: the stored one when it still verifies."""
    chosen, rehashed = {}, []
    for user in users:
        name = user["name"]
        if user["state"] != "present" or name not in members:
            continue
        candidates = []
        for entries in existing.values():
            stored = entries.get(name)
            if stored and stored not in candidates and scheme_matches(stored, scheme, cost):
                candidates.append(stored)
        for stored in candidates:
            if crypt.verify(user["password"], stored):
                chosen[name] = stored
                break
        else:
            chosen[name] = crypt.new_hash(user["password"], scheme, cost)
            rehashed.append(name)
    return chosen, rehashed


def plan_file(current, members, chosen, known, exclusive):
    """The new name -> hash map of one file and what changed, by name."""
    wanted = {}
    report = {"added": [], "removed": [], "updated": [], "unmanaged": []}
    for name, stored in current.items():
        if name in members:
            continue
        if name in known or exclusive:
            report["removed"].append(name)
        else:
            wanted[name] = stored
            report["unmanaged"].append(name)
    for name in members:
        wanted[name] = chosen[name]
        if name not in current:
            report["added"].append(name)
        elif current[name] != chosen[name]:
            report["updated"].append(name)
    for key in report:
        report[key].sort()
    return wanted, report


def write_atomically(path, content, uid, gid, mode):
    """Owner and mode are set on the temporary file, so the hashes are never exposed."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchown(handle.fileno(), uid, gid)
            os.fchmod(handle.fileno(), mode)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def resolve_ids(spec):
    try:
        uid = pwd.getpwnam(spec["owner"]).pw_uid
    except KeyError:
        raise CryptError("file %r: owner %r does not exist on this host" % (spec["path"], spec["owner"]))
    try:
        gid = grp.getgrnam(spec["group"]).gr_gid
    except KeyError:
        raise CryptError("file %r: group %r does not exist on this host" % (spec["path"], spec["group"]))
    try:
        mode = int(spec["mode"], 8)
    except ValueError:
        raise CryptError("file %r: mode %r is not an octal mode like '0640'" % (spec["path"], spec["mode"]))
    return uid, gid, mode


def run(module, crypt):
    params = module.params
    users, files = params["users"], params["files"]
    scheme = params["scheme"]
    cost = params["bcrypt_cost"] if scheme == "bcrypt" else params["sha512_rounds"]
    problems = check_inputs(users, files, scheme)
    ids, host_problems = {}, []
    for spec in files:
        try:
            ids[spec["path"]] = resolve_ids(spec)
        except CryptError as exc:
            host_problems.append(str(exc))
        if not os.path.isdir(os.path.dirname(spec["path"])):
            host_problems.append("file %r: its directory does not exist" % spec["path"])
        if os.path.islink(spec["path"]):
            problems.append("file %r: is a symbolic link; refusing to write through it" % spec["path"])
    # In check mode on a fresh host, earlier tasks have not created the directory and the
    # service groups yet: that is a change to come, not an error.
    if module.check_mode:
        for problem in host_problems:
            module.warn("check mode: " + problem)
    else:
        problems.extend(host_problems)
    if scheme == "bcrypt" and not 4 <= cost <= 31:
        problems.append("bcrypt_cost must be 4 to 31, got %d" % cost)
    if scheme == "sha512_crypt" and not 1000 <= cost <= 999999999:
        problems.append("sha512_rounds must be 1000 to 999999999, got %d" % cost)
    if problems:
        module.fail_json(msg="Refusing to change any htpasswd file: " + "; ".join(problems), problems=problems)

    existing = {}
    for spec in files:
        try:
            with open(spec["path"]) as handle:
                existing[spec["path"]] = parse(handle.read())
        except FileNotFoundError:
            existing[spec["path"]] = {}
    members = {m for spec in files for m in spec["members"]}
    chosen, rehashed = choose_hashes(crypt, users, existing, members, scheme, cost)
    known = {user["name"] for user in users}

    results, changed = [], False
    for spec in files:
        path = spec["path"]
        wanted, report = plan_file(existing[path], spec["members"], chosen, known, params["exclusive"])
        content = render(wanted)
        uid, gid, mode = ids.get(path, (None, None, None))
        try:
            st = os.stat(path)
            with open(path) as handle:
                current_text = handle.read()
            same_attrs = (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, mode)
        except FileNotFoundError:
            current_text, same_attrs = None, False
        file_changed = current_text != content or not same_attrs
        if file_changed and not module.check_mode:
            if current_text != content:
                write_atomically(path, content, uid, gid, mode)
            else:
                os.chown(path, uid, gid)
                os.chmod(path, mode)
        report.update(path=path, changed=file_changed)
        results.append(report)
        changed = changed or file_changed
    return dict(changed=changed, files=results, rehashed=sorted(rehashed))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            users=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                password=dict(type="str", no_log=True),
                state=dict(type="str", choices=["present", "absent"], default="present"),
            )),
            files=dict(type="list", elements="dict", required=True, options=dict(
                path=dict(type="path", required=True),
                members=dict(type="list", elements="str", default=[]),
                owner=dict(type="str", default="root"),
                group=dict(type="str", default="root"),
                mode=dict(type="str", default="0640"),
            )),
            exclusive=dict(type="bool", default=False),
            scheme=dict(type="str", choices=["bcrypt", "sha512_crypt"], default="bcrypt"),
            bcrypt_cost=dict(type="int", default=10),
            sha512_rounds=dict(type="int", default=5000),
        ),
        supports_check_mode=True,
    )
    try:
        module.exit_json(**run(module, LibCrypt()))
    except CryptError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
