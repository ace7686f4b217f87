"""The audit log over the wire, from the client container (molecule/indexes): one JSON line per
upload, removal, refused upload, refused token and converge that changes rights, with the
right fields and never a secret; and the audit playbook that answers "who uploaded this file?"
and "what did this token do?".

The page service writes /var/log/cheeseshop-pypi/audit.log (and the journal); nginx writes its
refused tokens to /var/log/nginx/cheeseshop-audit.log (and the journal).
"""
import json
import os
import re
import shlex
import time

import pytest
import yaml

from conftest import (PROJECT, client_wheel, https_upload, project_playbook, run_playbook, status, twine_status,
                      version)

testinfra_hosts = ["ansible://clients"]

AUDIT_LOG = "/var/log/cheeseshop-pypi/audit.log"
NGINX_AUDIT_LOG = "/var/log/nginx/cheeseshop-audit.log"
CUSTOMER_A = "/private/customer-a/"
FIELDS = {"time", "index", "identity", "address", "action", "file", "sha256", "size", "result"}
HOST_VARS = os.path.join(PROJECT, "molecule", "indexes", "inventory", "host_vars", "cheeseshop-indexes-server",
                         "main.yml")


def lines(server_host, path=AUDIT_LOG):
    found = server_host.file(path)
    return [json.loads(line) for line in found.content_string.splitlines()] if found.exists else []


def new_lines(server_host, path, before, count=1):
    """The lines written after the first `before` ones: nginx writes its line once the answer
    has gone, so it is waited for (a few seconds at most)."""
    for _ in range(50):
        found = lines(server_host, path)[before:]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    return found


def about(server_host, **fields):
    return [line for line in lines(server_host) if all(line.get(k) == v for k, v in fields.items())]


@pytest.fixture(scope="module")
def client_address(server_host, test_vars):
    """The client's address as the server sees it (their shared network's)."""
    return server_host.check_output(f"getent hosts {test_vars['groups']['clients'][0]}").split()[0]


def test_the_audit_log_is_the_page_service_s_and_read_by_adm(server_host):
    log, directory = server_host.file(AUDIT_LOG), server_host.file(os.path.dirname(AUDIT_LOG))
    assert (log.user, log.group, log.mode) == ("cheeseshop-pages", "adm", 0o640)
    assert (directory.user, directory.group, directory.mode) == ("cheeseshop-pages", "adm", 0o2750)
    # pypiserver's user, who asks for each line, cannot change one.
    assert server_host.run(f"runuser -u pypiserver -- sh -c 'echo forged >> {AUDIT_LOG}'").rc != 0


def test_an_upload_and_its_removal_leave_one_line_each(host, server_host, test_vars, server, ca, curl, token,
                                                       client_address):
    ver = version()
    wheel = client_wheel(host, "cheeseshop-audited", ver)
    filename = os.path.basename(wheel)
    run = https_upload(host, test_vars, server, ca, wheel, ("__token__", token["ci-a-upload"]), CUSTOMER_A)
    assert run.rc == 0, run.stdout + run.stderr
    (stored,) = about(server_host, file=filename)
    assert set(stored) == FIELDS, stored
    assert (stored["index"], stored["identity"], stored["action"], stored["result"], stored["address"]) == (
        "customer-a", "token:ci-a-upload", "upload", "stored", client_address)
    local = host.file(wheel)
    assert stored["sha256"] == local.sha256sum and stored["size"] == local.size
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stored["time"])
    # The journal has the same line.
    journal = server_host.check_output("journalctl -u cheeseshop-pages --no-pager -o cat")
    assert json.dumps(stored, sort_keys=True, separators=(",", ":")) in journal

    removal = host.run(f"{curl} -o /dev/null -w '%{{http_code}}' -u {shlex.quote('__token__:' + token['ci-a-upload'])} "
                       f"-F ':action=remove_pkg' -F name=cheeseshop-audited -F version={ver} https://{server}{CUSTOMER_A}")
    assert removal.stdout == "200", removal.stdout
    (removed,) = about(server_host, file=filename, action="remove")
    assert (removed["identity"], removed["result"], removed["sha256"]) == ("token:ci-a-upload", "removed",
                                                                             stored["sha256"])


def test_a_refused_upload_leaves_one_line(host, server_host, test_vars, server, ca, token):
    """customer-a's owners: cheeseshop-owned-* is customer-a-dev's, not the token's."""
    wheel = client_wheel(host, "cheeseshop-owned-audited", version())
    run = https_upload(host, test_vars, server, ca, wheel, ("__token__", token["ci-a-upload"]), CUSTOMER_A)
    assert run.rc != 0 and twine_status(run) == 403, run.stdout + run.stderr
    (refused,) = about(server_host, file=os.path.basename(wheel))
    assert (refused["action"], refused["identity"], refused["index"]) == ("upload", "token:ci-a-upload", "customer-a")
    assert refused["result"].startswith("refused: 403"), refused
    assert "sha256" not in refused


