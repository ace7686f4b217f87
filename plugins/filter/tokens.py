# Copyright: cheeseshop.pypi developers
# Apache License 2.0 (see galaxy.yml)
"""Tokens: credentials for machines, one index and one right each, with an expiry date.

A token is used as the password of HTTP Basic credentials, with any user name (__token__,
the token's own name, or none). Its text names it, so that the server finds its entry
without trying every hash:

    cheeseshop_<name>.<secret>        secret: 32 to 128 letters and digits

The hosts keep SHA-256 hashes only, in two files per index (the layout's read_tokens_file,
which nginx reads, and upload_tokens_file, which the index's pypiserver reads), one line per
token: ``name:sha256-hex:expires``, expires in seconds since the epoch, checked at every
request. A fast hash is enough: the secret is random and long, not a password a person chose.
"""

from __future__ import annotations

import datetime
import hashlib
import re

from ansible.errors import AnsibleFilterError

# \Z, not $: "$" also matches before a final newline, which would then be part of a name.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
TOKEN = re.compile(r"^cheeseshop_([A-Za-z0-9][A-Za-z0-9_-]{0,63})\.([A-Za-z0-9]{32,128})\Z")
SCOPES = ("read", "upload")
STATES = ("present", "absent")
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def token_epoch(value):
    """The expiry of a token in seconds since the epoch: a date means 00:00 UTC of that day (the
    token is refused from then on); a date and time without a zone is UTC."""
    moment = value
    if isinstance(value, str):
        text = value.strip()
        try:
            if re.match(r"^\d{4}-\d{2}-\d{2}$", text):
                moment = datetime.date.fromisoformat(text)
            else:
                moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not a date (2027-01-31) or a date and time "
                             "(2027-01-31T12:00:00Z)") from None
    if isinstance(moment, datetime.datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return int((moment - EPOCH).total_seconds())
    if isinstance(moment, datetime.date):
        return token_epoch(datetime.datetime(moment.year, moment.month, moment.day))
    raise ValueError(f"{value!r} is not a date (2027-01-31) or a date and time (2027-01-31T12:00:00Z)")


def _entries(tokens):
    return [t if isinstance(t, dict) else {} for t in tokens or []]


def token_summary(tokens):
    """The tokens without their secrets: what preflight checks and what reports may print."""
    out = []
    for token in _entries(tokens):
        out.append({
            "name": str(token.get("name", "")),
            "index": token.get("index"),
            "scope": token.get("scope", "read"),
            "expires": token.get("expires"),
            "note": token.get("note", ""),
            "state": token.get("state", "present"),
            "from_vault": bool(token.get("token")),
            "token_name": (TOKEN.match(str(token["token"]).strip()) or [None, None])[1] if token.get("token") else None,
        })
    return out


def token_problems(tokens, layout, users=None):
    """What is wrong with pypi_tokens, one sentence per problem (never a secret); [] when fine."""
    problems = []
    if not isinstance(tokens, list):
        return [f"pypi_tokens must be a list of tokens, not {type(tokens).__name__}."]
    indexes = {index["name"] for index in layout}
    user_names = {str(u.get("name", "")) for u in users or [] if isinstance(u, dict)}
    summary = token_summary(tokens)
    names = [t["name"] for t in summary]
    for position, token in enumerate(summary):
        name = token["name"]
        label = f"token {name!r}" if name else f"token number {position + 1}"
        if not NAME.match(name):
            problems.append(f"{label}: a token name is 1-64 letters, digits, _ and -, starting with a letter or digit.")
        if token["state"] not in STATES:
            problems.append(f"{label} has state {token['state']!r}: use present or absent.")
        if token["state"] != "present":
            continue
        if token["index"] not in indexes:
            problems.append(f"{label} is for index {token['index']!r}, which is not in pypi_indexes "
                            f"({', '.join(sorted(indexes))}).")
        if token["scope"] not in SCOPES:
            problems.append(f"{label} has scope {token['scope']!r}: use read or upload (upload may also read).")
        if token["expires"] in (None, ""):
            problems.append(f"{label} has no expires: give the date it stops working (2027-01-31).")
        else:
            try:
                token_epoch(token["expires"])
            except ValueError as error:
                problems.append(f"{label}: expires {error}.")
        if token["from_vault"] and token["token_name"] != name:
            problems.append(f"{label}: its token must read cheeseshop_{name}.<secret>, the secret 32 to 128 letters "
                            "and digits (make one with: openssl rand -hex 32).")
        if name in user_names:
            problems.append(f"{label} has the name of a user in pypi_users: a name says who did what in the logs, "
                            "so give the token a name of its own.")
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"token {name!r} is listed more than once.")
    return problems


def _hashes(content):
    """name -> hash of a tokens file's content (the host's current file)."""
    hashes = {}
    for line in (content or "").splitlines():
        parts = line.split(":")
        if len(parts) == 3 and NAME.match(parts[0]) and re.match(r"^[0-9a-f]{64}$", parts[1]):
            hashes[parts[0]] = parts[1]
    return hashes


def tokens_to_make(tokens, on_host, on_controller):
    """Names of the present tokens no vault, host or controller file has a secret for.

    on_host: index name -> content of its read tokens file on the host; on_controller: token
    name -> token text, from the controller's files."""
    return sorted(t["name"] for t in token_summary(tokens)
                  if t["state"] == "present" and not t["from_vault"]
                  and t["name"] not in _hashes(on_host.get(t["index"])) and t["name"] not in on_controller)


# What a --check run shows for a token whose text the real run would make; never a hash, so
# that neither nginx nor pypiserver would read the line if it were ever written.
PREVIEW = "made-by-the-run-without-check"


def token_files(tokens, layout, on_host, on_controller, preview=False):
    """The content of every index's two tokens files: {path: content}.

    A token's hash comes from its vault entry, else from the controller's file of it, else from
    the host's current file (a token made earlier, whose file was handed out and removed).
    on_host and on_controller: as for tokens_to_make. preview (a --check run, which makes no
    token): a token with no text anywhere yet gets PREVIEW for its hash.
    """
    lines = {}
    for index in layout:
        lines[index["read_tokens_file"]] = []
        lines[index["upload_tokens_file"]] = []
    by_index = {index["name"]: index for index in layout}
    for token in _entries(tokens):
        if token.get("state", "present") != "present":
            continue
        name, index = str(token["name"]), by_index[token["index"]]
        if token.get("token"):
            # As a client sends it: a vault value written as a block (token: |) ends with a newline.
            digest = hashlib.sha256(str(token["token"]).strip().encode()).hexdigest()
        elif name in on_controller:
            digest = hashlib.sha256(on_controller[name].strip().encode()).hexdigest()
        elif name in _hashes(on_host.get(index["name"])):
            digest = _hashes(on_host[index["name"]])[name]
        elif preview:
            digest = PREVIEW
        else:
            raise AnsibleFilterError(f"token {name!r} has no secret: none in the vault, on the host or the controller")
        try:
            expires = token_epoch(token["expires"])
        except ValueError as error:
            raise AnsibleFilterError(f"token {name!r}: expires {error}") from None
        line = f"{name}:{digest}:{expires}"
        lines[index["read_tokens_file"]].append(line)
        if token.get("scope", "read") == "upload":
            lines[index["upload_tokens_file"]].append(line)
    return {path: "".join(f"{line}\n" for line in sorted(entries)) for path, entries in lines.items()}


class FilterModule:
    """cheeseshop.pypi's token filters."""

    def filters(self):
        return {"token_problems": token_problems, "tokens_to_make": tokens_to_make, "token_files": token_files}
