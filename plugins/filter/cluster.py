# Copyright: cheeseshop.pypi developers
# Apache License 2.0 (see galaxy.yml)
"""Several hosts on one shared data volume: one writer, any number of readers.

Hosts that name the same ``pypi_cluster`` share the packages and the pages. pypiserver writes an
upload in place, with no lock, and the page service sees only the changes of its own host: so
exactly one of them, the writer, takes uploads and keeps the pages; the others serve reads.
A host with no cluster stands alone and is its own writer.
"""

from __future__ import annotations

import re

from ansible.module_utils.parsing.convert_bool import boolean

# The name is a label in messages and documentation, never a path: letters, digits, . _ -
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def _role(hostvars, name):
    """(cluster, writer) of one inventory host; the defaults are the layout role's."""
    facts = hostvars[name]
    writer = facts.get("pypi_writer", True)
    try:
        # As argument_specs reads a bool: an INI inventory's "false" is false.
        writer = boolean(writer, strict=True)
    except TypeError:
        pass
    return facts.get("pypi_cluster", ""), writer


def cluster_problems(hosts, hostvars, host):
    """Problem sentences for the cluster of ``host`` among ``hosts`` (the inventory's servers);
    empty when it has exactly one writer. Every host of a cluster gets the same sentences, so a
    run limited to one of them fails as a run of all of them does."""
    cluster, writer = _role(hostvars, host)
    if not isinstance(writer, bool):
        return [f"pypi_writer must be true or false, got {writer!r}."]
    if not isinstance(cluster, str) or (cluster and not NAME.match(cluster)):
        return [f"pypi_cluster {cluster!r} is not a valid name (1-64 letters, digits, '.', '_' and '-')."]
    if not cluster:
        if writer:
            return []
        return ["pypi_writer is false on a host that names no pypi_cluster: a reader serves the volume "
                "of a writer, so set pypi_cluster to the name the hosts that share it give."]
    members = sorted({name for name in list(hosts) + [host] if _role(hostvars, name)[0] == cluster})
    writers = [name for name in members if _role(hostvars, name)[1] is True]
    if len(writers) == 1:
        return []
    if not writers:
        return [f"pypi_cluster {cluster} has no writer: set pypi_writer: true on exactly one of "
                f"{', '.join(members)} (the host that takes uploads and keeps the pages)."]
    return [f"pypi_cluster {cluster} has {len(writers)} writers ({', '.join(writers)}): uploads must reach "
            "one host, since two could both store the same file; set pypi_writer: false on all but one."]


class FilterModule:
    """cheeseshop.pypi's cluster filter."""

    def filters(self):
        return {"cluster_problems": cluster_problems}
