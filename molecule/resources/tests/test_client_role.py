"""cheeseshop.pypi.clients on the client container: its plain user installs and uploads with no
flag and no environment variable, and the password is only where that user alone reads it.

Everything runs as the user through a login shell (`su --login`), as a developer types it.
"""
import configparser
import copy
import secrets
import shlex
import tomllib

import pytest

from conftest import client_wheel, https_upload, project_playbook, run_playbook, status, version

testinfra_hosts = ["ansible://pypi_clients"]

PROJECT = "cheeseshop-probe"
MODULE = "cheeseshop_probe"
# Where the role writes, under the user's home.
FILES = (".config/pip/pip.conf", ".config/uv/uv.toml", ".config/pypoetry/config.toml", ".pypirc", ".netrc")
# Those of them that name the index but hold no credential.
PLAIN = FILES[:3]
ORIG = ".cheeseshop-orig"


def login(host, user, command):
    """command as user in a login shell: the environment is the user's own, nothing from ours."""
    return host.run(f"su --login {shlex.quote(user)} --command {shlex.quote(command)}")


@pytest.fixture(scope="module")
def user(test_vars):
    return test_vars["cheeseshop_test_plain_user"]


@pytest.fixture(scope="module")
def home(host, user):
    return host.user(user).home


@pytest.fixture(scope="module")
def tools(test_vars):
    """twine, uv and pip, from the client virtualenv prepare made, and poetry from its own (a
    full path is not a flag)."""
    venv = test_vars["cheeseshop_test_client_venv"]
    return {"twine": f"{venv}/bin/twine", "uv": f"{venv}/bin/uv", "pip": f"{venv}/bin/pip",
            "poetry": f"{test_vars['cheeseshop_test_poetry_venv']}/bin/poetry"}


@pytest.fixture(scope="module")
def password(test_vars, credentials):
    """The password of the account the converge configured."""
    return credentials[test_vars["client_accounts"][0]["username"]]


@pytest.fixture
def published(host, test_vars, server, ca, uploader):
    """A version of the probe package that no earlier run uploaded, on the index (uploaded as
    the other tests do, with explicit flags: the user's own configuration is not involved)."""
    ver = version()
    path = client_wheel(host, PROJECT, ver)
    run = https_upload(host, test_vars, server, ca, path, uploader)
    assert run.rc == 0, run.stdout + run.stderr
    yield ver
    host.run(f"rm -rf /var/tmp/proxy-{ver}")


def installed_version(host, user, python):
    return login(host, user, f"{python} -c 'import {MODULE} as m; print(m.VERSION)'").stdout.strip()


def test_the_login_shell_sets_nothing_for_the_tools(host, user):
    """The tests below would prove nothing if the environment configured the tools."""
    env = login(host, user, "env").stdout.split("\n")
    names = ("PIP_", "UV_", "TWINE_", "REQUESTS_CA_BUNDLE=", "CURL_CA_BUNDLE=", "SSL_CERT_", "NETRC=")
    assert [line.split("=", 1)[0] for line in env if line.startswith(names)] == []


def test_pip_installs_with_no_flags(host, user, published):
    run = login(host, user, f"python3 -m venv ~/pip-{published} && ~/pip-{published}/bin/pip install "
                            f"{PROJECT}=={published}")
    assert run.rc == 0, run.stdout + run.stderr
    assert installed_version(host, user, f"~/pip-{published}/bin/python") == published


def test_uv_pip_installs_with_no_flags(host, user, tools, published):
    run = login(host, user, f"mkdir ~/uv-{published} && cd ~/uv-{published} && {tools['uv']} venv && "
                            f"{tools['uv']} pip install {PROJECT}=={published}")
    assert run.rc == 0, run.stdout + run.stderr
    assert installed_version(host, user, f"~/uv-{published}/.venv/bin/python") == published


def test_uv_add_with_no_flags(host, user, tools, published):
    run = login(host, user, f"mkdir ~/add-{published} && cd ~/add-{published} && {tools['uv']} init --bare && "
                            f"{tools['uv']} add {PROJECT}=={published}")
    assert run.rc == 0, run.stdout + run.stderr
    assert installed_version(host, user, f"~/add-{published}/.venv/bin/python") == published


