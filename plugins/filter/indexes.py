# Copyright: cheeseshop.pypi developers
# Apache License 2.0 (see galaxy.yml)
"""The layout of a server's package indexes, computed once for every role that needs it.

pypiserver (one instance per index), nginx_proxy (one set of locations per index) and the
preflight checks all read the same answer from here, so the rules that fill in an index's path,
port and packages directory live in one place.
"""

from __future__ import annotations

import posixpath
import re

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SEGMENT = re.compile(r"^[A-Za-z0-9._~-]+$")
DIRECTORY = re.compile(r"^/[A-Za-z0-9._/-]*$")


def _path(value):
    stripped = str(value).strip("/")
    return "/" + stripped + "/" if stripped else "/"


def index_layout(indexes, packages_dir, indexes_dir, base_port):
    """Every index with name, path, port, packages_dir, read and upload filled in."""
    layout = []
    for position, index in enumerate(indexes or []):
        index = index if isinstance(index, dict) else {}
        name = str(index.get("name", ""))
        main = name == "main"
        layout.append({
            "name": name,
            "path": _path(index["path"]) if index.get("path") else ("/" if main else "/" + name + "/"),
            "port": index.get("port") or int(base_port) + position,
            "packages_dir": (str(index["packages_dir"]).rstrip("/") if index.get("packages_dir")
                             else (packages_dir if main else posixpath.join(indexes_dir, name))),
            "read": index.get("read", "authenticated"),
            "upload": index.get("upload", "authenticated"),
        })
    return layout


def _nested(outer, inner):
    return inner != outer and inner.startswith(outer.rstrip("/") + "/")


def index_problems(layout):
    """What is wrong with a layout from index_layout, one sentence per problem; [] when fine."""
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
        segments = [s for s in index["path"].split("/") if s]
        if any(not SEGMENT.match(s) or s in (".", "..") for s in segments):
            problems.append(
                f"index {index['name']!r} has path {index['path']!r}: a path is made of segments of "
                "letters, digits and . _ ~ - separated by '/'."
            )
        port = index["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port <= 65535:
            problems.append(f"index {index['name']!r} has port {port!r}: use a number from 1024 to 65535.")
        if not DIRECTORY.match(index["packages_dir"]) or "/../" in index["packages_dir"] + "/":
            problems.append(
                f"index {index['name']!r} has packages_dir {index['packages_dir']!r}: use an absolute "
                "path of letters, digits and . _ - /."
            )

    for position, first in enumerate(layout):
        for second in layout[position + 1:]:
            pair = f"indexes {first['name']!r} and {second['name']!r}"
            if first["path"] == second["path"]:
                problems.append(f"{pair} have the same path {first['path']!r}.")
            elif first["path"].startswith(second["path"]) or second["path"].startswith(first["path"]):
                problems.append(
                    f"{pair} have overlapping paths {first['path']!r} and {second['path']!r}: one "
                    "would hide URLs of the other. Give each its own path (an index at / must be the only one)."
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
    return problems


class FilterModule:
    """cheeseshop.pypi's index layout filters."""

    def filters(self):
        return {"index_layout": index_layout, "index_problems": index_problems}
