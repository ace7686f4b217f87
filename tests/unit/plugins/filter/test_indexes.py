"""Unit tests of the index layout filters: the defaults every role relies on, and each problem."""
import pytest

from ansible_collections.cheeseshop.pypi.plugins.filter.indexes import index_layout, index_problems, pep503_name

PACKAGES = "/srv/pypi/packages"
INDEXES = "/srv/pypi/indexes"
PORT = 8080


USERS = [{"name": "alice", "password": "secret-a"}, {"name": "bob", "password": "secret-b"},
         {"name": "mallory", "state": "absent"}]


def layout(indexes, users=USERS):
    return index_layout(indexes, users=users, packages_dir=PACKAGES, indexes_dir=INDEXES, base_port=PORT)


def test_main_alone_keeps_the_single_index_layout():
    assert layout([{"name": "main"}]) == [{
        "name": "main", "path": "/", "port": 8080, "packages_dir": PACKAGES,
        "read": "authenticated", "upload": "authenticated", "anonymous": False,
        "readers": ["alice", "bob"], "uploaders": ["alice", "bob"],
        "readers_file": "/etc/pypi-users/main-readers.htpasswd",
        "uploaders_file": "/etc/pypi-users/main-uploaders.htpasswd",
        "known_users_file": "/etc/pypi-users/_known-users.htpasswd",
        "read_tokens_file": "/etc/pypi-users/main-read.tokens",
        "upload_tokens_file": "/etc/pypi-users/main-upload.tokens",
        "owners": [], "owners_file": "/etc/pypi-users/main-owners.json",
        "minted_key_file": "/etc/pypi-users/main-minted.key",
        "minted_upload_key_file": "/etc/pypi-users/main-minted-upload.key",
        "health_endpoint": "/health", "health_path": "/health", "pages_dir": "/srv/pypi/pages/main",
        "yanked": [], "project_status": [], "retention": {}, "mirror": {},
    }]


@pytest.mark.parametrize("yanked", [{"project": "a"}, [{"project": "a"}], [{"project": "a", "version": 1}],
                                    [{"project": "a", "version": "1", "why": "x"}], ["a==1"]])
def test_yanked_entries_need_a_project_and_a_version(yanked):
    found = index_problems(layout([{"name": "main", "yanked": yanked}]))
    assert len(found) == 1 and "has yanked" in found[0], found


def test_yanked_entries_are_passed_on():
    entry = {"project": "Foo", "version": "1.0", "reason": "broken on 3.12"}
    result = layout([{"name": "main", "yanked": [entry]}])
    assert index_problems(result) == [] and result[0]["yanked"] == [entry]


@pytest.mark.parametrize("packages_dir, pages_dir", [
    ("/srv/pypi/packages", "/srv/pypi/packages"),     # pages inside the packages
    ("/srv/pypi/pages/main", "/srv/pypi/pages"),      # the same directory
    ("/srv/pypi/pages/main/x", "/srv/pypi/pages"),    # packages inside the pages
])
def test_pages_that_overlap_a_packages_directory_are_refused(packages_dir, pages_dir):
    """pypiserver lists subdirectories: pages inside a packages directory would be served as
    packages, and a packages directory inside the pages would be written over."""
    found = index_problems(index_layout([{"name": "main"}], packages_dir=packages_dir, pages_dir=pages_dir))
    assert len(found) == 1 and f"overlaps the packages directory {packages_dir!r}" in found[0], found


def test_pages_beside_the_packages_are_fine():
    assert index_problems(index_layout([{"name": "main", "path": "/main/"}, {"name": "team"}],
                                       pages_dir="/srv/pypi/pages")) == []


def test_none_is_the_default_single_private_index():
    assert [i["name"] for i in index_layout(None)] == ["main"]
    assert index_layout(None)[0]["packages_dir"] == "/srv/pypi/packages"


def test_rights_resolve_to_present_users_and_uploaders_may_read():
    public, private = layout([{"name": "public", "read": "anonymous", "upload": ["bob"]},
                              {"name": "private", "read": ["alice"], "upload": ["bob"]}])
    assert public["anonymous"] and public["uploaders"] == ["bob"]
    assert private["readers"] == ["alice", "bob"] and not private["anonymous"]
    assert private["health_path"] == "/private/health"
    assert private["readers_file"] == "/etc/pypi-users/private-readers.htpasswd"
    # One file of every present user, whatever the index: a right password without the right
    # to read is told 403 from it.
    assert {public["known_users_file"], private["known_users_file"]} == {"/etc/pypi-users/_known-users.htpasswd"}


