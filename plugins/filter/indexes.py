# Copyright: cheeseshop.pypi developers
# Apache License 2.0 (see galaxy.yml)
"""The layout of a server's package indexes: the one place its rules live.

The layout role turns the collection-wide inputs (pypi_indexes, pypi_users, pypi_packages_dir,
...) into one entry per index with this filter, once per play, and checks it with
index_problems. pypiserver (one instance per index), users (its htpasswd files), nginx_proxy
(its locations) and data_volume (where the packages must live) all take those entries.
"""

from __future__ import annotations

import posixpath
import re

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SEGMENT = re.compile(r"^[A-Za-z0-9._~-]+$")
DIRECTORY = re.compile(r"^/[A-Za-z0-9._/-]*$")


# A project name as PEP 508 allows it.
NAME_OF_PROJECT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
PROJECT_STATUSES = ("active", "archived", "deprecated", "quarantined")

DEFAULT_INDEXES = [{"name": "main"}]
# A mirror index (cheeseshop.pypi.mirror): what its sync resolves, for which interpreters.
MIRROR_DEFAULTS = {"requirements": [], "targets": [], "upstream": "https://pypi.org/simple/", "upstream_ca": "",
                   "min_age_days": 0}
PYTHON_VERSION = re.compile(r"^3\.[0-9]{1,2}$")
TAG = re.compile(r"^[a-z0-9_]{1,64}$")
# A requirement line pip takes as one requirement: never an option (-i, --index-url, -r, -e),
# a URL or a path, which would fetch from elsewhere than the mirror's upstream.
REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?\s*([<>=!~][^@;/\\\s]*(\s*,\s*[<>=!~][^@;/\\\s]*)*)?"
                         r"(\s*;\s*[^@/\\]+)?$")
RIGHTS = ("read", "upload")


def _path(value):
    stripped = str(value).strip("/")
    return "/" + stripped + "/" if stripped else "/"


def _present(users):
    """Names of the users that exist (state present, the default). Passwords are never read."""
    return sorted({str(user.get("name", "")) for user in users or []
                   if isinstance(user, dict) and user.get("state", "present") == "present"})


def index_layout(indexes, users=None, packages_dir="/srv/pypi/packages", indexes_dir="/srv/pypi/indexes",
                 base_port=8080, users_dir="/etc/pypi-users", health_endpoint="/health", pages_dir="/srv/pypi/pages"):
    """Every index with everything a role needs of it filled in; see index_layout.yml."""
    present = _present(users)
    layout = []
    for position, index in enumerate(DEFAULT_INDEXES if indexes is None else indexes):
        index = index if isinstance(index, dict) else {}
        name = str(index.get("name", ""))
        main = name == "main"
        mirror = index.get("mirror")
        read = index.get("read", "authenticated")
        # Nobody uploads to a mirror: its sync fills it.
        upload = index.get("upload", [] if mirror else "authenticated")
        uploaders = present if upload == "authenticated" else (list(upload) if isinstance(upload, list) else [])
        readers = present if isinstance(read, str) else sorted(set(list(read) + uploaders)) \
            if isinstance(read, list) else []
        path = _path(index["path"]) if index.get("path") else ("/" if main else "/" + name + "/")
        layout.append({
            "name": name,
            "path": path,
            "port": index.get("port") or int(base_port) + position,
            "packages_dir": (str(index["packages_dir"]).rstrip("/") if index.get("packages_dir")
                             else (str(packages_dir).rstrip("/") if main
                                   else posixpath.join(str(indexes_dir), name))),
            "read": read,
            "upload": upload,
            "anonymous": read == "anonymous",
            "readers": sorted(readers),
            "uploaders": sorted(uploaders),
            "readers_file": posixpath.join(str(users_dir), name + "-readers.htpasswd"),
            "uploaders_file": posixpath.join(str(users_dir), name + "-uploaders.htpasswd"),
            # Every present user of the host, one file for all indexes: nginx answers a right
            # password of a user who is not a reader with 403, not 401. "_": no index's name.
            "known_users_file": posixpath.join(str(users_dir), "_known-users.htpasswd"),
            # Hashes of the index's tokens (cheeseshop.pypi.token_files): all of them for nginx,
            # the upload ones for pypiserver.
            "read_tokens_file": posixpath.join(str(users_dir), name + "-read.tokens"),
            "upload_tokens_file": posixpath.join(str(users_dir), name + "-upload.tokens"),
            # Who may upload which projects of the index (the users role writes it as JSON, the
            # index's pypiserver reads it at every upload and removal).
            "owners": index.get("owners") or [],
            "owners_file": posixpath.join(str(users_dir), name + "-owners.json"),
            # The key that signs the index's minted tokens (trusted publishing): nginx's copy and
            # pypiserver's.
            "minted_key_file": posixpath.join(str(users_dir), name + "-minted.key"),
            "minted_upload_key_file": posixpath.join(str(users_dir), name + "-minted-upload.key"),
            "health_endpoint": str(health_endpoint),
            "health_path": path + str(health_endpoint).lstrip("/"),
            "pages_dir": posixpath.join(str(pages_dir).rstrip("/"), name),
            # PEP 592: versions the pages mark as yanked (pip skips them unless pinned exactly).
            "yanked": index.get("yanked") or [],
            # PEP 792: archived, deprecated or quarantined projects (the pages mark them; uploads
            # to archived and quarantined ones are refused, and quarantined files are not served).
            "project_status": index.get("project_status") or [],
            # Old pre-release and development builds that go (cheeseshop.pypi.retention); {}: none.
            "retention": index.get("retention") or {},
            # A mirror of upstream projects (cheeseshop.pypi.mirror); {}: an index of its own uploads.
            "mirror": dict(MIRROR_DEFAULTS, **mirror) if isinstance(mirror, dict) else (mirror or {}),
        })
    return layout


