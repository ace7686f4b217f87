"""Unit tests of the trusted publishers' checks: each problem named before anything changes."""
import pytest

from ansible_collections.cheeseshop.pypi.plugins.filter.indexes import index_layout
from ansible_collections.cheeseshop.pypi.plugins.filter.publishers import publisher_entries, publisher_problems

LAYOUT = index_layout([{"name": "main"}])
GITHUB = "https://token.actions.githubusercontent.com"
GOOD = {"name": "widgets", "index": "main", "issuer": GITHUB,
        "claims": {"repository": "acme/widgets", "job_workflow_ref": "acme/widgets/.github/workflows/release.yml@*"}}


def test_a_good_publisher_has_no_problem_and_gets_its_defaults():
    assert publisher_problems([GOOD], LAYOUT, ["alice"], []) == []
    assert publisher_entries([GOOD])[0]["minutes"] == 15


@pytest.mark.parametrize("change,message", [
    ({"name": "a" * 31}, "a publisher's name is 1-30"),
    ({"name": "alice"}, "has the name of a user or token"),
    ({"index": "nowhere"}, "is for index 'nowhere'"),
    ({"issuer": "http://ci.example"}, "issuer must be the https:// URL"),
    ({"claims": {}}, "claims must map claim names"),
    ({"claims": {"repository": "acme/*"}}, "needs repository or repository_id without a pattern"),
    ({"claims": {"ref": "refs/tags/*"}}, "needs repository or repository_id without a pattern"),
    ({"minutes": 0}, "minutes (how long a minted token lasts) is 1 to 60"),
    ({"minutes": 61}, "minutes (how long a minted token lasts) is 1 to 60"),
    ({"audience": "x"}, "unknown keys ['audience']"),
])
def test_each_problem_is_named(change, message):
    problems = publisher_problems([{**GOOD, **change}], LAYOUT, ["alice"], [])
    assert any(message in problem for problem in problems), problems


def test_an_internal_issuer_may_match_by_pattern_alone():
    internal = {**GOOD, "issuer": "https://gitlab.internal.example", "claims": {"project_path": "acme/*"}}
    assert publisher_problems([internal], LAYOUT, [], []) == []


def test_a_publisher_listed_twice_and_bad_issuers_are_named():
    problems = publisher_problems([GOOD, GOOD], LAYOUT, [], [{"issuer": "https://x", "jwks_url": "http://x/keys"},
                                                             {"issuer": "https://y", "jwks": ["not a set"]}])
    assert "publisher 'widgets' is listed more than once." in problems
    assert any("jwks_url must be https://" in p for p in problems)
    assert any("jwks must be a key set" in p for p in problems)