def test_no_password_reaches_the_layout_or_a_problem():
    result = layout([{"name": "a", "read": ["nobody"]}])
    text = repr(result) + repr(index_problems(result, USERS))
    assert "secret" not in text and "nobody" in text


@pytest.mark.parametrize("index,expected", [
    ({"name": "a", "read": ["carol"]}, "gives read rights to 'carol', who is not a present user"),
    ({"name": "a", "upload": ["mallory"]}, "gives upload rights to 'mallory', who is not a present user"),
    ({"name": "a", "read": "everyone"}, "has read 'everyone'"),
    ({"name": "a", "upload": "anonymous"}, "has upload 'anonymous'"),
    ({"name": "a", "read": {"alice": 1}}, "has read {'alice': 1}"),
])
def test_each_rights_problem_is_named(index, expected):
    problems = index_problems(layout([index]), USERS)
    assert any(expected in p for p in problems), problems


def test_rights_are_not_checked_without_users():
    assert index_problems(layout([{"name": "a", "read": ["carol"]}])) == []


def test_other_indexes_get_their_own_path_port_and_directory():
    result = layout([{"name": "public", "read": "anonymous", "upload": ["bot"]}, {"name": "customer-a"}])
    assert [(i["path"], i["port"], i["packages_dir"]) for i in result] == [
        ("/public/", 8080, "/srv/pypi/indexes/public"),
        ("/customer-a/", 8081, "/srv/pypi/indexes/customer-a"),
    ]
    assert result[0]["read"] == "anonymous" and result[0]["upload"] == ["bot"]
    assert index_problems(result) == []


@pytest.mark.parametrize("given,normalised", [("private/customer-a", "/private/customer-a/"),
                                              ("/private/customer-a", "/private/customer-a/"),
                                              ("/", "/")])
def test_paths_are_normalised(given, normalised):
    assert layout([{"name": "x", "path": given}])[0]["path"] == normalised


def test_explicit_port_and_directory_win():
    result = layout([{"name": "main", "path": "/main/", "port": 9000, "packages_dir": "/data/main/"}])
    assert (result[0]["path"], result[0]["port"], result[0]["packages_dir"]) == ("/main/", 9000, "/data/main")


@pytest.mark.parametrize("indexes,expected", [
    ([], "is empty"),
    ([{"name": "Public"}], "'Public' is not valid"),
    ([{"name": "a/b"}], "'a/b' is not valid"),
    ([{"name": "a"}, {"name": "a", "path": "/b/"}], "'a' is used by more than one index"),
    ([{"name": "a", "path": "/x/"}, {"name": "b", "path": "x"}], "have the same path '/x/'"),
    ([{"name": "main"}, {"name": "public", "path": "/simple/"}], "overlapping paths '/' and '/simple/'"),
    ([{"name": "main"}, {"name": "public", "path": "/packages/x/"}], "overlapping paths"),
    ([{"name": "main"}, {"name": "public", "path": "/health/"}], "overlapping paths"),
    ([{"name": "a", "path": "/_cheeseshop_pages/"}], "nginx's own"),
    ([{"name": "a", "path": "/_/oidc/"}], "nginx's own"),
    ([{"name": "a", "path": "/.well-known/"}], "nginx's own"),
    ([{"name": "a", "path": "/private/"}, {"name": "b", "path": "/private/b/"}], "overlapping paths"),
    ([{"name": "a", "path": "/x/../y/"}], "a path is made of segments"),
    ([{"name": "a", "path": "/x y/"}], "a path is made of segments"),
    ([{"name": "a", "port": 80}], "port 80"),
    ([{"name": "a", "port": "8080"}], "port '8080'"),
    ([{"name": "a", "port": 9000}, {"name": "b", "port": 9000}], "have the same port 9000"),
    ([{"name": "a", "packages_dir": "/d"}, {"name": "b", "packages_dir": "/d/"}], "have the same packages_dir"),
    ([{"name": "a", "packages_dir": "/d"}, {"name": "b", "packages_dir": "/d/b"}], "nested packages directories"),
    ([{"name": "a", "packages_dir": "relative"}], "use an absolute path"),
    ([{"name": "a", "packages_dir": "/srv/../etc"}], "use an absolute path"),
])
def test_each_problem_is_named(indexes, expected):
    problems = index_problems(layout(indexes))
    assert any(expected in p for p in problems), problems