def pep503_name(name):
    """A project name as PEP 503 normalises it (Acme_Tools.x is acme-tools-x): how the pages,
    the owners and the quarantine compare names. Shell patterns keep their * and ?."""
    return re.sub(r"[-_.]+", "-", str(name)).lower()


def _path_problems(label, path):
    segments = [s for s in path.split("/") if s]
    if any(not SEGMENT.match(s) or s in (".", "..") for s in segments):
        return [f"{label} has path {path!r}: a path is made of segments of letters, digits and . _ ~ - "
                "separated by '/'."]
    if segments and (segments[0].startswith("_") or segments[0] == ".well-known"):
        return [f"{label} has path {path!r}: paths that start with _ or .well-known are nginx's own "
                "(trusted publishing, internal pages, ACME)."]
    return []


def _overlap(first, second, health_endpoint="/health"):
    """Whether two paths would hide URLs of each other. An index at / has only its own URLs
    below it (simple/, packages/, its health endpoint), so any other path may sit beside it."""
    shorter, longer = sorted((first, second), key=len)
    if not longer.startswith(shorter):
        return False
    if shorter != "/" or longer == "/":
        return True
    own = ("/simple/", "/packages/", "/" + str(health_endpoint).strip("/") + "/")
    return any(longer.startswith(prefix) for prefix in own)


def _nested(outer, inner):
    return inner != outer and inner.startswith(outer.rstrip("/") + "/")


def _rights_problems(index, present):
    problems = []
    read, upload = index["read"], index["upload"]
    if not (read in ("anonymous", "authenticated") or
            (isinstance(read, list) and all(isinstance(n, str) for n in read))):
        problems.append(f"index {index['name']!r} has read {read!r}: use 'anonymous', 'authenticated' or a list "
                        "of user names.")
    if not (upload == "authenticated" or (isinstance(upload, list) and all(isinstance(n, str) for n in upload))):
        problems.append(f"index {index['name']!r} has upload {upload!r}: use 'authenticated' or a list of user "
                        "names ([] for nobody).")
    for kind in RIGHTS:
        names = index[kind] if isinstance(index[kind], list) else []
        for name in names:
            if isinstance(name, str) and name not in present:
                problems.append(f"index {index['name']!r} gives {kind} rights to {name!r}, who is not a present "
                                "user in pypi_users. Add the user, or take the name out of the index.")
    return problems


