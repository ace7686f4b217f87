"""Unit tests of the token filters: the files the hosts get, where each hash comes from, and
every problem preflight names (never with a token's text)."""
import datetime
import hashlib

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.cheeseshop.pypi.plugins.filter.indexes import index_layout
from ansible_collections.cheeseshop.pypi.plugins.filter.tokens import (token_epoch, token_files, token_problems,
                                                                       tokens_to_make)

LAYOUT = index_layout([{"name": "public", "read": "anonymous"}, {"name": "team"}])
SECRET = "a" * 40
VAULTED = f"cheeseshop_ci-team.{SECRET}"


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("value,epoch", [
    ("2027-01-31", 1801353600),
    (datetime.date(2027, 1, 31), 1801353600),
    ("2027-01-31T12:00:00Z", 1801353600 + 43200),
    ("2027-01-31T12:00:00", 1801353600 + 43200),
    ("2027-01-31T13:00:00+01:00", 1801353600 + 43200),
    (datetime.datetime(2027, 1, 31, 12, tzinfo=datetime.timezone.utc), 1801353600 + 43200),
])
def test_an_expiry_is_a_date_at_midnight_utc_or_a_moment(value, epoch):
    assert token_epoch(value) == epoch


def test_the_files_hold_sorted_hashes_and_the_upload_file_only_upload_tokens():
    tokens = [{"name": "ci-team", "index": "team", "scope": "upload", "expires": "2027-01-31", "token": VAULTED},
              {"name": "ci-read", "index": "team", "expires": "2027-02-01"},
              {"name": "gone", "state": "absent"}]
    files = token_files(tokens, LAYOUT, {}, {"ci-read": "cheeseshop_ci-read." + "b" * 40 + "\n"})
    assert files == {
        "/etc/pypi-users/public-read.tokens": "",
        "/etc/pypi-users/public-upload.tokens": "",
        "/etc/pypi-users/team-read.tokens":
            f"ci-read:{sha('cheeseshop_ci-read.' + 'b' * 40)}:1801440000\nci-team:{sha(VAULTED)}:1801353600\n",
        "/etc/pypi-users/team-upload.tokens": f"ci-team:{sha(VAULTED)}:1801353600\n",
    }
    assert SECRET not in "".join(files.values())


def test_a_made_token_keeps_the_hosts_hash_when_its_controller_file_is_gone():
    tokens = [{"name": "ci-read", "index": "team", "expires": "2027-02-01"}]
    on_host = {"team": f"ci-read:{'c' * 64}:1\nbroken line\n"}
    assert tokens_to_make(tokens, on_host, {}) == []
    assert token_files(tokens, LAYOUT, on_host, {})["/etc/pypi-users/team-read.tokens"] == \
        f"ci-read:{'c' * 64}:1801440000\n"
    # Only a token no one has a text or a hash for is made.
    assert tokens_to_make(tokens, {"public": on_host["team"]}, {}) == ["ci-read"]
    assert tokens_to_make(tokens, {}, {"ci-read": "cheeseshop_ci-read." + "d" * 40}) == []
    with pytest.raises(AnsibleFilterError, match="has no secret"):
        token_files(tokens, LAYOUT, {}, {})
    # A --check run makes no token: its preview shows a line that no reader takes for a hash.
    assert token_files(tokens, LAYOUT, {}, {}, preview=True)["/etc/pypi-users/team-read.tokens"] == \
        "ci-read:made-by-the-run-without-check:1801440000\n"


def test_a_vault_token_written_as_a_block_is_hashed_as_a_client_sends_it():
    """token: | in YAML ends the text with a newline; no client sends it."""
    entry = {"name": "ci-team", "index": "team", "expires": "2027-01-31", "token": VAULTED + "\n"}
    assert token_problems([entry], LAYOUT, []) == []
    assert token_files([entry], LAYOUT, {}, {})["/etc/pypi-users/team-read.tokens"] == f"ci-team:{sha(VAULTED)}:1801353600\n"


def test_a_good_list_has_no_problem():
    assert token_problems([{"name": "ci-team", "index": "team", "scope": "upload", "expires": "2027-01-31",
                            "token": VAULTED}, {"name": "old", "state": "absent"}], LAYOUT, []) == []


@pytest.mark.parametrize("token,message", [
    ({"name": "ci team"}, "a token name is 1-64 letters"),
    ({"name": "x" * 65}, "a token name is 1-64 letters"),
    # "$" would take a final newline, which would then split a line of the tokens file.
    ({"name": "ci-team\n"}, "a token name is 1-64 letters"),
    ({"index": "nowhere"}, "is for index 'nowhere', which is not in pypi_indexes (public, team)"),
    ({"scope": "write"}, "has scope 'write': use read or upload"),
    ({"expires": None}, "has no expires"),
    ({"expires": "soon"}, "expires 'soon' is not a date"),
    ({"token": "cheeseshop_other-name." + SECRET}, "its token must read cheeseshop_ci-team.<secret>"),
    ({"token": "cheeseshop_ci-team.short"}, "its token must read cheeseshop_ci-team.<secret>"),
    ({"name": "alice", "token": None}, "has the name of a user in pypi_users"),
    ({"state": "gone"}, "has state 'gone'"),
])
def test_each_problem_is_named_without_the_token(token, message):
    entry = {"name": "ci-team", "index": "team", "scope": "read", "expires": "2027-01-31", "token": VAULTED, **token}
    problems = token_problems([entry], LAYOUT, [{"name": "alice", "password": "p"}])
    assert any(message in p for p in problems), problems
    assert not any(SECRET in p for p in problems)


def test_a_token_listed_twice_is_named():
    entry = {"name": "ci-team", "index": "team", "expires": "2027-01-31"}
    assert token_problems([entry, entry], LAYOUT, []) == ["token 'ci-team' is listed more than once."]