def test_poetry_add_with_no_flags(host, user, tools, server, published):
    """poetry has no machine-wide source: the project names the index once, by the index's name,
    as a team commits it in pyproject.toml. The CA and the login come from the role's files."""
    project = f"~/poetry-{published}"
    run = login(host, user, f"mkdir {project} && cd {project} && {tools['poetry']} init --no-interaction "
                            f"--name consumer && {tools['poetry']} source add --priority=primary main "
                            f"https://{server}/simple/ && {tools['poetry']} add {PROJECT}=={published}")
    assert run.rc == 0, run.stdout + run.stderr
    got = login(host, user, f"cd {project} && {tools['poetry']} run python -c "
                            f"'import {MODULE} as m; print(m.VERSION)'").stdout.strip()
    assert got == published


def test_twine_uploads_by_repository_name(host, user, tools, curl, server, reader):
    ver = version()
    wheel = client_wheel(host, PROJECT, ver)
    try:
        run = login(host, user, f"{tools['twine']} upload --repository main {wheel}")
        assert run.rc == 0, run.stdout + run.stderr
        page = host.check_output(f"{curl} -u {shlex.quote(':'.join(reader))} https://{server}/simple/{PROJECT}/")
        assert wheel.rsplit("/", 1)[1] in page
    finally:
        host.run(f"rm -rf /var/tmp/proxy-{ver}")


def test_the_credential_files_are_the_users_alone(host, user, home):
    got = {name: (host.file(f"{home}/{name}").mode, host.file(f"{home}/{name}").user) for name in (".netrc", ".pypirc")}
    assert got == {".netrc": (0o600, user), ".pypirc": (0o600, user)}


def test_pip_and_uv_configuration_hold_no_credential(host, home, password, test_vars):
    username = test_vars["client_accounts"][0]["username"]
    for name in PLAIN:
        text = host.file(f"{home}/{name}").content_string
        assert "https://" in text and password not in text and username not in text, name


def test_only_the_credential_files_hold_the_password(host, home, password):
    # grep reads the password from stdin: it is in no command line of the host.
    found = host.run(f"printf %s {shlex.quote(password)} | grep -rlsF -f - /home /root /etc /opt /srv /usr/local "
                     "/var/tmp /tmp").stdout.split()
    assert sorted(found) == [f"{home}/.netrc", f"{home}/.pypirc"]


def test_no_other_user_can_read_the_password(host, password):
    run = host.run(f"printf %s {shlex.quote(password)} | runuser -u nobody -- grep -rlsF -f - /home /root /etc "
                   "/opt /srv /usr/local /var/tmp /tmp")
    # grep: 1 when nothing matched, 2 when some file was unreadable too; either way no match.
    assert (run.rc, run.stdout) in ((1, ""), (2, ""))


def test_no_command_line_or_environment_holds_the_password_during_a_long_download(
        host, user, tools, test_vars, server, ca, uploader, password):
    """While pip downloads a 50 MiB file as the user, every process's command line and the
    user's processes' environments are read over and over: none holds the password, or a URL
    with a login in it. The samples must include pip's own command line (the check saw it run)."""
    ver = version()
    wheel = client_wheel(host, PROJECT, ver, payload_mb=50)
    samples, environs = f"/var/tmp/proxy-{ver}/ps", f"/var/tmp/proxy-{ver}/environ"
    try:
        run = https_upload(host, test_vars, server, ca, wheel, uploader)
        assert run.rc == 0, run.stdout + run.stderr
        download = shlex.quote(f"{tools['pip']} download --no-deps --dest ~/dl-{ver} {PROJECT}=={ver}")
        run = host.run(
            f"su --login {user} --command {download} & pid=$!; "
            f"while kill -0 $pid 2>/dev/null; do ps -eo args >> {samples}; "
            f"for p in $(pgrep -u {user}); do tr '\\0' '\\n' < /proc/$p/environ; done >> {environs} 2>/dev/null; "
            "done; wait $pid")
        assert run.rc == 0, run.stdout + run.stderr
        got = host.file(f"{host.user(user).home}/dl-{ver}/{wheel.rsplit('/', 1)[1]}").sha256sum
        assert got == host.file(wheel).sha256sum
        lines = host.file(samples).content_string.split("\n")
        assert any("download --no-deps --dest" in line for line in lines), "pip was never seen running"
        leaked = [line for line in lines + host.file(environs).content_string.split("\n")
                  if password in line or f"{uploader[0]}:" in line or f"{uploader[0]}@" in line]
        assert leaked == []
    finally:
        host.run(f"rm -rf /var/tmp/proxy-{ver} ~{user}/dl-{ver}")


