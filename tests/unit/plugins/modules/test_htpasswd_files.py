"""Unit tests of cheeseshop.pypi.htpasswd_files against the real libcrypt of this machine."""
import grp
import os
import pwd

import pytest

from ansible_collections.cheeseshop.pypi.plugins.modules import htpasswd_files as mod

COST = 4  # the cheapest bcrypt cost: these tests check behaviour, not strength
ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


@pytest.fixture(scope="module")
def crypt():
    return mod.LibCrypt()


class FakeModule:
    """Only what run() uses of AnsibleModule: params, check_mode and fail_json."""

    def __init__(self, check_mode=False, **params):
        self.params = {"exclusive": False, "scheme": "bcrypt", "bcrypt_cost": COST, "sha512_rounds": 5000}
        self.params.update(params)
        self.check_mode = check_mode

    def fail_json(self, **kwargs):
        raise AssertionError(kwargs["msg"])


def user(name, password="pw-" + "x" * 8, state="present"):
    return {"name": name, "password": password if state == "present" else None, "state": state}


def spec(path, members, mode="0640"):
    return {"path": str(path), "members": members, "owner": ME, "group": MY_GROUP, "mode": mode}


def test_new_hash_verifies_and_wrong_password_does_not(crypt):
    stored = crypt.new_hash("correct horse", "bcrypt", COST)
    assert stored.startswith("$2b$04$") and mod.BCRYPT_RE.match(stored)
    assert crypt.verify("correct horse", stored)
    assert not crypt.verify("correct horsE", stored)


def test_sha512_crypt_scheme(crypt):
    stored = crypt.new_hash("pw", "sha512_crypt", 5000)
    assert mod.scheme_matches(stored, "sha512_crypt", 5000)
    assert not mod.scheme_matches(stored, "sha512_crypt", 6000)
    assert crypt.verify("pw", stored)


def test_scheme_matches_checks_the_cost():
    assert mod.scheme_matches("$2b$10$" + "a" * 53, "bcrypt", 10)
    assert not mod.scheme_matches("$2b$10$" + "a" * 53, "bcrypt", 12)
    assert not mod.scheme_matches("$apr1$abc$def", "bcrypt", 10)


@pytest.mark.parametrize("name,words", [
    ("al:ice", "':' separates"),
    ("al ice", "whitespace"),
    ("a" * 65, "longer than 64"),
    ("-alice", "letters, digits"),
    ("ali'ce", "letters, digits"),
])
def test_bad_names_are_refused(name, words):
    problems = mod.check_inputs([user(name)], [], "bcrypt")
    assert len(problems) == 1 and words in problems[0]


def test_duplicates_empty_and_long_passwords_are_refused():
    problems = mod.check_inputs(
        [user("alice"), user("alice"), user("bob", password=""), user("carol", password="é" * 37)],
        [], "bcrypt")
    assert any("listed more than once" in p for p in problems)
    assert any("'bob': empty" in p for p in problems)
    assert any("'carol': password longer than 72 bytes" in p for p in problems)


def test_member_must_be_a_present_user():
    problems = mod.check_inputs([user("alice"), user("mallory", state="absent")],
                                [spec("/x/f", ["alice", "mallory", "nobody"])], "bcrypt")
    assert problems == ["file '/x/f': member 'mallory' is not a present user",
                        "file '/x/f': member 'nobody' is not a present user"]


def test_run_writes_files_with_mode_and_one_hash_per_user(tmp_path, crypt):
    readers, uploaders = tmp_path / "r.htpasswd", tmp_path / "u.htpasswd"
    module = FakeModule(users=[user("alice", "a-pass"), user("bob", "b-pass")],
                        files=[spec(readers, ["alice", "bob"]), spec(uploaders, ["alice"])])
    result = mod.run(module, crypt)
    assert result["changed"] and result["rehashed"] == ["alice", "bob"]
    r, u = mod.parse(readers.read_text()), mod.parse(uploaders.read_text())
    assert sorted(r) == ["alice", "bob"] and sorted(u) == ["alice"]
    assert r["alice"] == u["alice"]
    assert crypt.verify("b-pass", r["bob"])
    assert oct(readers.stat().st_mode & 0o777) == "0o640"
    assert "a-pass" not in readers.read_text() + uploaders.read_text()


def test_rerun_with_same_passwords_changes_nothing(tmp_path, crypt):
    path = tmp_path / "f"
    params = dict(users=[user("alice", "a-pass")], files=[spec(path, ["alice"])])
    mod.run(FakeModule(**params), crypt)
    before = (path.read_text(), path.stat().st_mtime_ns)
    again = mod.run(FakeModule(**params), crypt)
    assert not again["changed"] and again["rehashed"] == []
    assert (path.read_text(), path.stat().st_mtime_ns) == before