def _owners_problems(index, present, tokens):
    owners = index["owners"]
    label = f"index {index['name']!r} has owners"
    if not isinstance(owners, list) or not all(
            isinstance(rule, dict) and set(rule) <= {"projects", "uploaders"}
            and all(isinstance(rule.get(key), list) and rule.get(key) and all(isinstance(v, str) and v for v in rule[key])
                    for key in ("projects", "uploaders")) for rule in owners):
        return [f"{label} {owners!r}: list entries of projects (names or patterns such as acme-*) and uploaders "
                "(user or token names), neither empty."]
    if present is None:
        return []
    known = set(present) | set(tokens or [])
    return [f"{label} naming {name!r} as an uploader, which is neither a present user in pypi_users, a token "
            f"of pypi_tokens nor a publisher of pypi_trusted_publishers." for rule in owners for name in rule["uploaders"]
            if name not in known]


def _retention_problems(index):
    policy = index["retention"]
    if policy == {}:
        return []
    label = f"index {index['name']!r} has retention {policy!r}"
    if not isinstance(policy, dict) or set(policy) - {"keep_prereleases", "min_age_days", "keep"}:
        return [f"{label}: give keep_prereleases (how many of the newest pre-release and development versions of "
                "each project stay), and optionally min_age_days and keep (a list of project==version)."]
    problems = []
    keep_n = policy.get("keep_prereleases")
    if isinstance(keep_n, bool) or not isinstance(keep_n, int) or keep_n < 0:
        problems.append(f"{label}: keep_prereleases must be a whole number, 0 or more.")
    age = policy.get("min_age_days", 0)
    if isinstance(age, bool) or not isinstance(age, (int, float)) or age < 0:
        problems.append(f"{label}: min_age_days must be a number of days, 0 or more.")
    keep = policy.get("keep", [])
    if not isinstance(keep, list) or not all(isinstance(entry, str) and "==" in entry for entry in keep):
        problems.append(f"{label}: keep must list project==version pins.")
    return problems


def _mirror_problems(index):
    mirror = index["mirror"]
    if mirror == {}:
        return []
    label = f"index {index['name']!r} has mirror"
    if not isinstance(mirror, dict) or set(mirror) - set(MIRROR_DEFAULTS):
        return [f"{label} {mirror!r}: give requirements (what to mirror) and targets (for which Pythons and "
                "platforms), and optionally upstream, upstream_ca and min_age_days."]
    problems = []
    requirements = mirror["requirements"]
    if not isinstance(requirements, list) or not requirements or not all(
            isinstance(line, str) and REQUIREMENT.fullmatch(line) for line in requirements):
        problems.append(f"{label} requirements {requirements!r}: list one or more requirements such as "
                        "'requests==2.32.*' or 'django>=5,<6' (no pip options, URLs or paths).")
    targets = mirror["targets"]
    if not isinstance(targets, list) or not targets or not all(
            isinstance(target, dict) and set(target) <= {"python", "platforms", "implementation", "abi"}
            and isinstance(target.get("python"), str) and PYTHON_VERSION.match(target["python"])
            and isinstance(target.get("platforms", []), list)
            and all(isinstance(tag, str) and TAG.match(tag) for tag in target.get("platforms", []))
            and target.get("implementation", "cp") in ("cp", "pp", "py")
            and (target.get("abi") is None or (isinstance(target["abi"], str) and TAG.match(target["abi"])))
            for target in targets):
        problems.append(f"{label} targets {targets!r}: list one or more of python ('3.11'), platforms "
                        "(['manylinux_2_28_x86_64', ...]) and optionally implementation (cp) and abi (cp311).")
    upstream = mirror["upstream"]
    if not isinstance(upstream, str) or not re.match(r"^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/-]*)?/$",
                                                     upstream):
        problems.append(f"{label} upstream {upstream!r}: give the https:// URL of a simple API, ending in /.")
    if not isinstance(mirror["upstream_ca"], str):
        problems.append(f"{label} upstream_ca: give the upstream's CA certificates (PEM), or '' for the system's.")
    age = mirror["min_age_days"]
    if isinstance(age, bool) or not isinstance(age, (int, float)) or age < 0:
        problems.append(f"{label} min_age_days {age!r}: a number of days, 0 or more.")
    if index["upload"] != []:
        problems.append(f"index {index['name']!r} is a mirror: nobody uploads to it (leave out upload).")
    return problems


