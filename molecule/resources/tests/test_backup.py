"""Backups proven by a restore (cheeseshop.pypi.backup and the cheeseshop.pypi.restore playbook),
on the indexes scenario's server: a local restic repository, its TEST-ONLY password in vault.

Back up, lose packages, a whole index, a users file and the CA, restore, and every file is back
byte for byte with its owner and mode; pip installs the restored packages over HTTPS with the
CA the client already had. Refusals (a wrong password, an empty or missing repository, an
unknown snapshot) change nothing, and the retention policy keeps what it says.
"""
import json
import os
import shlex
import subprocess
import time
from types import SimpleNamespace

import pytest

from conftest import (HOST_CURL, PROJECT, client_wheel, listed_files, project_playbook,
                      run_playbook, sha256_by_name, vault_view, version)

testinfra_hosts = ["ansible://pypi_servers"]

REPOSITORY = "/var/backups/cheeseshop-pypi"
CONFIG = "/etc/cheeseshop-backup/config.json"
STATUS = "/var/lib/cheeseshop-backup/status.json"
SERVICE = "cheeseshop-backup.service"
BACKUP_VAULT = os.path.join(PROJECT, "molecule", "indexes", "inventory", "host_vars", "cheeseshop-indexes-server",
                            "backup.vault.yml")


@pytest.fixture(scope="module")
def password():
    """The repository's TEST-ONLY password, as the vault holds it."""
    return vault_view(BACKUP_VAULT)["backup_password"]


@pytest.fixture(scope="module")
def paths(host):
    """What the role backs up, as its service reads it."""
    return json.loads(host.check_output(f"cat {CONFIG}"))["paths"]