# --- A second account, created and removed by the test --------------------------------------

ORIGINAL_NETRC = "machine git.example.org login someone password not-the-index\n"
ORIGINAL_PIP = "[global]\ntimeout = 30\n"


@pytest.fixture
def fresh_account(host, reader):
    """A new local user with a ~/.netrc and a pip.conf of its own, given an account on the index
    (molecule-reader's; the password comes from client_users, the vault); removed afterwards."""
    local = f"ci-{version().rsplit('.', 1)[1][-6:]}"
    host.check_output(f"useradd --create-home --shell /bin/bash {local}")
    home = host.user(local).home
    host.check_output(f"install -d -o {local} -g {local} {home}/.config {home}/.config/pip && "
                      f"printf %s {shlex.quote(ORIGINAL_NETRC)} > {home}/.netrc && "
                      f"printf %s {shlex.quote(ORIGINAL_PIP)} > {home}/.config/pip/pip.conf && "
                      f"chown {local}: {home}/.netrc {home}/.config/pip/pip.conf && chmod 0600 {home}/.netrc")
    extra = {"client_accounts": [{"user": local, "index": "main", "username": reader[0]}]}
    yield {"user": local, "home": home, "extra": extra}
    host.run(f"userdel --remove {local}")


def test_a_verbose_run_with_diff_prints_no_password(host, name, fresh_account, reader):
    rc, out, _ = run_playbook(name, project_playbook("clients.yml"), fresh_account["extra"], verbosity=3, diff=True)
    assert rc == 0, out[-3000:]
    assert reader[1] not in out


def test_the_indexes_come_from_pypi_indexes_and_each_gets_its_entries(host, name, server, fresh_account, reader):
    """With pypi_indexes visible to the client (group_vars/all), client_indexes takes their names
    and paths from it. An account on two indexes: pip and uv install from the first (uv's
    second index is explicit), and twine and poetry get a repository for each."""
    home, user = fresh_account["home"], fresh_account["user"]
    # A layout the server accepts: two indexes, each at a path of its own.
    extra = {"pypi_indexes": [{"name": "main", "path": "/main/", "read": [reader[0]]},
                              {"name": "team", "path": "/private/team/", "upload": [reader[0]]}],
             "client_accounts": [{"user": user, "index": index, "username": reader[0]} for index in ("main", "team")]}
    rc, out, _ = run_playbook(name, project_playbook("clients.yml"), extra)
    assert rc == 0, out[-3000:]
    pip = configparser.ConfigParser()
    pip.read_string(host.file(f"{home}/.config/pip/pip.conf").content_string)
    pypirc = configparser.ConfigParser()
    pypirc.read_string(host.file(f"{home}/.pypirc").content_string)
    uv = tomllib.loads(host.file(f"{home}/.config/uv/uv.toml").content_string)
    poetry = tomllib.loads(host.file(f"{home}/.config/pypoetry/config.toml").content_string)
    base = f"https://{server}"
    assert pip["global"]["index-url"] == f"{base}/main/simple/"
    assert [(i["name"], i["url"], i.get("default", False), i.get("explicit", False)) for i in uv["index"]] == [
        ("main", f"{base}/main/simple/", True, False), ("team", f"{base}/private/team/simple/", False, True)]
    assert pypirc["distutils"]["index-servers"].split() == ["main", "team"]
    assert (pypirc["main"]["repository"], pypirc["team"]["repository"]) == (f"{base}/main/", f"{base}/private/team/")
    assert {key: value["url"] for key, value in poetry["repositories"].items()} == {
        "main": f"{base}/main/", "team": f"{base}/private/team/"}
    assert set(poetry["certificates"]) == {"main", "team"}


