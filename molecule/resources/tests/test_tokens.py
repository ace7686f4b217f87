"""Tokens over the wire, from the client container (molecule/indexes): credentials for machines,
one index and one right each, refused from their expiry date without a converge.

The scenario's tokens are in host_vars/cheeseshop-indexes-server/tokens.vault.yml: ci-a-read
(read customer-a) and ci-a-upload (upload to customer-a) with their text in the vault, and
ci-public (upload to public), whose text the converge made on the controller.
"""
import os
import re
import secrets
import shlex
import stat
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import (client_wheel, https_upload, project_playbook, run_playbook,
                      status, twine_status, version)

testinfra_hosts = ["ansible://clients"]

PATHS = {"public": "/public/", "customer-a": "/private/customer-a/", "customer-b": "/private/customer-b/"}
USERS_DIR = "/etc/pypi-users"


def page(server, index):
    return f"https://{server}{PATHS[index]}simple/"


def upload(host, test_vars, server, ca, index, name, password, project="cheeseshop-token"):
    return https_upload(host, test_vars, server, ca, client_wheel(host, project, version()), (name, password),
                        PATHS[index])


def test_a_made_token_is_in_a_file_only_its_owner_reads(token):
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "tokens", "ci-public.token")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert re.fullmatch(r"cheeseshop_ci-public\.[A-Za-z0-9]{48}", token["ci-public"])


def test_the_host_keeps_hashes_and_dates_only(server_host, token):
    """Each index's two files: every token for nginx, the upload ones for pypiserver."""
    expected = {"public": ({"ci-public"}, {"ci-public"}), "customer-a": ({"ci-a-read", "ci-a-upload"}, {"ci-a-upload"}),
                "customer-b": (set(), set())}
    for index, (readers, uploaders) in expected.items():
        for kind, names, group in (("read", readers, "www-data"), ("upload", uploaders, "pypiserver")):
            path = f"{USERS_DIR}/{index}-{kind}.tokens"
            found = server_host.file(path)
            assert (found.user, found.group, found.mode) == ("root", group, 0o640), path
            lines = [line.split(":") for line in found.content_string.splitlines()]
            assert {line[0] for line in lines} == names, path
            assert all(re.fullmatch(r"[0-9a-f]{64}", h) and e == "4070908800" for _, h, e in lines), lines
    for name, text in token.items():
        secret = text.rsplit(".", 1)[1]
        found = server_host.run(f"grep -rlF -D skip {shlex.quote(secret)} /etc /srv /var/log /run")
        assert found.rc == 1, f"the text of token {name} is on the host: {found.stdout}"


@pytest.mark.parametrize("name", ["__token__", "ci-public", ""], ids=["__token__", "own-name", "empty-name"])
def test_an_upload_token_uploads_to_its_index_with_any_user_name(host, test_vars, server, ca, token, name):
    run = upload(host, test_vars, server, ca, "public", name, token["ci-public"])
    assert run.rc == 0, run.stdout + run.stderr


def test_an_upload_token_is_refused_by_every_other_index(host, test_vars, server, ca, curl, token):
    for index in ("customer-a", "customer-b"):
        run = upload(host, test_vars, server, ca, index, "__token__", token["ci-public"])
        assert run.rc != 0 and twine_status(run) == 401, run.stdout + run.stderr
        assert status(host, curl, page(server, index), ("__token__", token["ci-public"])) == 401


def test_a_read_token_reads_its_index_and_cannot_upload(host, test_vars, server, ca, curl, token):
    assert status(host, curl, page(server, "customer-a"), ("__token__", token["ci-a-read"])) == 200
    assert status(host, curl, page(server, "customer-b"), ("__token__", token["ci-a-read"])) == 401
    run = upload(host, test_vars, server, ca, "customer-a", "__token__", token["ci-a-read"])
    # Past nginx (it may read), then pypiserver's answer to a credential without the right.
    assert run.rc != 0 and twine_status(run) == 403, run.stdout + run.stderr