@pytest.fixture(scope="module")
def client(host, test_vars):
    return host.get_host(f"ansible://{test_vars['groups']['clients'][0]}",
                         ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def back_up(host):
    """One run of the service, as the timer starts it; returns the status file it wrote."""
    run = host.run(f"systemctl start {SERVICE}")
    assert run.rc == 0, run.stderr + host.run(f"journalctl -u {SERVICE} -n 30 --no-pager").stdout
    return json.loads(host.check_output(f"cat {STATUS}"))


def snapshots(host):
    """This collection's snapshots in the repository, oldest first."""
    found = json.loads(host.check_output("cheeseshop-restic snapshots --json --tag cheeseshop"))
    return sorted(found, key=lambda snapshot: snapshot["time"])


def manifest(host, paths):
    """sha256, owner, group and mode of every file under paths (uploads being written aside)."""
    out = host.check_output(
        f"find {' '.join(map(shlex.quote, paths))} -type f ! -name '.*.part' -print0 | sort -z"
        " | xargs -0 -r stat -c '%n %U:%G %a' && "
        f"find {' '.join(map(shlex.quote, paths))} -type f ! -name '.*.part' -print0 | sort -z | xargs -0 -r sha256sum")
    found = {}
    for line in out.splitlines():
        first, rest = line.split(" ", 1)
        if first.startswith("/"):
            found.setdefault(first, {})["stat"] = rest
        else:
            found.setdefault(rest.strip(), {})["sha256"] = first
    return found


def untouched_state(host):
    """What a refused run must leave alone: the role's files, the repository, the timer's units."""
    return host.check_output(
        f"find /etc/cheeseshop-backup /etc/systemd/system/cheeseshop-backup.* {REPOSITORY} -type f -print0"
        " | sort -z | xargs -0 sha256sum")


def upload(host, test_vars, credentials, index_path, user):
    """A fresh package uploaded with twine over HTTPS on the server itself; (project, version, file name)."""
    project, ver = f"cheeseshop-backup-{index_path.strip('/').split('/')[-1]}", version()
    wheel = host.check_output(f"/usr/local/bin/make_wheel.py {project} {ver} /var/tmp/backup-{ver}")
    run = host.run(
        f"TWINE_USERNAME={shlex.quote(user)} TWINE_PASSWORD={shlex.quote(credentials[user])} "
        f"{test_vars['cheeseshop_test_client_venv']}/bin/twine upload --non-interactive --disable-progress-bar "
        f"--cert /etc/pypi-tls/ca.crt --repository-url https://localhost{index_path} {shlex.quote(wheel)}")
    assert run.rc == 0, run.stdout + run.stderr
    return project, ver, os.path.basename(wheel)


def test_the_timer_runs_the_service_and_the_run_is_recorded(host):
    timer = host.service("cheeseshop-backup.timer")
    assert timer.is_enabled and timer.is_running
    assert host.check_output("systemctl show --value --property=Triggers cheeseshop-backup.timer") == SERVICE
    status = back_up(host)
    assert status["result"] == "success" and status["forget"] == "success" and status["error"] is None, status
    newest = snapshots(host)[-1]
    assert newest["id"].startswith(status["snapshot_id"]), (newest, status)
    assert status["last_success"] == {"finished": status["finished"], "snapshot_id": status["snapshot_id"]}
    age = int(host.check_output("date +%s")) - status["finished_unix"]
    assert 0 <= age < 120, status
    # Monitoring reads it without root; the password only root.
    assert host.file(STATUS).mode == 0o644
    password_file = host.file("/etc/cheeseshop-backup/password")
    assert (password_file.user, password_file.group, password_file.mode) == ("root", "root", 0o600)


def test_a_failed_run_is_recorded_and_keeps_the_last_success(host):
    """What monitoring reads when a backup fails: the unit fails, the status says why, and the
    last success stays. Here the repository is away (an unmounted backup disk, say)."""
    good = back_up(host)
    host.check_output(f"mv {REPOSITORY} {REPOSITORY}.away")
    try:
        run = host.run(f"systemctl start {SERVICE}")
        status = json.loads(host.check_output(f"cat {STATUS}"))
    finally:
        host.check_output(f"mv {REPOSITORY}.away {REPOSITORY} && systemctl reset-failed {SERVICE}")
    assert run.rc != 0
    assert status["result"] == "failed" and status["snapshot_id"] is None, status
    assert "Is there a repository at the following location?" in status["error"], status
    assert status["last_success"] == good["last_success"], status


def test_the_backup_service_is_sandboxed(host):
    out = host.check_output(f"systemd-analyze security {SERVICE} | tail -1")
    exposure = float(out.split("level for")[1].split(":", 1)[1].split()[0])
    assert exposure <= 2.5, out


def test_a_backup_holds_packages_users_and_tls_but_no_upload_being_written(host, paths):
    partial = "/srv/pypi/indexes/customer-b/.cheeseshop_partial-1.0-py3-none-any.whl.0123abcd.part"
    host.check_output(f"head -c 4096 /dev/urandom > {partial}")
    try:
        status = back_up(host)
        listed = host.check_output(f"cheeseshop-restic ls {status['snapshot_id']}").splitlines()
    finally:
        host.run(f"rm -f {partial}")
    # The mirror's files too: a restored host on a closed network could not fetch them again.
    assert sorted(paths) == sorted(["/srv/pypi/indexes/public", "/srv/pypi/indexes/customer-a",
                                    "/srv/pypi/indexes/customer-b", "/srv/pypi/indexes/pypi-mirror",
                                    "/etc/pypi-users", "/etc/pypi-tls"])
    for path in ("/etc/pypi-tls/ca.crt", "/etc/pypi-tls/ca.key", "/etc/pypi-tls/server.key",
                 "/etc/pypi-users/customer-a-readers.htpasswd", "/etc/pypi-users/public-uploaders.htpasswd"):
        assert path in listed
    assert partial not in listed
    assert not [line for line in listed if line.endswith(".part") or line.startswith("/srv/pypi/pages")]


# Run on the server: waits for the upload's hidden file to hold its first bytes, then stops the
# pypiserver writing it, mid-write (a slow disk, frozen), and prints the file's name and size.
# Prints the final name and -1 when the file was whole and renamed before it was seen.
CATCH_MID_WRITE = """
import os, signal, sys
directory, name, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])


def stopped():
    # kill() returns before the process stops: a write under way still completes.
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] not in "tT":
                return False
    return True


print("watching", flush=True)
while True:
    for entry in os.scandir(directory):
        try:
            if entry.name == name:
                print(name, -1, flush=True)
                sys.exit(0)
            if entry.name.startswith(f".{name}.") and entry.name.endswith(".part") and entry.stat().st_size:
                os.kill(pid, signal.SIGSTOP)
                while not stopped():
                    pass
                print(entry.name, os.stat(entry.path).st_size, flush=True)
                sys.exit(0)
        except FileNotFoundError:
            pass
"""


def upload_caught_mid_write(host, client, test_vars, credentials, payload_mb):
    """A slowed-down upload of a payload_mb MiB wheel from the client, over HTTPS, caught while
    pypiserver writes it: pypiserver is stopped (SIGSTOP) with the upload's .part file partly
    written. Returns the curl process, pypiserver's pid, the wheel's file name and sha256, the
    .part file's name and size; or None when the whole file was written before it was caught."""
    server, directory = test_vars["groups"]["pypi_servers"][0], "/srv/pypi/indexes/public"
    project, ver = "cheeseshop-in-flight", version()
    wheel = client_wheel(client, project, ver, payload_mb=payload_mb)
    name, whole, sha256 = os.path.basename(wheel), client.file(wheel).size, client.file(wheel).sha256sum
    pid = host.check_output("systemctl show --value --property=MainPID pypiserver@public")
    watcher = subprocess.Popen(["docker", "exec", host.backend.get_hostname(), "python3", "-c", CATCH_MID_WRITE,
                                directory, name, pid], stdout=subprocess.PIPE, text=True)
    assert watcher.stdout.readline() == "watching\n"
    user = f"release-bot:{credentials['release-bot']}"
    curl = subprocess.Popen(
        ["docker", "exec", test_vars["groups"]["clients"][0], "curl", "-s", "--limit-rate", "20M",
         "--cacert", test_vars["cheeseshop_client_ca"], "-u", user, "-w", "\n%{http_code}",
         "-F", ":action=file_upload", "-F", "protocol_version=1", "-F", f"name={project}", "-F", f"version={ver}",
         "-F", f"content=@{wheel}", f"https://{server}/public/"], stdout=subprocess.PIPE, text=True)
    try:
        while watcher.poll() is None and curl.poll() is None:
            time.sleep(0.1)
        # An upload that ended without being stored (a refusal) leaves the watcher waiting.
        out, _ = watcher.communicate(timeout=None if curl.returncode is None else 30)
        assert watcher.returncode == 0, out
    except BaseException:
        watcher.kill()
        curl.kill()
        host.run(f"kill -CONT {pid}")
        raise
    finally:
        client.run(f"rm -rf {os.path.dirname(wheel)}")
    partial, size = out.split()[-2:]
    if 0 < int(size) < whole:
        return SimpleNamespace(curl=curl, pid=pid, name=name, sha256=sha256, partial=partial, size=int(size))
    host.check_output(f"kill -CONT {pid}")
    curl.communicate(timeout=600)
    return None


def test_a_backup_during_an_upload_restores_no_truncated_file(host, test_vars, credentials, client):
    """A backup taken while a 50 MiB upload is being written holds the index's whole files and
    nothing of that upload: restored, every file has the sha256 the index lists for it."""
    for _ in range(3):
        caught = upload_caught_mid_write(host, client, test_vars, credentials, payload_mb=50)
        if caught:
            break
    else:
        pytest.fail("the upload was written whole three times before it could be caught half-way")
    name, staging = caught.name, f"/var/tmp/in-flight-{version()}"
    try:
        # pypiserver stands still with the upload half on disk, under its hidden name only.
        assert host.file(f"/srv/pypi/indexes/public/{caught.partial}").size == caught.size
        assert not host.file(f"/srv/pypi/indexes/public/{name}").exists
        snapshot = back_up(host)["snapshot_id"]
    finally:
        host.run(f"kill -CONT {caught.pid}")
        out, _ = caught.curl.communicate(timeout=600)
    assert out.endswith("\n200"), out
    listed = {file: sha for file, (sha, _) in listed_files(host, HOST_CURL, "https://localhost/public/").items()}
    assert listed[name] == caught.sha256
    try:
        # What the snapshot holds, as restic restores it (without the role's exclusions).
        host.check_output(f"cheeseshop-restic restore {snapshot} --target {staging} --include /srv/pypi/indexes/public")
        restored = sha256_by_name(host, f"{staging}/srv/pypi/indexes/public", hidden=True)
    finally:
        host.run(f"rm -rf {staging}")
    assert not [file for file in restored if file.endswith(".part") or name in file], sorted(restored)
    assert restored == {file: sha for file, sha in listed.items() if file != name}


def test_lost_files_come_back_and_a_changed_one_is_kept(host, client, name, test_vars, credentials, paths):
    """The issue's drill: back up; delete a package, a whole index, a users file and the CA, and
    change another package in place; restore. Every lost file is as it was, the changed one is
    kept (no restore_overwrite), pip installs over HTTPS and restic checks every byte.
    (Each restore converges too, so the drill's other halves ride on test_restore_new_host's
    restore: restore_overwrite replacing what differs, and a converge after a restore that
    changes nothing.)"""
    public = upload(host, test_vars, credentials, "/public/", "release-bot")
    private = upload(host, test_vars, credentials, "/private/customer-a/", "customer-a-dev")
    kept = upload(host, test_vars, credentials, "/private/customer-b/", "customer-b-dev")
    status = back_up(host)
    assert status["result"] == "success", status
    before = manifest(host, paths)
    assert f"/srv/pypi/indexes/public/{public[2]}" in before and f"/srv/pypi/indexes/customer-a/{private[2]}" in before
    lost = [f"/srv/pypi/indexes/customer-a/{private[2]}", "/srv/pypi/indexes/public",
            "/etc/pypi-users/customer-a-readers.htpasswd", "/etc/pypi-tls/ca.crt"]
    # Not a wheel any more, but a file under the same name: what a restore must not touch unasked.
    changed = f"/srv/pypi/indexes/customer-b/{kept[2]}"
    aside = f"/var/tmp/{kept[2]}"
    host.check_output(f"cp -p {changed} {aside} && echo changed >> {changed} && rm -rf " + " ".join(lost))
    try:
        rc, output, _ = run_playbook(name, project_playbook("restore.yml"))
        text = " ".join(output.split())
        assert rc == 0, output[-4000:]
        assert f"From snapshot {status['snapshot_id'][:8]}" in output, output[-4000:]
        assert "1 kept although they differ" in text, output[-4000:]
        after = manifest(host, paths)
        assert after[changed]["sha256"] != before[changed]["sha256"]
        assert {path: entry for path, entry in after.items() if path != changed} == \
            {path: entry for path, entry in before.items() if path != changed}, sorted(set(after) ^ set(before))
    finally:
        # A failed restore must not leave the other tests without their files.
        if host.run("test -e /srv/pypi/indexes/public -a -e /etc/pypi-tls/ca.crt").rc != 0:
            host.run(f"cheeseshop-restic restore {status['snapshot_id']} --target / && "
                     "systemctl restart pypiserver@public pypiserver@customer-a cheeseshop-pages")
        if host.file(changed).sha256sum != before[changed]["sha256"]:
            host.run(f"cp -p {aside} {changed}")

    ca = test_vars["cheeseshop_client_ca"]
    venv = "/var/tmp/backup-client"
    client.check_output(f"rm -rf {venv} && python3 -m venv {venv}")
    server = test_vars["groups"]["pypi_servers"][0]
    reader = ("customer-a-dev", credentials["customer-a-dev"])
    client.check_output(f"{venv}/bin/pip install --no-cache-dir --cert {ca} --index-url https://{server}/public/simple/ "
                        f"{shlex.quote(public[0] + '==' + public[1])}")
    index = f"https://{reader[0]}:{reader[1]}@{server}/private/customer-a/simple/"
    client.check_output(f"{venv}/bin/pip install --no-cache-dir --cert {ca} --index-url {shlex.quote(index)} "
                        f"{shlex.quote(private[0] + '==' + private[1])}")
    installed = client.check_output(f"{venv}/bin/pip list --format=freeze")
    assert f"{public[0]}=={public[1]}" in installed and f"{private[0]}=={private[1]}" in installed

    check = host.run("cheeseshop-restic check --read-data")
    assert check.rc == 0 and "no errors were found" in check.stdout, check.stdout + check.stderr


@pytest.mark.parametrize("playbook,tags", [("site.yml", "backup"), ("restore.yml", None)])
def test_a_wrong_password_is_refused_and_changes_nothing(host, name, paths, playbook, tags):
    back_up(host)
    before, data = untouched_state(host), manifest(host, paths)
    rc, output, _ = run_playbook(name, project_playbook(playbook), {"backup_password": "not-the-password"}, tags=tags)
    text = " ".join(output.split())
    assert rc == 2 and f"backup_password does not open the repository {REPOSITORY}" in text, output[-4000:]
    assert "wrong password" in text and "changed=0" in output, output[-4000:]
    assert untouched_state(host) == before
    assert manifest(host, paths) == data


@pytest.mark.parametrize("case", ["empty", "missing", "unknown-snapshot"])
def test_restore_refuses_an_empty_or_missing_repository_and_an_unknown_snapshot(host, name, paths, case):
    other = f"/var/backups/cheeseshop-{case}-{version()}"
    if case == "empty":
        host.check_output(f"cheeseshop-restic -r {other} init")
    elif case == "unknown-snapshot":
        # The repository must hold a backup, or the restore refuses it as empty instead.
        back_up(host)
    extra = {"restore_snapshot": "0123abcd"} if case == "unknown-snapshot" else {"backup_repository": other}
    expected = {"empty": f"The repository {other} holds no backup to restore.",
                "missing": f"There is no repository at {other}",
                "unknown-snapshot": "restore_snapshot 0123abcd names no snapshot of"}[case]
    before, data = untouched_state(host), manifest(host, paths)
    try:
        rc, output, _ = run_playbook(name, project_playbook("restore.yml"), extra)
    finally:
        host.run(f"rm -rf {other}")
    text = " ".join(output.split())
    assert rc == 2 and expected in text and "Nothing was restored or changed." in text, output[-4000:]
    assert "changed=0" in output, output[-4000:]
    assert untouched_state(host) == before
    assert manifest(host, paths) == data


def test_retention_keeps_what_the_policy_says(host, paths):
    """keep daily 2, weekly 1, monthly 2 (the scenario's): of several backups today and older
    ones in 2020, forget keeps the newest of today (its day, week and month) and the newest of
    2020 (the second day and the second month); nothing else."""
    # Only the snapshots made here count: the other tests' (and any from before midnight) go.
    host.check_output("cheeseshop-restic forget --quiet --tag cheeseshop --keep-last 1")
    for when in ("2020-01-15 12:00:00", "2020-02-20 12:00:00", "2020-03-05 12:00:00", "2020-03-10 12:00:00"):
        host.check_output(f"cheeseshop-restic backup --quiet --tag cheeseshop --time {shlex.quote(when)} "
                          + " ".join(map(shlex.quote, paths)))
    back_up(host)
    status = back_up(host)
    kept = snapshots(host)
    assert [s["time"][:10] for s in kept] == ["2020-03-10", host.check_output("date -u +%F")], kept
    assert kept[-1]["id"].startswith(status["snapshot_id"])


def test_no_password_is_printed_even_at_vvv(host, name, password):
    rc, output, _ = run_playbook(name, project_playbook("site.yml"), verbosity=3, tags="backup")
    assert rc == 0, output[-3000:]
    assert password not in output
    assert password not in host.check_output(f"systemctl show {SERVICE} cheeseshop-backup.timer")
    assert password not in host.check_output(f"journalctl -u {SERVICE} --no-pager")