def index_problems(layout, users=None, tokens=None):
    """What is wrong with a layout from index_layout, one sentence per problem; [] when fine.

    With users (pypi_users), the rights are checked too: each name must be a present user (or,
    among owners' uploaders, a present token of tokens, pypi_tokens).
    """
    problems = []
    if not layout:
        return ["pypi_indexes is empty; leave it unset for one private index at /, or list at least one."]
    names = [index["name"] for index in layout]
    for name in names:
        if not NAME.match(name):
            problems.append(
                f"index name {name!r} is not valid: use 1-63 lower-case letters, digits and . _ - "
                "starting with a letter or digit (it names a service, files and a directory)."
            )
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"index name {name!r} is used by more than one index.")

    for index in layout:
        problems.extend(_path_problems(f"index {index['name']!r}", index["path"]))
        port = index["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port <= 65535:
            problems.append(f"index {index['name']!r} has port {port!r}: use a number from 1024 to 65535.")
        if not DIRECTORY.match(index["packages_dir"]) or "/../" in index["packages_dir"] + "/":
            problems.append(
                f"index {index['name']!r} has packages_dir {index['packages_dir']!r}: use an absolute "
                "path of letters, digits and . _ - /."
            )
        if not DIRECTORY.match(index["pages_dir"]) or "/../" in index["pages_dir"] + "/":
            problems.append(
                f"index {index['name']!r} has pages directory {index['pages_dir']!r} (pypi_pages_dir): use an "
                "absolute path of letters, digits and . _ - /."
            )
        yanked = index["yanked"]
        if not isinstance(yanked, list) or not all(
                isinstance(entry, dict) and set(entry) <= {"project", "version", "reason"}
                and all(isinstance(entry.get(key), str) and entry.get(key) for key in ("project", "version"))
                and isinstance(entry.get("reason", ""), str) for entry in yanked):
            problems.append(
                f"index {index['name']!r} has yanked {yanked!r}: list entries of project, version and an "
                "optional reason, all strings."
            )
        statuses = index["project_status"]
        if not isinstance(statuses, list) or not all(
                isinstance(entry, dict) and set(entry) <= {"project", "status", "reason"}
                and isinstance(entry.get("project"), str) and NAME_OF_PROJECT.match(entry["project"])
                and entry.get("status") in PROJECT_STATUSES and isinstance(entry.get("reason", ""), str)
                for entry in statuses):
            problems.append(
                f"index {index['name']!r} has project_status {statuses!r}: list entries of project (a project "
                f"name), status ({', '.join(PROJECT_STATUSES)}) and an optional reason."
            )
        problems.extend(_retention_problems(index))
        problems.extend(_mirror_problems(index))
        if users is not None:
            problems.extend(_rights_problems(index, _present(users)))
        problems.extend(_owners_problems(index, None if users is None else _present(users), _present(tokens)))

    for position, first in enumerate(layout):
        for second in layout[position + 1:]:
            pair = f"indexes {first['name']!r} and {second['name']!r}"
            if first["path"] == second["path"]:
                problems.append(f"{pair} have the same path {first['path']!r}.")
            elif _overlap(first["path"], second["path"], first["health_endpoint"]):
                problems.append(
                    f"{pair} have overlapping paths {first['path']!r} and {second['path']!r}: one "
                    "would hide URLs of the other. Give each its own path (beside an index at /, any "
                    "path but /simple/, /packages/ and the health endpoint)."
                )
            if first["port"] == second["port"]:
                problems.append(f"{pair} have the same port {first['port']!r}.")
            if first["packages_dir"] == second["packages_dir"]:
                problems.append(f"{pair} have the same packages_dir {first['packages_dir']!r}.")
            elif _nested(first["packages_dir"], second["packages_dir"]) or _nested(
                second["packages_dir"], first["packages_dir"]
            ):
                problems.append(
                    f"{pair} have nested packages directories {first['packages_dir']!r} and "
                    f"{second['packages_dir']!r}: pypiserver lists subdirectories too, so one index "
                    "would serve the other's packages."
                )
    # Pages inside a packages directory would be listed and served as packages, and packages
    # inside the pages would be overwritten by them.
    for index in layout:
        for other in layout:
            if index["pages_dir"] == other["packages_dir"] or _nested(other["packages_dir"], index["pages_dir"]) \
                    or _nested(index["pages_dir"], other["packages_dir"]):
                problems.append(
                    f"index {index['name']!r} has its pages in {index['pages_dir']!r}, which overlaps the "
                    f"packages directory {other['packages_dir']!r} of index {other['name']!r}: give pypi_pages_dir "
                    "a directory of its own."
                )
    return problems


def group_layout(groups, layout, pages_dir="/srv/pypi/pages", users=None, users_dir="/etc/pypi-users"):
    """Each group of pypi_groups (one URL for several indexes) with what the page service and
    nginx need: its path, its member indexes (every index but the mirrors, unless listed), its
    mirror, the members whose names its root page lists (the anonymous ones), its pages."""
    mirrors = [index["name"] for index in layout if index.get("mirror")]
    out = []
    for group in groups or []:
        group = group if isinstance(group, dict) else {}
        name = str(group.get("name", ""))
        members = group.get("members")
        if members is None:
            members = [index["name"] for index in layout if not index.get("mirror")]
        mirror = group.get("mirror", mirrors[0] if len(mirrors) == 1 else "")
        by_name = {index["name"]: index for index in layout}
        out.append({
            "name": name,
            "path": _path(group["path"]) if group.get("path") else "/" + name + "/",
            "members": list(members) if isinstance(members, list) else members,
            "mirror": mirror,
            "read": group.get("read", "authenticated"),
            "listed": [m for m in members if isinstance(m, str) and by_name.get(m, {}).get("anonymous")]
            if isinstance(members, list) else [],
            # "_groups": no index name starts with "_", so no index's pages are there.
            "pages_dir": posixpath.join(str(pages_dir).rstrip("/"), "_groups", name),
            # Every present user (read: authenticated) passes the group's access check; each
            # member's own readers file then decides which of its names the reader sees.
            "readers": _present(users),
            "readers_file": posixpath.join(str(users_dir), name + "-readers.htpasswd"),
        })
    return out


def group_problems(groups, layout):
    """What is wrong with a group_layout, one sentence per problem; [] when fine."""
    problems = []
    by_name = {index["name"]: index for index in layout}
    seen = set()
    for group in groups:
        label = f"group {group['name']!r}"
        if not NAME.match(group["name"]):
            problems.append(f"group name {group['name']!r} is not valid: use lower-case letters, digits and . _ -.")
        if group["name"] in seen or group["name"] in by_name:
            problems.append(f"{label}: its name is taken by another group or an index.")
        seen.add(group["name"])
        members = group["members"]
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            problems.append(f"{label}: members must list one or more indexes.")
            continue
        for member in members:
            if member not in by_name:
                problems.append(f"{label} names {member!r}, which is no index of pypi_indexes.")
            elif by_name[member].get("mirror"):
                problems.append(f"{label} names the mirror {member!r} as a member: give it as the group's mirror.")
        if group["mirror"] and not by_name.get(group["mirror"], {}).get("mirror"):
            problems.append(f"{label}: mirror {group['mirror']!r} is no mirror index of pypi_indexes.")
        if group["read"] != "authenticated":
            problems.append(f"{label}: read must be authenticated (each member's own readers are checked per name).")
        problems.extend(_path_problems(label, group["path"]))
        for index in layout:
            if _overlap(index["path"], group["path"], index["health_endpoint"]):
                problems.append(f"{label} has path {group['path']!r}, which overlaps index {index['name']!r} "
                                f"at {index['path']!r}.")
    return problems


class FilterModule:
    """cheeseshop.pypi's index layout filters."""

    def filters(self):
        return {"index_layout": index_layout, "index_problems": index_problems, "pep503_name": pep503_name,
                "group_layout": group_layout, "group_problems": group_problems}
