# Copyright: cheeseshop.pypi developers
# Apache License 2.0 (see galaxy.yml)
"""The audit log's lines for a converge: what the users role changed in each index's rights.

The upload path writes its own lines (docs/audit.md); a converge is the other way rights
change. One line per index whose rights changed, naming users and tokens only: never a
password, a hash or a token's text.
"""

from __future__ import annotations

import datetime

LIMIT = 500


def _names(content):
    """name -> (hash, expires) of a tokens file's lines."""
    entries = {}
    for line in (content or "").splitlines():
        parts = line.split(":")
        if len(parts) == 3:
            entries[parts[0]] = (parts[1], parts[2])
    return entries


def _until(epoch):
    moment = datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _said(what, names):
    return f"{what} {', '.join(sorted(names))}" if names else None


def rights_changes(layout, user_files, token_contents, owner_results, tokens_before, tokens):
    """One record per index whose rights this run changed: {index, file, result}.

    layout: pypi_layout; user_files: the htpasswd_files module's ``files``; token_contents:
    path -> the tokens file written; owner_results: the owners files' copy results;
    tokens_before: index -> its read tokens file before the run; tokens: pypi_tokens."""
    scopes = {token.get("name"): token.get("scope", "read") for token in tokens or []}
    by_path = {entry["path"]: entry for entry in user_files or [] if entry.get("changed")}
    owners_changed = {result["item"]["path"]: result["item"]["content"]
                      for result in owner_results or [] if result.get("changed")}
    records = []
    for index in layout:
        said, files = [], []
        # An anonymous index's readers file holds every user only so that nginx can check POSTs
        # there: a user added to it may read nothing that anyone may not.
        kinds = (("uploaders", "uploaders_file"),) if index.get("anonymous") else (
            ("readers", "readers_file"), ("uploaders", "uploaders_file"))
        for kind, key in kinds:
            entry = by_path.get(index[key])
            if entry:
                files.append(index[key].rsplit("/", 1)[-1])
                said += filter(None, (_said(f"{kind} added", entry.get("added")),
                                      _said(f"{kind} removed", entry.get("removed")),
                                      _said(f"{kind} new password", entry.get("updated"))))
        before = _names(tokens_before.get(index["name"]))
        after = _names(token_contents.get(index["read_tokens_file"], ""))
        if before != after:
            files.append(index["read_tokens_file"].rsplit("/", 1)[-1])
            added = [f"{name} ({scopes.get(name, 'read')} until {_until(after[name][1])})"
                     for name in sorted(set(after) - set(before))]
            renewed = [name for name in sorted(set(after) & set(before)) if after[name] != before[name]]
            said += filter(None, (_said("tokens added", added), _said("tokens revoked", set(before) - set(after)),
                                  _said("tokens new secret or expiry", renewed)))
        if index["owners_file"] in owners_changed:
            files.append(index["owners_file"].rsplit("/", 1)[-1])
            content = owners_changed[index["owners_file"]]
            rules = [f"{' '.join(rule['projects'])} by {' '.join(rule['uploaders'])}" for rule in content.get("owners", [])]
            closed = [f"{project} {status}" for project, status in sorted(content.get("closed", {}).items())]
            said.append(f"owners now {', '.join(rules) or 'none'}; closed now {', '.join(closed) or 'none'}")
        if said:
            result = "; ".join(said)
            records.append({"index": index["name"], "file": ", ".join(files)[:LIMIT],
                            "result": result if len(result) <= LIMIT else result[:LIMIT - 3] + "..."})
    return records


class FilterModule:
    """cheeseshop.pypi's audit filters."""

    def filters(self):
        return {"rights_changes": rights_changes}