def test_new_password_replaces_the_hash(tmp_path, crypt):
    path = tmp_path / "f"
    mod.run(FakeModule(users=[user("alice", "old")], files=[spec(path, ["alice"])]), crypt)
    result = mod.run(FakeModule(users=[user("alice", "new")], files=[spec(path, ["alice"])]), crypt)
    assert result["files"][0]["updated"] == ["alice"]
    stored = mod.parse(path.read_text())["alice"]
    assert crypt.verify("new", stored) and not crypt.verify("old", stored)


def test_cost_change_rehashes(tmp_path, crypt):
    path = tmp_path / "f"
    params = dict(users=[user("alice", "pw")], files=[spec(path, ["alice"])])
    mod.run(FakeModule(**params), crypt)
    result = mod.run(FakeModule(bcrypt_cost=5, **params), crypt)
    assert result["rehashed"] == ["alice"]
    assert mod.parse(path.read_text())["alice"].startswith("$2b$05$")


def test_absent_and_non_members_are_removed_unlisted_kept_unless_exclusive(tmp_path, crypt):
    path = tmp_path / "f"
    path.write_text("handmade:$2b$04$" + "a" * 53 + "\nmallory:$2b$04$" + "b" * 53 + "\n")
    users = [user("alice"), user("bob"), user("mallory", state="absent")]
    result = mod.run(FakeModule(users=users, files=[spec(path, ["alice"])]), crypt)
    report = result["files"][0]
    assert report["removed"] == ["mallory"] and report["unmanaged"] == ["handmade"]
    assert sorted(mod.parse(path.read_text())) == ["alice", "handmade"]
    result = mod.run(FakeModule(exclusive=True, users=users, files=[spec(path, ["alice"])]), crypt)
    assert result["files"][0]["removed"] == ["handmade"]
    assert sorted(mod.parse(path.read_text())) == ["alice"]


def test_check_mode_reports_but_writes_nothing(tmp_path, crypt):
    path = tmp_path / "f"
    result = mod.run(FakeModule(check_mode=True, users=[user("alice")], files=[spec(path, ["alice"])]), crypt)
    assert result["changed"] and result["files"][0]["added"] == ["alice"]
    assert not path.exists()


def test_mode_drift_is_repaired_without_rehashing(tmp_path, crypt):
    path = tmp_path / "f"
    params = dict(users=[user("alice")], files=[spec(path, ["alice"])])
    mod.run(FakeModule(**params), crypt)
    content = path.read_text()
    path.chmod(0o644)
    result = mod.run(FakeModule(**params), crypt)
    assert result["changed"] and result["rehashed"] == []
    assert oct(path.stat().st_mode & 0o777) == "0o640" and path.read_text() == content


def test_bad_input_touches_no_file(tmp_path, crypt):
    good = tmp_path / "good"
    good.write_text("keep:me\n")
    module = FakeModule(users=[user("alice"), user("b:b")], files=[spec(good, ["alice"])])
    with pytest.raises(AssertionError, match="':' separates"):
        mod.run(module, crypt)
    assert good.read_text() == "keep:me\n"


def test_unknown_group_is_refused_before_writing(tmp_path, crypt):
    path = tmp_path / "f"
    bad = dict(spec(path, ["alice"]), group="no-such-group-here")
    with pytest.raises(AssertionError, match="group 'no-such-group-here' does not exist"):
        mod.run(FakeModule(users=[user("alice")], files=[bad]), crypt)
    assert not path.exists()


def test_check_mode_on_a_fresh_host_reports_instead_of_failing(tmp_path, crypt):
    """Earlier tasks would create the directory and the group; check mode cannot."""
    path = tmp_path / "not-yet" / "f"
    warnings = []
    module = FakeModule(check_mode=True, users=[user("alice")],
                        files=[dict(spec(path, ["alice"]), group="no-such-group-here")])
    module.warn = warnings.append
    result = mod.run(module, crypt)
    assert result["changed"] and result["files"][0]["added"] == ["alice"]
    assert any("does not exist" in w for w in warnings)
    assert not path.parent.exists()


def test_damaged_entry_never_verifies_and_is_replaced(tmp_path, crypt):
    path = tmp_path / "f"
    path.write_text("alice:$6$s\u00e9lt$" + "a" * 86 + "\n")
    result = mod.run(FakeModule(scheme="sha512_crypt", users=[user("alice", "pw")], files=[spec(path, ["alice"])]),
                     crypt)
    assert result["files"][0]["updated"] == ["alice"]
    assert crypt.verify("pw", mod.parse(path.read_text())["alice"])


def test_symlinked_file_is_refused(tmp_path, crypt):
    target = tmp_path / "elsewhere"
    target.write_text("keep:me\n")
    (tmp_path / "f").symlink_to(target)
    with pytest.raises(AssertionError, match="symbolic link"):
        mod.run(FakeModule(users=[user("alice")], files=[spec(tmp_path / "f", ["alice"])]), crypt)
    assert target.read_text() == "keep:me\n"