def test_sibling_directories_with_a_common_prefix_are_not_nested():
    assert index_problems(layout([{"name": "a", "packages_dir": "/d/a"}, {"name": "ab", "packages_dir": "/d/ab"}])) == []


@pytest.mark.parametrize("owners,expected", [
    ([{"projects": ["acme-*"], "uploaders": ["alice", "ci-acme"]}], None),
    ({"acme-*": ["alice"]}, "list entries of projects"),
    ([{"projects": [], "uploaders": ["alice"]}], "neither empty"),
    ([{"projects": ["acme-*"]}], "neither empty"),
    ([{"projects": ["acme-*"], "uploaders": ["alice"], "extra": 1}], "list entries of projects"),
    ([{"projects": ["acme-*"], "uploaders": ["carol"]}], "naming 'carol' as an uploader, which is neither a present"),
    ([{"projects": ["acme-*"], "uploaders": ["old-token"]}], "naming 'old-token' as an uploader"),
], ids=["fine", "not-a-list", "no-projects", "no-uploaders", "unknown-key", "unknown-user", "absent-token"])
def test_each_owners_problem_is_named(owners, expected):
    tokens = [{"name": "ci-acme", "index": "a"}, {"name": "old-token", "state": "absent"}]
    problems = index_problems(layout([{"name": "a", "owners": owners}]), USERS, tokens)
    assert (problems == []) if expected is None else any(expected in p for p in problems), problems


@pytest.mark.parametrize("statuses,fine", [
    ([{"project": "Old.Lib", "status": "archived", "reason": "use new-lib"}, {"project": "x", "status": "active"}], True),
    ([{"project": "x", "status": "quarantined"}, {"project": "y", "status": "deprecated"}], True),
    ([{"project": "x", "status": "retired"}], False),
    ([{"project": "-x-", "status": "archived"}], False),
    ([{"status": "archived"}], False),
    ([{"project": "x", "status": "archived", "reason": 1}], False),
    ({"x": "archived"}, False),
], ids=["archived", "quarantined", "unknown-status", "bad-name", "no-project", "reason-not-text", "not-a-list"])
def test_project_status_entries_are_checked(statuses, fine):
    problems = index_problems(layout([{"name": "a", "project_status": statuses}]))
    assert (problems == []) == fine, problems
    assert fine or "has project_status" in problems[0]


@pytest.mark.parametrize("policy,message", [
    ({"keep_prereleases": -1}, "keep_prereleases must be a whole number"),
    ({"keep": 3}, "has retention"),
    ({"keep_prereleases": 5, "min_age_days": "soon"}, "min_age_days must be a number"),
    ({"keep_prereleases": 5, "keep": ["widgets"]}, "keep must list project==version"),
    ({"keep_prereleases": 5, "older_than": 3}, "give keep_prereleases"),
])
def test_a_retention_policy_is_checked(policy, message):
    found = index_problems(layout([{"name": "main", "retention": policy}]))
    assert any(message in problem for problem in found), found
    assert index_problems(layout([{"name": "main", "retention": {"keep_prereleases": 3, "keep": ["a==1"]}}])) == []


@pytest.mark.parametrize("name,normalised", [
    ("Acme_Tools", "acme-tools"), ("acme.-_tools", "acme-tools"), ("ACME", "acme"),
    ("zope.interface", "zope-interface"), ("cheeseshop_owned-*", "cheeseshop-owned-*"), ("a__b..c", "a-b-c"),
])
def test_project_names_are_compared_as_pep_503_normalises_them(name, normalised):
    assert pep503_name(name) == normalised


MIRROR = {"requirements": ["requests==2.32.*", "django>=5,<6"],
          "targets": [{"python": "3.11", "platforms": ["manylinux_2_28_x86_64"]}]}


