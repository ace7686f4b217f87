"""Retention over the wire (molecule/indexes, cheeseshop.pypi.retention): a CI job's 30 dev builds
and 3 releases of one project in customer-b, whose policy keeps the newest 3 pre-release and
development versions. The dry run lists exactly the builds that would go and removes nothing;
the real run removes them, each with its audit line; pip still resolves, the pages no longer
list them, and a second run removes nothing. The timer's service, sandboxed as it runs at night,
then applies the inventory's policy to the next builds.
"""
import json
import re
import shlex

import pytest

from conftest import client_wheel, listed_files, project_playbook, run_playbook, sha256_by_name, version

testinfra_hosts = ["ansible://clients"]

INDEX = "customer-b"
BASE = "/private/customer-b/"
PACKAGES = "/srv/pypi/indexes/customer-b"
AUDIT_LOG = "/var/log/cheeseshop-pypi/audit.log"
RELEASES = ["1.0.0", "2.0.0", "3.0.0"]
DEVS = [f"3.1.0.dev{n}" for n in range(1, 31)]
PINNED = "3.1.0.dev5"


@pytest.fixture(scope="module")
def bob(credentials):
    return ("customer-b-dev", credentials["customer-b-dev"])


@pytest.fixture(scope="module")
def project():
    """A name of this run's own: a rerun on a live instance starts from nothing."""
    return f"cheeseshop-retention-{version().rsplit('.', 1)[-1]}"


def wheel_name(project, ver):
    return f"{project.replace('-', '_')}-{ver}-py3-none-any.whl"


def upload(host, test_vars, server, ca, project, versions, bob):
    """One twine run for every version's wheel, built on the client."""
    wheels = [client_wheel(host, project, ver) for ver in versions]
    run = host.run(f"TWINE_USERNAME={shlex.quote(bob[0])} TWINE_PASSWORD={shlex.quote(bob[1])} "
                   f"{test_vars['cheeseshop_test_client_venv']}/bin/twine upload --non-interactive "
                   f"--disable-progress-bar --cert {ca} --repository-url https://{server}{BASE} "
                   + " ".join(map(shlex.quote, wheels)))
    assert run.rc == 0, run.stdout + run.stderr


def on_disk(server_host, project):
    prefix = project.replace("-", "_") + "-"
    return {name for name in sha256_by_name(server_host, PACKAGES) if name.startswith(prefix)}


def listed(host, curl, server, project, bob):
    prefix = project.replace("-", "_") + "-"
    return {name for name in listed_files(host, curl, f"https://{server}{BASE}", bob) if name.startswith(prefix)}


def named(output, project):
    """The file names of this project that a run's output names."""
    return set(re.findall(re.escape(project.replace("-", "_")) + r"-[0-9a-z.]+-py3-none-any\.whl", output))


def removals(server_host, files):
    """The audit log's removal lines of these files (their uploads have lines too)."""
    found = server_host.file(AUDIT_LOG).content_string.splitlines()
    return [line for line in map(json.loads, found) if line.get("file") in files and line.get("action") == "remove"]


def pinned_policy(server_host, project):
    """The server's indexes, with customer-b's policy also pinning one build of the project."""
    indexes = [dict(index, retention={"keep_prereleases": 3, "keep": [f"{project}=={PINNED}"]})
               if index["name"] == INDEX else index for index in server_host.ansible.get_variables()["pypi_indexes"]]
    return {"pypi_indexes": indexes}


def test_old_dev_builds_go_by_the_policy_and_everything_else_stays(host, server_host, test_vars, server, ca, curl,
                                                                  bob, project):
    """One drill: the playbook's dry run and real run with a pin, then the timer's service."""
    upload(host, test_vars, server, ca, project, RELEASES + DEVS, bob)
    everything = {wheel_name(project, ver) for ver in RELEASES + DEVS}
    assert on_disk(server_host, project) == everything
    going = {wheel_name(project, ver) for ver in DEVS[:27] if ver != PINNED}
    assert len(going) == 26
    extra = pinned_policy(server_host, project)
    name = server_host.backend.get_hostname()

    # The dry run: exactly those are listed, nothing goes, nothing is audited.
    rc, output, _ = run_playbook(name, project_playbook("retention.yml"), extra, check_diff=True)
    assert rc == 0 and "changed=0" in output, output[-3000:]
    assert "would remove" in output and named(output, project) == going, output[-3000:]
    assert on_disk(server_host, project) == everything
    assert removals(server_host, going) == []

    # For real: gone from the disk and the pages, each with its line in the audit log.
    rc, output, _ = run_playbook(name, project_playbook("retention.yml"), extra)
    assert rc == 0 and "changed=0" not in output, output[-3000:]
    assert named(output, project) == going, output[-3000:]
    kept = everything - going
    assert on_disk(server_host, project) == kept
    assert listed(host, curl, server, project, bob) == kept
    lines = removals(server_host, going)
    assert sorted(line["file"] for line in lines) == sorted(going)
    for line in lines:
        assert (line["index"], line["identity"]) == (INDEX, "retention"), line
        assert line["result"].startswith("removed by retention") and re.fullmatch(r"[0-9a-f]{64}", line["sha256"])

    # pip still resolves: the newest build with --pre, a release without.
    venv = "/var/tmp/retention-client"
    index = f"https://{bob[0]}:{bob[1]}@{server}{BASE}simple/"
    host.check_output(f"rm -rf {venv} /var/tmp/retention-got && python3 -m venv {venv}")
    for flags, expected in (("--pre", DEVS[-1]), ("", RELEASES[-1])):
        host.check_output(f"{venv}/bin/pip download --quiet --no-deps {flags} --cert {ca} --dest /var/tmp/retention-got "
                          f"--index-url {shlex.quote(index)} {project}")
        assert host.file(f"/var/tmp/retention-got/{wheel_name(project, expected)}").exists

    # Nothing more to do: a second run removes nothing.
    rc, output, _ = run_playbook(name, project_playbook("retention.yml"), extra)
    assert rc == 0 and "changed=0" in output, output[-3000:]
    assert on_disk(server_host, project) == kept

    # Two more builds, and the service the timer starts: the inventory's policy (no pin) keeps
    # the newest 3 builds, so the two before them and the build only the playbook's policy
    # pinned go.
    timer = server_host.service("cheeseshop-retention.timer")
    assert timer.is_enabled and timer.is_running
    upload(host, test_vars, server, ca, project, ["3.1.0.dev31", "3.1.0.dev32"], bob)
    run = server_host.run("systemctl start cheeseshop-retention.service")
    assert run.rc == 0, run.stderr + server_host.run("journalctl -u cheeseshop-retention -n 20 --no-pager").stdout
    going = {wheel_name(project, ver) for ver in (PINNED, "3.1.0.dev28", "3.1.0.dev29")}
    kept = {wheel_name(project, ver) for ver in RELEASES + ["3.1.0.dev30", "3.1.0.dev31", "3.1.0.dev32"]}
    assert on_disk(server_host, project) == kept
    assert listed(host, curl, server, project, bob) == kept
    assert sorted(line["file"] for line in removals(server_host, going)) == sorted(going)
    journal = server_host.check_output("journalctl -u cheeseshop-retention --no-pager -o cat")
    # (At least these 3: a rerun on a live instance finds an earlier run's builds too.)
    counts = re.findall(rf"{INDEX}: (\d+) versions, (\d+) files removed", journal)
    assert counts and min(map(int, counts[-1])) >= 3, journal[-2000:]