def test_uv_publishes_and_pip_and_uv_install_with_tokens(host, test_vars, server, ca, token):
    """uv publish --token (it sends __token__), then pip and uv read with the read token."""
    project, ver = "cheeseshop-token-tools", version()
    wheel = client_wheel(host, project, ver)
    uv = f"{test_vars['cheeseshop_test_client_venv']}/bin/uv"
    run = host.run(f"SSL_CERT_FILE={ca} {uv} publish --publish-url https://{server}{PATHS['customer-a']} "
                   f"--token {shlex.quote(token['ci-a-upload'])} {shlex.quote(wheel)}")
    assert run.rc == 0, run.stdout + run.stderr
    venv = "/var/tmp/tokens-client"
    index = f"https://__token__:{token['ci-a-read']}@{server}{PATHS['customer-a']}simple/"
    host.check_output(f"rm -rf {venv} && python3 -m venv {venv}")
    host.check_output(f"{venv}/bin/pip install --no-cache-dir --cert {ca} --index-url {shlex.quote(index)} "
                      f"{project}=={ver}")
    host.check_output(f"{venv}/bin/pip uninstall -y {project}")
    host.check_output(f"SSL_CERT_FILE={ca} {uv} pip install --no-cache --python {venv}/bin/python "
                      f"--index-url {shlex.quote(index)} {project}=={ver}")
    assert f"{project}=={ver}" in host.check_output(f"{venv}/bin/pip list --format=freeze")


def test_a_wrong_or_unknown_token_is_refused_and_counted(host, server, curl, token):
    right = token["ci-a-read"]
    wrong = right[:-1] + ("0" if right[-1] != "0" else "1")
    assert status(host, curl, page(server, "customer-a"), ("__token__", wrong)) == 401
    stranger = f"cheeseshop_nobody.{secrets.token_hex(32)}"
    assert status(host, curl, page(server, "customer-a"), ("__token__", stranger)) == 401
    # Guesses at one token from one address: barred past the limit, as a user's are. A name of
    # this run's, so that a rerun within the failure window starts from nothing.
    guessed = f"guessed-{secrets.token_hex(3)}"
    codes = [status(host, curl, page(server, "customer-b"), ("x", f"cheeseshop_{guessed}.{secrets.token_hex(32)}"))
             for _ in range(22)]
    assert codes[:20] == [401] * 20 and codes[-1] == 429, codes


def test_tokens_expire_at_request_time_and_revoke_alone(host, server_host, test_vars, server, ca, curl,
                                                         vault_users, vault_tokens, token, tmp_path):
    """A users run adds a token that expires within a minute and a made one; a made token keeps
    its hash when its controller file is gone; state absent revokes one token alone; the
    expired one is refused without any run. No token's text is printed at -vvv."""
    expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=45)
    suffix = secrets.token_hex(3)
    brief_name, made_name = f"brief-{suffix}", f"made-{suffix}"
    brief = f"cheeseshop_{brief_name}.{secrets.token_hex(32)}"
    base = {"pypi_users": vault_users, "users_tokens_dir": str(tmp_path)}
    added = vault_tokens + [
        {"name": brief_name, "index": "customer-a", "scope": "upload", "expires": expires.isoformat(), "token": brief},
        {"name": made_name, "index": "customer-a", "expires": "2099-01-01"}]
    hostname = server_host.backend.get_hostname()
    users = project_playbook("users.yml")
    try:
        rc, output, _ = run_playbook(hostname, users, {**base, "pypi_tokens": added}, verbosity=3)
        assert rc == 0, output[-3000:]
        made = (tmp_path / f"{made_name}.token").read_text().strip()
        leaked = [name for name, text in {**token, brief_name: brief, made_name: made}.items()
                  if text.rsplit(".", 1)[1] in output]
        assert leaked == [], f"the text of {leaked} was printed at -vvv"
        assert f"Token {made_name} was made: its text is in {tmp_path}/{made_name}.token" in output
        reader = ("__token__", made)
        assert status(host, curl, page(server, "customer-a"), reader) == 200
        run = upload(host, test_vars, server, ca, "customer-a", "ci", brief)
        assert run.rc == 0, run.stdout + run.stderr

        # The controller's file handed out and removed: the host keeps the token; nothing changes.
        (tmp_path / f"{made_name}.token").unlink()
        rc, output, _ = run_playbook(hostname, users, {**base, "pypi_tokens": added})
        assert rc == 0 and re.search(r"changed=0\b", output), output[-3000:]
        assert status(host, curl, page(server, "customer-a"), reader) == 200

        revoked = vault_tokens + [added[-2], {"name": made_name, "state": "absent"}]
        rc, output, _ = run_playbook(hostname, users, {**base, "pypi_tokens": revoked})
        assert rc == 0, output[-3000:]
        time.sleep(1.1)  # nginx re-reads the file at most once a second
        assert status(host, curl, page(server, "customer-a"), reader) == 401
        assert status(host, curl, page(server, "customer-a"), ("__token__", token["ci-a-read"])) == 200

        while datetime.now(timezone.utc) < expires:
            time.sleep(0.5)
        assert status(host, curl, page(server, "customer-a"), ("__token__", brief)) == 401
        run = upload(host, test_vars, server, ca, "customer-a", "ci", brief)
        assert run.rc != 0 and twine_status(run) == 401, run.stdout + run.stderr
    finally:
        rc, output, _ = run_playbook(hostname, users, {**base, "pypi_tokens": vault_tokens})
        assert rc == 0, output[-3000:]


