# Copyright: cheeseshop.pypi developers
# Apache License 2.0 (see galaxy.yml)
"""Trusted publishers: the CI jobs that may exchange their OIDC token for a short-lived upload
token of one index (docs/trusted-publishing.md).

    pypi_trusted_publishers:
      - name: widgets-release                      # names the tokens minted: oidc-widgets-release-...
        index: main
        issuer: https://token.actions.githubusercontent.com
        claims: {repository: acme/widgets, job_workflow_ref: "acme/widgets/.github/workflows/release.yml@refs/tags/*"}
        minutes: 15                                # optional, 1-60

A publisher's name is an uploader in the index's owners, as a token's is.
"""

from __future__ import annotations

import re

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,29}\Z")
CLAIM = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
# The claims that say which repository (or project) a job runs for, per well-known issuer: a
# publisher of these issuers must name one, or any repository on github.com could publish.
IDENTITY_CLAIMS = {
    "https://token.actions.githubusercontent.com": ("repository", "repository_id"),
    "https://gitlab.com": ("project_path", "project_id"),
}
KNOWN_CLAIMS = ("sub", "repository", "repository_id", "repository_owner", "repository_owner_id", "job_workflow_ref",
                "workflow_ref", "ref", "ref_type", "environment", "event_name", "project_path", "project_id",
                "namespace_path", "ci_config_ref_uri", "ref_path", "ref_protected", "pipeline_source")


def _issuer_problems(issuers):
    problems = []
    if not isinstance(issuers, list):
        return ["trusted_publishing_issuers must be a list of issuers."]
    for position, issuer in enumerate(issuers):
        label = f"trusted_publishing_issuers entry {position + 1}"
        if not isinstance(issuer, dict) or not str(issuer.get("issuer", "")).startswith("https://"):
            problems.append(f"{label}: give issuer, its https:// URL (the tokens' iss).")
            continue
        if set(issuer) - {"issuer", "jwks", "jwks_url", "ca"}:
            problems.append(f"{label} ({issuer['issuer']}): unknown keys {sorted(set(issuer) - {'issuer', 'jwks', 'jwks_url', 'ca'})}; "
                            "use jwks (the key set itself), jwks_url (https) or ca (a PEM certificate).")
        if issuer.get("jwks_url") and not str(issuer["jwks_url"]).startswith("https://"):
            problems.append(f"{label} ({issuer['issuer']}): jwks_url must be https://.")
        jwks = issuer.get("jwks")
        if jwks is not None and not (isinstance(jwks, dict) and isinstance(jwks.get("keys"), list)):
            problems.append(f"{label} ({issuer['issuer']}): jwks must be a key set, {{keys: [...]}}.")
    return problems


def publisher_problems(publishers, layout, names_taken=None, issuers=None):
    """What is wrong with pypi_trusted_publishers (and trusted_publishing_issuers), one sentence per
    problem; [] when fine. names_taken: the users' and tokens' names, which a publisher's may not be."""
    if not isinstance(publishers, list):
        return ["pypi_trusted_publishers must be a list of publishers."]
    problems = _issuer_problems(issuers or [])
    indexes = {index["name"] for index in layout}
    taken = set(names_taken or [])
    seen = set()
    for position, publisher in enumerate(publishers):
        if not isinstance(publisher, dict):
            problems.append(f"publisher number {position + 1} is not a mapping.")
            continue
        name = str(publisher.get("name", ""))
        label = f"publisher {name!r}" if name else f"publisher number {position + 1}"
        if not NAME.match(name):
            problems.append(f"{label}: a publisher's name is 1-30 letters, digits, _ and -, starting with a letter or digit.")
        elif name in seen:
            problems.append(f"{label} is listed more than once.")
        elif name in taken:
            problems.append(f"{label} has the name of a user or token; owners could not tell them apart.")
        seen.add(name)
        unknown = set(publisher) - {"name", "index", "issuer", "claims", "minutes", "note"}
        if unknown:
            problems.append(f"{label} has unknown keys {sorted(unknown)}: use name, index, issuer, claims, minutes, note.")
        if publisher.get("index") not in indexes:
            problems.append(f"{label} is for index {publisher.get('index')!r}, which is not in pypi_indexes "
                            f"({', '.join(sorted(indexes))}).")
        issuer = str(publisher.get("issuer", "")).rstrip("/")
        if not issuer.startswith("https://"):
            problems.append(f"{label}: issuer must be the https:// URL of the CI system's tokens "
                            "(https://token.actions.githubusercontent.com, https://gitlab.com, ...).")
        claims = publisher.get("claims")
        if not isinstance(claims, dict) or not claims or not all(
                CLAIM.match(str(key)) and isinstance(value, str) and value for key, value in claims.items()):
            problems.append(f"{label}: claims must map claim names to values or patterns (repository: acme/widgets), "
                            "at least one.")
        else:
            needed = IDENTITY_CLAIMS.get(issuer)
            if needed and not any(claim in claims and "*" not in claims[claim] and "?" not in claims[claim]
                                  for claim in needed):
                problems.append(f"{label}: an issuer shared by everyone ({issuer}) needs {' or '.join(needed)} "
                                "without a pattern, or any repository there could publish.")
        minutes = publisher.get("minutes", 15)
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 60:
            problems.append(f"{label}: minutes (how long a minted token lasts) is 1 to 60, got {minutes!r}.")
    return problems


def publisher_entries(publishers):
    """The publishers as the minting service reads them: defaults filled in, issuers without a
    final slash."""
    return [{"name": str(p["name"]), "index": p["index"], "issuer": str(p["issuer"]).rstrip("/"),
             "claims": {str(k): str(v) for k, v in p["claims"].items()}, "minutes": int(p.get("minutes", 15))}
            for p in publishers or []]


class FilterModule:
    """cheeseshop.pypi's trusted publishing filters."""

    def filters(self):
        return {"publisher_problems": publisher_problems, "publisher_entries": publisher_entries}