def test_a_mirror_index_gets_the_upstream_defaults_and_no_uploaders():
    (entry,) = index_layout([{"name": "pypi-mirror", "mirror": MIRROR}], users=[{"name": "alice"}])
    assert entry["mirror"] == dict(MIRROR, upstream="https://pypi.org/simple/", upstream_ca="", min_age_days=0)
    assert entry["upload"] == [] and entry["uploaders"] == []
    assert index_problems([entry], users=[{"name": "alice"}]) == []
    (plain,) = index_layout([{"name": "main"}])
    assert plain["mirror"] == {}


@pytest.mark.parametrize("mirror,message", [
    (dict(MIRROR, requirements=["--index-url=https://evil.example/simple/"]), "no pip options"),
    (dict(MIRROR, requirements=["-r /etc/shadow"]), "no pip options"),
    (dict(MIRROR, requirements=["widgets @ https://evil.example/w.whl"]), "no pip options"),
    (dict(MIRROR, requirements=["requests==2.32.*\n--index-url=x"]), "no pip options"),
    (dict(MIRROR, requirements=[]), "list one or more requirements"),
    (dict(MIRROR, targets=[{"python": "three"}]), "targets"),
    (dict(MIRROR, targets=[{"python": "3.11", "platforms": ["manylinux; rm -rf /"]}]), "targets"),
    (dict(MIRROR, upstream="http://pypi.org/simple/"), "https:// URL"),
    (dict(MIRROR, min_age_days=-1), "min_age_days"),
    (dict(MIRROR, sync="hourly"), "give requirements"),
])
def test_a_mirror_is_checked_before_anything_changes(mirror, message):
    found = index_problems(index_layout([{"name": "pypi-mirror", "mirror": mirror}]))
    assert any(message in problem for problem in found), found


def test_nobody_uploads_to_a_mirror():
    layout = index_layout([{"name": "pypi-mirror", "mirror": MIRROR, "upload": ["alice"]}], users=[{"name": "alice"}])
    assert "is a mirror: nobody uploads to it" in " ".join(index_problems(layout, users=[{"name": "alice"}]))


def test_a_group_takes_every_index_but_the_mirror_and_lists_the_anonymous_ones():
    from ansible_collections.cheeseshop.pypi.plugins.filter.indexes import group_layout, group_problems
    layout = index_layout([{"name": "public", "read": "anonymous"}, {"name": "customer-a", "path": "/private/a/"},
                           {"name": "pypi-mirror", "path": "/mirror/", "mirror": MIRROR}])
    (group,) = group_layout([{"name": "all"}], layout)
    assert group == {"name": "all", "path": "/all/", "members": ["public", "customer-a"], "mirror": "pypi-mirror",
                     "read": "authenticated", "listed": ["public"], "pages_dir": "/srv/pypi/pages/_groups/all",
                     "readers": [], "readers_file": "/etc/pypi-users/all-readers.htpasswd"}
    assert group_problems([group], layout) == []
    for bad, message in [({"name": "all", "members": ["pypi-mirror"]}, "as a member"),
                         ({"name": "all", "members": ["nope"]}, "no index"),
                         ({"name": "all", "mirror": "public"}, "no mirror index"),
                         ({"name": "public"}, "taken"),
                         ({"name": "all", "path": "/private/"}, "overlaps"),
                         ({"name": "all", "path": "/_x/"}, "nginx's own"),
                         ({"name": "all", "read": "anonymous"}, "must be authenticated")]:
        assert any(message in p for p in group_problems(group_layout([bad], layout), layout)), bad


def test_an_index_at_the_root_leaves_every_other_path_to_other_indexes_and_groups():
    """/ serves its simple/, packages/ and health endpoint only: a mirror at /pypi/ and a group at
    /all/ beside it hide none of its URLs (the demo's layout)."""
    from ansible_collections.cheeseshop.pypi.plugins.filter.indexes import group_layout, group_problems
    layout = index_layout([{"name": "main"}, {"name": "pypi", "path": "/pypi/", "mirror": MIRROR}])
    assert index_problems(layout) == []
    assert group_problems(group_layout([{"name": "all"}], layout), layout) == []
    for path in ("/simple/", "/packages/", "/"):
        assert any("overlaps" in p for p in group_problems(group_layout([{"name": "all", "path": path}], layout),
                                                            layout)), path