def test_bad_tokens_are_refused_before_any_change(server_host, vault_users, vault_tokens):
    before = server_host.check_output(f"sha256sum {USERS_DIR}/*.tokens")
    marker = f"cheeseshop_ci-bad.{secrets.token_hex(32)}"
    bad = vault_tokens + [{"name": "ci-bad", "index": "nowhere", "expires": "soon", "token": marker},
                          {"name": "customer-a-dev", "index": "public", "expires": "2099-01-01"}]
    rc, output, _ = run_playbook(server_host.backend.get_hostname(), project_playbook("users.yml"),
                                 {"pypi_users": vault_users, "pypi_tokens": bad})
    assert rc != 0
    for message in ("token 'ci-bad' is for index 'nowhere', which is not in pypi_indexes",
                    "token 'ci-bad': expires 'soon' is not a date",
                    "token 'customer-a-dev' has the name of a user in pypi_users"):
        assert message in output, output[-3000:]
    assert marker.rsplit(".", 1)[1] not in output
    assert server_host.check_output(f"sha256sum {USERS_DIR}/*.tokens") == before


def test_project_owners_keep_other_uploaders_of_the_index_out(host, test_vars, server, ca, curl, token, user):
    """customer-a's owners (host_vars): cheeseshop-owned-* takes uploads from customer-a-dev only.
    The ci-a-upload token, an uploader of customer-a, gets 403 for it with twine and uv, and
    cannot remove it either; the owner uploads; a project no owner names still takes the token."""
    ver = version()
    refused = upload(host, test_vars, server, ca, "customer-a", "__token__", token["ci-a-upload"],
                     project="cheeseshop-owned-widget")
    assert refused.rc != 0 and twine_status(refused) == 403, refused.stdout + refused.stderr
    uv = f"{test_vars['cheeseshop_test_client_venv']}/bin/uv"
    # Spelled otherwise, the same project (names compare as PEP 503 normalises them).
    wheel = client_wheel(host, "Cheeseshop_Owned.Widget", ver)
    by_uv = host.run(f"SSL_CERT_FILE={ca} {uv} publish --publish-url https://{server}{PATHS['customer-a']} "
                     f"--token {shlex.quote(token['ci-a-upload'])} {shlex.quote(wheel)}")
    assert by_uv.rc != 0 and "403" in by_uv.stdout + by_uv.stderr, by_uv.stdout + by_uv.stderr
    owner = https_upload(host, test_vars, server, ca, wheel, user("customer-a-dev"), PATHS["customer-a"])
    assert owner.rc == 0, owner.stdout + owner.stderr
    removal = host.run(f"{curl} -o /dev/null -w '%{{http_code}}' -u {shlex.quote('__token__:' + token['ci-a-upload'])} "
                       f"-F ':action=remove_pkg' -F name=cheeseshop-owned-widget -F version={ver} "
                       f"https://{server}{PATHS['customer-a']}")
    assert removal.stdout == "403", removal.stdout
    assert f"cheeseshop_owned_widget-{ver}" in host.check_output(
        f"{curl} -u {shlex.quote('customer-a-dev:' + user('customer-a-dev')[1])} "
        f"https://{server}{PATHS['customer-a']}simple/cheeseshop-owned-widget/")
    other = upload(host, test_vars, server, ca, "customer-a", "__token__", token["ci-a-upload"],
                   project="cheeseshop-unowned")
    assert other.rc == 0, other.stdout + other.stderr


def test_a_missing_owners_file_takes_no_upload(host, server_host, test_vars, server, ca, token):
    """Fail closed: who may upload what is unknown, so nobody does (503), until it is back."""
    owners = f"{USERS_DIR}/customer-a-owners.json"
    server_host.check_output(f"mv {owners} {owners}.away")
    try:
        run = upload(host, test_vars, server, ca, "customer-a", "__token__", token["ci-a-upload"],
                     project="cheeseshop-unowned")
        assert run.rc != 0 and twine_status(run) == 503, run.stdout + run.stderr
    finally:
        server_host.check_output(f"mv {owners}.away {owners}")
    run = upload(host, test_vars, server, ca, "customer-a", "__token__", token["ci-a-upload"], project="cheeseshop-unowned")
    assert run.rc == 0, run.stdout + run.stderr