def test_absent_puts_back_the_files_there_were(host, name, fresh_account):
    """Present, then absent: the user's own files are back as they were, the role's are gone, and
    so is the CA (under a name of its own here: the scenario's CA stays for the other tests)."""
    home, playbook = fresh_account["home"], project_playbook("clients.yml")
    ca_name = f"cheeseshop-{fresh_account['user']}"
    extra = {**fresh_account["extra"], "client_ca_name": ca_name}
    rc, out, _ = run_playbook(name, playbook, extra)
    assert rc == 0, out[-3000:]
    rc, out, _ = run_playbook(name, playbook, {**extra, "client_state": "absent"})
    assert rc == 0, out[-3000:]
    paths = [f"{home}/{path}" for path in FILES + tuple(f + ORIG for f in FILES)]
    paths.append(f"/usr/local/share/ca-certificates/{ca_name}.crt")
    got = {path: (host.file(path).content_string if host.file(path).exists else None) for path in paths}
    assert got == {**{path: None for path in paths},
                   f"{home}/.config/pip/pip.conf": ORIGINAL_PIP, f"{home}/.netrc": ORIGINAL_NETRC}


def test_an_account_of_no_local_user_fails_before_anything_changes(host, name, reader):
    """Bad input stops the run with a message that names the offender, before the CA (the first
    change the role makes) is written, and the message holds no password."""
    ca_name = f"cheeseshop-refused-{version().rsplit('.', 1)[1]}"
    extra = {"client_ca_name": ca_name,
             "client_accounts": [{"user": "no-such-account", "index": "main", "username": reader[0]}]}
    rc, out, _ = run_playbook(name, project_playbook("clients.yml"), extra)
    written = host.file(f"/usr/local/share/ca-certificates/{ca_name}.crt").exists
    assert (rc != 0, "no local account no-such-account" in out, written, reader[1] in out) == (True, True, False, False)


def refused_before_anything_changes(host, name, fresh_account, change, message):
    """After change (a shell command) in the fresh account's home, clients.yml fails with message
    and writes nothing: not the CA (its first change), no original kept, no file, no directory."""
    home = fresh_account["home"]
    host.check_output(change.format(home=home))
    ca_name = f"cheeseshop-{fresh_account['user']}"
    extra = {**fresh_account["extra"], "client_ca_name": ca_name}
    rc, out, _ = run_playbook(name, project_playbook("clients.yml"), extra)
    written = [path for path in (f"/usr/local/share/ca-certificates/{ca_name}.crt", f"{home}/.netrc{ORIG}",
                                 f"{home}/.pypirc", f"{home}/.config/uv") if host.file(path).exists]
    assert (rc != 0, message.format(home=home) in " ".join(out.split()), written) == (True, True, [])


def test_a_home_directory_of_another_owner_is_refused_before_anything_changes(host, name, fresh_account):
    """The role writes in a home as its account only: a ~/.config that root made (sudo, an image
    build) is reported by name, not taken over by root, and nothing is written."""
    refused_before_anything_changes(host, name, fresh_account, "chown root:root {home}/.config",
                                    "{home}/.config (owner root)")


def test_a_link_in_the_home_is_refused_before_anything_changes(host, name, fresh_account):
    """An account's ~/.netrc pointing at /etc/shadow is refused before anything is read or
    written: the shadow file is never copied to it as "the original"."""
    refused_before_anything_changes(host, name, fresh_account, "ln -sfn /etc/shadow {home}/.netrc",
                                    "links: {home}/.netrc.")


# What a local account runs to race the role (second review, finding 1): it waits for the
# role's own read of ~/.netrc (inotify), which comes after the role checked for links, then
# swaps ~/.config for a link to a root-owned directory and ~/.pypirc for a link to /etc/shadow.
RACER = r'''
import ctypes, os, struct, sys
home, victim = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
libc.inotify_add_watch(fd, f"{home}/.netrc".encode(), 0x20)  # IN_OPEN
open(f"{home}/racer-ready", "w").close()
os.read(fd, 4096)
os.rename(f"{home}/.config", f"{home}/config-moved")
os.symlink(victim, f"{home}/.config")
os.unlink(f"{home}/.pypirc")
os.symlink("/etc/shadow", f"{home}/.pypirc")
open(f"{home}/racer-done", "w").close()
'''