def test_a_refused_token_leaves_one_line_in_nginx_s_part(host, server_host, server, curl, token, client_address):
    right = token["ci-a-read"]
    wrong = right[:-1] + ("0" if right[-1] != "0" else "1")
    before = len(lines(server_host, NGINX_AUDIT_LOG))
    assert status(host, curl, f"https://{server}{CUSTOMER_A}simple/", ("__token__", wrong)) == 401
    (line,) = new_lines(server_host, NGINX_AUDIT_LOG, before)
    assert line == {"action": "token", "address": client_address, "identity": "token:ci-a-read",
                    "index": "customer-a", "result": "refused: wrong secret; 401", "time": line["time"]}
    for _ in range(50):
        journal = server_host.check_output("journalctl -t cheeseshop_audit --no-pager -o cat")
        if json.dumps(line, separators=(",", ":")) in journal:
            break
        time.sleep(0.1)
    assert json.dumps(line, separators=(",", ":")) in journal


def test_a_converge_that_adds_a_user_leaves_a_line_per_index_it_may_now_read(server_host, vault_users):
    with open(HOST_VARS) as handle:
        indexes = yaml.safe_load(handle)["pypi_indexes"]
    probe = f"audited-{version().rsplit('.', 1)[1]}"
    rights = [dict(index, read=index["read"] + [probe]) if index["name"] == "customer-b" else index
              for index in indexes]
    hostname = server_host.backend.get_hostname()
    users = project_playbook("users.yml")
    password = f"audit-probe-{probe}"
    try:
        rc, output, _ = run_playbook(hostname, users, {"pypi_users": vault_users + [{"name": probe, "password": password}],
                                                       "pypi_indexes": rights})
        assert rc == 0, output[-3000:]
        # customer-b's readers, and the mirror's: every present user reads it (read: authenticated).
        # public's readers file takes every user too (nginx checks POSTs there), but anyone may
        # read public: no right changed there. Nor does the group's file grant anything of its
        # own (each member's readers decide what it serves): no line for it.
        added = {line["index"]: line for line in lines(server_host) if probe in line.get("result", "")}
        assert sorted(added) == ["customer-b", "pypi-mirror"], added
        for index, line in added.items():
            assert (line["action"], line["file"]) == ("rights", f"{index}-readers.htpasswd"), line
            assert line["result"] == f"readers added {probe}", line
            assert re.fullmatch(r"converge:[^@\s]+@\S+", line["identity"]), line
    finally:
        rc, output, _ = run_playbook(hostname, users, {"pypi_users": vault_users + [{"name": probe, "state": "absent"}]})
        assert rc == 0, output[-3000:]
    removed = [line for line in lines(server_host) if probe in line.get("result", "")][-1]
    assert removed["result"] == f"readers removed {probe}"
    logged = server_host.check_output(f"cat {AUDIT_LOG} {NGINX_AUDIT_LOG}")
    assert password not in logged


def test_no_secret_is_in_the_audit_log_or_the_journal(server_host, token, credentials):
    logged = server_host.check_output(f"cat {AUDIT_LOG} {NGINX_AUDIT_LOG}; journalctl --no-pager -o cat "
                                      "-u cheeseshop-pages -t cheeseshop_audit")
    assert logged.strip()
    leaked = [name for name, text in token.items() if text.rsplit(".", 1)[1] in logged]
    leaked += [name for name, password in credentials.items() if password in logged]
    assert leaked == [], f"the secret of {leaked} is in the audit log"
    assert not re.search(r"[0-9a-f]{64}", "".join(json.dumps({k: v for k, v in line.items() if k != "sha256"})
                                                      for line in lines(server_host)))


def test_the_audit_playbook_answers_who_uploaded_a_file_and_what_a_token_did(host, server_host, test_vars, server,
                                                                             ca, token):
    wheel = client_wheel(host, "cheeseshop-asked", version())
    filename = os.path.basename(wheel)
    run = https_upload(host, test_vars, server, ca, wheel, ("__token__", token["ci-a-upload"]), CUSTOMER_A)
    assert run.rc == 0, run.stdout + run.stderr
    hostname = server_host.backend.get_hostname()
    audit = project_playbook("audit.yml")
    # The answer is the host's lines as JSON (the callback may wrap a long value onto a line of
    # its own, so the values are looked for, not their "key": value layout).
    rc, output, _ = run_playbook(hostname, audit, {"audit_file": filename})
    assert rc == 0 and re.search(r"changed=0\b", output), output[-3000:]
    assert filename in output and "token:ci-a-upload" in output and '"stored"' in output, output[-3000:]
    rc, output, _ = run_playbook(hostname, audit, {"audit_identity": "token:ci-a-upload", "audit_action": "upload",
                                                   "audit_index": "customer-a"})
    assert rc == 0 and filename in output, output[-3000:]
    rc, output, _ = run_playbook(hostname, audit, {"audit_identity": "token:ci-a-upload", "audit_index": "public"})
    assert rc == 0 and "No audit line answers" in output and filename not in output, output[-3000:]
    rc, output, _ = run_playbook(hostname, audit, {"audit_file": "cheeseshop-never-uploaded-*"})
    assert rc == 0 and "No audit line answers file=cheeseshop-never-uploaded-*" in output, output[-3000:]
    rc, output, _ = run_playbook(hostname, audit, {})
    assert rc != 0 and "Ask for something" in output, output[-3000:]
    # On the host, the same question in one line (docs/audit.md), for root and group adm only.
    (line,) = server_host.check_output(f"/usr/local/sbin/cheeseshop-audit file={filename}").splitlines()
    assert (json.loads(line)["file"], json.loads(line)["identity"]) == (filename, "token:ci-a-upload")
    assert server_host.run(f"runuser -u pypiserver -- /usr/local/sbin/cheeseshop-audit file={filename}").rc != 0
