"""The users role over the wire: vaulted users, rights, the users-only run, secrets kept secret.

Playbooks run from the controller against this scenario's inventory, as operators run them.
Read rights are only enforced once the nginx proxy is in front; here pypiserver enforces the
upload rights from the uploaders file, and the readers file is checked as a file.
"""
import copy
import os
import re
import secrets
import subprocess
import time

import pytest

from conftest import USERS_DIR, main_pid, project_playbook, run_playbook, twine_status, twine_upload

testinfra_hosts = ["ansible://pypi_servers"]

READERS = f"{USERS_DIR}/main-readers.htpasswd"
UPLOADERS = f"{USERS_DIR}/main-uploaders.htpasswd"
CONVERGE = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "resources", "converge.yml")


def entries(host, path):
    return dict(line.split(":", 1) for line in host.file(path).content_string.splitlines() if line)


def make_wheel(host, version):
    return host.check_output(f"/usr/local/bin/make_wheel.py cheeseshop-users {version} /var/tmp/users-{version}")


def fresh_version():
    return f"2.0.{time.time_ns() // 1000}"


def with_uploader(indexes, name):
    changed = copy.deepcopy(indexes)
    changed[0]["upload"] = changed[0]["upload"] + [name]
    return changed


def files_state(host):
    return [(host.file(p).sha256sum, host.file(p).mtime) for p in (READERS, UPLOADERS)]


def test_files_are_readable_by_their_service_only(host):
    directory = host.file(USERS_DIR)
    assert (directory.user, directory.group, directory.mode) == ("root", "root", 0o755)
    for path, group in ((READERS, "www-data"), (UPLOADERS, "pypiserver")):
        f = host.file(path)
        assert (f.user, f.group, f.mode) == ("root", group, 0o640), path
    # runuser executes the command directly, so a nologin shell does not matter.
    assert host.run(f"runuser -u www-data -- cat {READERS}").rc == 0
    assert host.run(f"runuser -u www-data -- cat {UPLOADERS}").rc != 0
    assert host.run(f"runuser -u pypiserver -- cat {UPLOADERS}").rc == 0
    assert host.run(f"runuser -u pypiserver -- cat {READERS}").rc != 0
    assert host.run(f"runuser -u nobody -- cat {READERS} {UPLOADERS}").rc != 0


def test_files_hold_the_rights_of_the_inventory(host, indexes):
    main = indexes[0]
    assert sorted(entries(host, UPLOADERS)) == sorted(main["upload"])
    # Uploaders may always read their index.
    assert sorted(entries(host, READERS)) == sorted(set(main["read"]) | set(main["upload"]))


def test_hashes_are_bcrypt_and_no_password_is_stored_on_the_host(host, credentials):
    hashes = list(entries(host, READERS).values()) + list(entries(host, UPLOADERS).values())
    assert hashes and all(re.fullmatch(r"\$2b\$10\$[./A-Za-z0-9]{53}", h) for h in hashes), hashes
    # The passwords go to grep on its standard input: on a command line they would be logged.
    search = subprocess.run(
        ["docker", "exec", "-i", host.backend.get_hostname(), "grep", "-rIlF", "-f", "-",
         "/etc", "/opt", "/srv", "/var/lib", "/var/cache", "/var/log", "/root", "/tmp", "/var/tmp"],
        input="\n".join(credentials.values()) + "\n", capture_output=True, text=True, check=False,
    )
    # 1: grep ran and found nothing (0 is a match, 2 an error that would hide one).
    assert search.returncode == 1 and search.stdout == "", f"grep {search.returncode}: {search.stdout}{search.stderr}"


def test_reader_cannot_upload(host, test_vars, credentials, wheel):
    upload = twine_upload(host, test_vars, wheel["path"], "molecule-reader", credentials["molecule-reader"])
    assert upload.rc != 0 and twine_status(upload) == 403, upload.stdout + upload.stderr
    assert not host.file(f"/srv/pypi/packages/{os.path.basename(wheel['path'])}").exists


# The users logic (the same on every release): Debian 13's own hashing runs in converge and test_client_role.
@pytest.mark.scenarios("default")
def test_add_change_remove_a_user_with_the_users_playbook(host, test_vars, vault_users, indexes):
    """The everyday job: each step is one users-only run, and nothing is restarted."""
    probe = f"probe-{time.time_ns() // 1000}"
    first, second = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    rights = with_uploader(indexes, probe)
    playbook = project_playbook("users.yml")

    def apply(users, rights=rights):
        rc, output, seconds = run_playbook(host.backend.get_hostname(), playbook, {"pypi_users": users, "pypi_indexes": rights})
        assert rc == 0, output
        assert first not in output and second not in output
        return output, seconds

    def upload_as(password):
        return twine_upload(host, test_vars, make_wheel(host, fresh_version()), probe, password)

    pid = main_pid(host)
    try:
        output, seconds = apply(vault_users + [{"name": probe, "password": first}])
        print(f"users-only run that adds a user: {seconds:.1f} s")
        assert "changed=1" in output and f"added {probe}" in output, output
        assert upload_as(first).rc == 0

        output, seconds = apply(vault_users + [{"name": probe, "password": first}])
        print(f"users-only run with nothing to do: {seconds:.1f} s")
        assert "changed=0" in output, output

        output, _ = apply(vault_users + [{"name": probe, "password": second}])
        assert f"new password {probe}" in output, output
        refused = upload_as(first)
        assert refused.rc != 0 and "403" in refused.stdout + refused.stderr
        assert upload_as(second).rc == 0
    finally:
        # Removing a user: out of the index's rights, and absent from every file.
        output, _ = apply(vault_users + [{"name": probe, "state": "absent"}], rights=indexes)
    assert f"removed {probe}" in output, output
    assert probe not in entries(host, UPLOADERS) and probe not in entries(host, READERS)
    gone = upload_as(second)
    assert gone.rc != 0 and "403" in gone.stdout + gone.stderr
    assert main_pid(host) == pid, "a users-only run must not restart pypiserver"