def test_an_account_that_swaps_its_files_for_links_mid_run_gains_nothing(host, name, fresh_account):
    """Second review, finding 1: the role checked for links first and wrote as root later. An
    account that swapped ~/.config for a link to /usr/local/sbin and ~/.pypirc for a link to
    /etc/shadow in between got that directory as its own and a copy of the shadow file. Every
    read and write in a home now runs as its account: the run may fail, but the directory
    stays root's, and no copy of /etc/shadow is anywhere the account can read."""
    user, home = fresh_account["user"], fresh_account["home"]
    victim = f"/opt/cheeseshop-victim-{user}"
    host.check_output(f"install -d -o root -g root -m 0755 {victim} && "
                      f"printf '[distutils]\\n' > {home}/.pypirc && chown {user}: {home}/.pypirc")
    shadow = host.file("/etc/shadow")
    before = (shadow.user, shadow.group, shadow.mode, shadow.sha256sum)
    host.check_output(f"printf %s {shlex.quote(RACER)} > /var/tmp/racer-{user}.py && "
                      f"(runuser -u {user} -- python3 /var/tmp/racer-{user}.py {home} {victim} "
                      f"> /var/tmp/racer-{user}.log 2>&1 &) && "
                      f"for i in $(seq 1 50); do [ -e {home}/racer-ready ] && exit 0; sleep 0.1; done; exit 1")
    try:
        run_playbook(name, project_playbook("clients.yml"), fresh_account["extra"])
        assert host.file(f"{home}/racer-done").exists, host.file(f"/var/tmp/racer-{user}.log").content_string
        directory = host.file(victim)
        assert (directory.user, directory.group, directory.mode) == ("root", "root", 0o755)
        assert host.check_output(f"ls -A {victim}") == ""
        after = host.file("/etc/shadow")
        assert (after.user, after.group, after.mode, after.sha256sum) == before
        readable = host.run(f"runuser -u {user} -- grep -rls '^root:' {home}")
        assert readable.stdout.strip() == "", readable.stdout
    finally:
        host.run(f"pkill -u {user} -f racer; rm -rf {victim} /var/tmp/racer-{user}.py /var/tmp/racer-{user}.log")


def test_a_password_rotated_in_vault_works_at_once_on_both_sides(host, name, server, fresh_account, vault_users,
                                                                 indexes, tools, curl, published):
    """A user of the index gets a new password in vault; users.yml on the server and clients.yml
    on the client, each run once, and the account's next pip install works, while the old
    password is refused at once. The extra vars stand in for the vault: pypi_users is what both
    sides read (the client's client_users is the server's pypi_users)."""
    probe = f"rotate-{version().rsplit('.', 1)[1]}"
    first, second = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    rights = copy.deepcopy(indexes)
    rights[0]["read"] = rights[0]["read"] + [probe]
    local = fresh_account["user"]
    account = {"client_accounts": [{"user": local, "index": "main", "username": probe}]}

    def rotate_to(password):
        users = vault_users + [{"name": probe, "password": password}]
        for hostname, playbook, extra in ((server, "users.yml", {"pypi_indexes": rights}), (name, "clients.yml", account)):
            rc, out, _ = run_playbook(hostname, project_playbook(playbook), {"pypi_users": users, **extra})
            assert rc == 0, out[-3000:]
            assert first not in out and second not in out

    def installs():
        run = login(host, local, f"rm -rf ~/v && python3 -m venv ~/v && ~/v/bin/pip install {PROJECT}=={published}")
        return run.rc == 0 and installed_version(host, local, "~/v/bin/python") == published

    def status_with(password):
        return status(host, curl, f"https://{server}/simple/{PROJECT}/", (probe, password))

    try:
        rotate_to(first)
        assert (installs(), status_with(first)) == (True, 200)
        rotate_to(second)
        assert (installs(), status_with(second), status_with(first)) == (True, 200, 401)
    finally:
        rc, out, _ = run_playbook(server, project_playbook("users.yml"),
                                  {"pypi_users": vault_users + [{"name": probe, "state": "absent"}], "pypi_indexes": indexes})
        assert rc == 0, out[-3000:]
