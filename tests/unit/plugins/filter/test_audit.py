"""Unit tests of the audit log's converge lines: one per index whose rights changed, naming
users and tokens, never a hash or a secret."""
import json

from ansible_collections.cheeseshop.pypi.plugins.filter.audit import rights_changes
from ansible_collections.cheeseshop.pypi.plugins.filter.indexes import index_layout

LAYOUT = index_layout([{"name": "public", "read": "anonymous"}, {"name": "team"}])
PUBLIC = LAYOUT[0]
TEAM = LAYOUT[1]
HASH_A = "a" * 64
HASH_B = "b" * 64


def test_nothing_changed_is_no_line():
    assert rights_changes(LAYOUT, [], {}, [], {}, []) == []
    same = {TEAM["read_tokens_file"]: f"ci:{HASH_A}:1900000000\n"}
    assert rights_changes(LAYOUT, [{"path": TEAM["readers_file"], "changed": False, "added": []}], same,
                          [{"item": {"path": TEAM["owners_file"], "content": {}}, "changed": False}],
                          {"team": same[TEAM["read_tokens_file"]]}, []) == []


def test_one_line_per_index_with_its_users_tokens_and_owners():
    users = [{"path": TEAM["readers_file"], "changed": True, "added": ["carol"], "removed": [], "updated": ["bob"]},
             {"path": TEAM["uploaders_file"], "changed": True, "added": ["carol"], "removed": ["dave"], "updated": []}]
    before = {"team": f"old:{HASH_A}:1900000000\nkept:{HASH_A}:1900000000\n"}
    after = {TEAM["read_tokens_file"]: f"kept:{HASH_B}:1900000000\nnew:{HASH_B}:1800000000\n"}
    owners = [{"item": {"path": TEAM["owners_file"],
                        "content": {"owners": [{"projects": ["team-*"], "uploaders": ["carol"]}],
                                    "closed": {"old-lib": "archived"}}}, "changed": True},
              {"item": {"path": PUBLIC["owners_file"], "content": {}}, "changed": False}]
    records = rights_changes(LAYOUT, users, after, owners, before, [{"name": "new", "scope": "upload"}])
    assert [record["index"] for record in records] == ["team"]
    result = records[0]["result"]
    assert result == ("readers added carol; readers new password bob; uploaders added carol; uploaders removed dave; "
                      "tokens added new (upload until 2027-01-15T08:00:00Z); tokens revoked old; "
                      "tokens new secret or expiry kept; owners now team-* by carol; closed now old-lib archived")
    assert records[0]["file"] == "team-readers.htpasswd, team-uploaders.htpasswd, team-read.tokens, team-owners.json"
    assert HASH_A not in json.dumps(records) and HASH_B not in json.dumps(records)


def test_an_anonymous_index_s_readers_are_not_a_change_of_rights():
    """Its readers file holds every user (nginx checks POSTs there); anyone may read it anyway."""
    users = [{"path": PUBLIC["readers_file"], "changed": True, "added": ["carol"]},
             {"path": TEAM["readers_file"], "changed": True, "added": ["carol"]}]
    assert [(r["index"], r["result"]) for r in rights_changes(LAYOUT, users, {}, [], {}, [])] == [
        ("team", "readers added carol")]


def test_a_long_change_is_cut_to_the_line_limit():
    users = [{"path": TEAM["readers_file"], "changed": True, "added": [f"user{n:04d}" for n in range(200)]}]
    (record,) = rights_changes(LAYOUT, users, {}, [], {}, [])
    assert len(record["result"]) == 500 and record["result"].endswith("...")