# The users logic (the same on every release): Debian 13's own hashing runs in converge and test_client_role.
@pytest.mark.scenarios("default")
def test_exclusive_removes_entries_the_list_does_not_mention(host, vault_users, indexes):
    fake = "$2b$10$" + "x" * 53  # not a hash of anything
    host.check_output(f"echo 'handmade:{fake}' >> {UPLOADERS}")
    extra = {"pypi_users": vault_users, "pypi_indexes": indexes}
    rc, output, _ = run_playbook(host.backend.get_hostname(), project_playbook("users.yml"), extra)
    assert rc == 0, output
    assert "handmade" in entries(host, UPLOADERS), "kept by default: the list does not mention it"
    rc, output, _ = run_playbook(host.backend.get_hostname(), project_playbook("users.yml"), {**extra, "pypi_users_exclusive": True})
    assert rc == 0 and "removed handmade" in output, output
    assert "handmade" not in entries(host, UPLOADERS)


@pytest.mark.scenarios("default")
def test_no_secret_is_printed_at_vvv(host, vault_users, indexes, credentials):
    """The converge users run (users from vault), then a run that hashes a new password."""
    rc, output, _ = run_playbook(host.backend.get_hostname(), CONVERGE, verbosity=3)
    assert rc == 0, output[-3000:]
    assert "changed=0" in output, output[-3000:]
    leaked = [name for name, password in credentials.items() if password in output]
    assert leaked == [], f"passwords of {leaked} printed by the converge at -vvv"

    probe, password = f"vvv-{time.time_ns() // 1000}", secrets.token_urlsafe(18)
    rights = with_uploader(indexes, probe)
    try:
        rc, output, _ = run_playbook(host.backend.get_hostname(), project_playbook("users.yml"), verbosity=3, extra_vars={
            "pypi_users": vault_users + [{"name": probe, "password": password}], "pypi_indexes": rights})
        assert rc == 0 and f"added {probe}" in output, output[-3000:]
        assert password not in output
        assert not [name for name, secret in credentials.items() if secret in output]
    finally:
        run_playbook(host.backend.get_hostname(), project_playbook("users.yml"), {
            "pypi_users": vault_users + [{"name": probe, "state": "absent"}], "pypi_indexes": indexes})


@pytest.mark.scenarios("default")
def test_site_with_tags_users_changes_the_users_and_nothing_else(host, vault_users, indexes):
    """`site.yml --tags users`: the checks and the users role run, no other role's tasks do."""
    probe = f"tags-{time.time_ns() // 1000}"
    name = host.backend.get_hostname()
    try:
        rc, output, _ = run_playbook(name, project_playbook("site.yml"), {
            "pypi_users": vault_users + [{"name": probe, "password": secrets.token_urlsafe(18)}],
            "pypi_indexes": with_uploader(indexes, probe)}, tags="users")
        assert rc == 0 and f"added {probe}" in output, output[-3000:]
        others = re.findall(r"TASK \[cheeseshop\.pypi\.(?:pypiserver|nginx_proxy|data_volume) : "
                            r"(?!preflight \||Validating arguments)[^\]]*\]", output)
        assert others == [], others
        assert probe in entries(host, UPLOADERS)
    finally:
        run_playbook(name, project_playbook("users.yml"), {
            "pypi_users": vault_users + [{"name": probe, "state": "absent"}], "pypi_indexes": indexes})


BAD_ENTRIES = [
    # (extra users, index change, what the message says)
    ([{"name": "al:ice"}], None, "':' separates the name from the hash"),
    ([{"name": "al ice"}], None, "whitespace is not allowed in a user name"),
    ([{"name": "a" * 65}], None, "user names are at most 64 characters"),
    ([{"name": "carol", "password": ""}], None, "have an empty or missing password: carol"),
    ([{"name": "dave"}, {"name": "dave"}], None, "appear more than once: dave"),
    ([], {"read": ["ghost"]}, "gives read rights to 'ghost', who is not a present user"),
    ([], {"name": "Main Index"}, "index name 'Main Index' is not valid"),
]


@pytest.mark.parametrize("users,index_change,message", BAD_ENTRIES,
                         ids=["colon", "whitespace", "too-long", "empty-password", "duplicate",
                              "unknown-reader", "bad-index-name"])
def test_bad_entry_is_refused_before_any_change(host, vault_users, indexes, users, index_change, message):
    # Each bad entry carries a unique password: the failure must not print it either.
    marker = f"bad-entry-secret-{secrets.token_hex(8)}"
    bad_users = [{"password": marker, **u} for u in users]
    rights = copy.deepcopy(indexes)
    rights[0].update(index_change or {})
    before = files_state(host)
    rc, output, _ = run_playbook(host.backend.get_hostname(), project_playbook("users.yml"),
                                 {"pypi_users": vault_users + bad_users, "pypi_indexes": rights})
    assert rc == 2, output  # a failed task; 1 or 4 would be a crash or an unreachable host
    assert message in " ".join(output.split()), output
    assert "changed=0" in output, output
    assert marker not in output
    assert files_state(host) == before
