"""Several hosts on one shared volume (molecule/cluster, docs/cluster.md): the writer and a reader
mount the same storage at /srv/pypi (a Docker volume here, EFS on AWS). The writer takes uploads
and runs the page service; the reader serves the pages and files the writer stored, answers an
upload with a 503 that names no host, and runs no pypiserver, page service, sync or backup.

From the client, over HTTPS with each host's own CA (the balancer and a shared certificate
come next, #43).
"""
import os
import re
import shlex

import pytest

from conftest import client_wheel, https_upload, project_playbook, run_playbook, status, version

testinfra_hosts = ["ansible://clients"]

WRITER = "cheeseshop-cluster-writer"
READER = "cheeseshop-cluster-reader"
# The reader's CA: create.yml's inventory fetches it beside the writer's (its host_vars).
READER_CA = "/etc/pypi-client/reader-ca.crt"


def machine(host, name):
    return host.get_host(f"ansible://{name}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


@pytest.fixture(scope="module")
def writer(host):
    return machine(host, WRITER)


@pytest.fixture(scope="module")
def reader(host):
    """The reader, and its CA on the client (copied from the controller, where site.yml put it)."""
    with open(os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "pypi-reader-ca.crt")) as handle:
        ca = handle.read()
    host.check_output(f"printf %s {shlex.quote(ca)} > {READER_CA}")
    return machine(host, READER)


def test_the_reader_runs_nothing_that_writes_the_shared_volume(reader, writer):
    for unit in ("pypiserver@main.service", "cheeseshop-pages.service", "cheeseshop-oidc.socket",
                 "cheeseshop-mirror.timer"):
        assert reader.run(f"systemctl is-active --quiet {unit}").rc != 0, unit
    assert reader.run("systemctl is-enabled --quiet pypiserver@main.service").rc != 0
    # Installed all the same: making it the writer is one converge.
    assert reader.file("/opt/pypiserver/venv/bin/pypi-server").exists
    assert writer.service("pypiserver@main").is_running and writer.service("cheeseshop-pages").is_running


def test_what_the_writer_stores_the_reader_serves(host, test_vars, ca, credentials, reader, writer):
    uploader = ("molecule-uploader", credentials["molecule-uploader"])
    user = ("molecule-reader", credentials["molecule-reader"])
    ver = version()
    wheel = client_wheel(host, "cheeseshop-shared", ver)
    run = https_upload(host, test_vars, WRITER, ca, wheel, uploader)
    assert run.rc == 0, run.stdout + run.stderr
    curl = f"curl -sf --cacert {READER_CA} -u {shlex.quote(user[0] + ':' + user[1])}"
    page = host.check_output(f"{curl} https://{READER}/simple/cheeseshop-shared/")
    name = os.path.basename(wheel)
    assert name in page
    served = host.check_output(f"{curl} https://{READER}/packages/{name} | sha256sum | cut -c1-64")
    assert served == host.check_output(f"sha256sum < {wheel} | cut -c1-64")
    # The same access check on both: no credentials, no page.
    assert status(host, f"curl -s --cacert {READER_CA}", f"https://{READER}/simple/cheeseshop-shared/") == 401


def test_an_upload_to_the_reader_gets_a_503_naming_no_host(host, test_vars, credentials, reader, writer):
    uploader = ("molecule-uploader", credentials["molecule-uploader"])
    ver = version()
    wheel = client_wheel(host, "cheeseshop-not-here", ver)
    run = https_upload(host, test_vars, READER, READER_CA, wheel, uploader)
    assert run.rc != 0 and "503" in run.stdout + run.stderr, run.stdout + run.stderr
    answer = host.run(f"curl -s --cacert {READER_CA} -u {shlex.quote(uploader[0] + ':' + uploader[1])} "
                      f"-F ':action=file_upload' https://{READER}/")
    assert "only serves reads" in answer.stdout and WRITER not in answer.stdout, answer.stdout
    assert not writer.file(f"/srv/pypi/packages/{os.path.basename(wheel)}").exists
    # Without credentials the access check answers first, as on the writer.
    assert status(host, f"curl -s --cacert {READER_CA} -X POST", f"https://{READER}/") == 401


def test_the_reader_is_healthy_while_it_reads_the_pages_without_pypiserver(host, reader, writer):
    assert status(host, f"curl -s --cacert {READER_CA}", f"https://{READER}/health") == 200
    writer.check_output("systemctl stop pypiserver@main")
    try:
        # The writer's pypiserver is down: the writer is unhealthy, the reader serves on.
        assert status(host, "curl -s --cacert /etc/pypi-client/ca.crt", f"https://{WRITER}/health") == 503
        assert status(host, f"curl -s --cacert {READER_CA}", f"https://{READER}/health") == 200
    finally:
        writer.check_output("systemctl start pypiserver@main")


def test_a_rerun_of_both_servers_changes_nothing(reader, writer):
    """The scenario's idempotence: site.yml on the writer (offline, from its wheelhouse) and the
    reader at once, as an operator converges a cluster."""
    rc, output, _ = run_playbook(f"{WRITER},{READER}", project_playbook("site.yml"))
    recap = re.findall(r"^(cheeseshop-cluster-\w+) +: ok=\d+ +changed=(\d+) ", output, re.M)
    assert rc == 0 and sorted(recap) == [(READER, "0"), (WRITER, "0")], output[-4000:]


@pytest.mark.parametrize("extra,message", [
    ({"pypi_writer": True}, "pypi_cluster cheeseshop-test has 2 writers (cheeseshop-cluster-reader, "
                            "cheeseshop-cluster-writer)"),
    ({"pypi_cluster": ""}, "pypi_writer is false on a host that names no pypi_cluster"),
])
def test_a_cluster_without_exactly_one_writer_is_refused_before_any_change(reader, extra, message):
    rc, output, _ = run_playbook(READER, project_playbook("site.yml"), extra)
    assert rc == 2 and message in " ".join(output.split()), output[-3000:]
    assert "changed=0" in output


def test_an_account_with_other_numbers_is_refused_before_it_takes_the_volume_over(reader, writer):
    """The reader's pypiserver account given another uid, as on a host whose accounts were made
    in another order: its converge stops before it changes an owner on the shared volume."""
    uid = reader.check_output("id -u pypiserver")
    before = writer.check_output("stat -c '%u:%g' /srv/pypi/packages")
    reader.check_output("usermod -u 4242 pypiserver")
    try:
        rc, output, _ = run_playbook(READER, project_playbook("site.yml"), tags="pypiserver")
        text = " ".join(output.split())
        assert rc == 2 and "/srv/pypi/packages belongs to" in text and "same uid and gid" in text, output[-3000:]
        assert writer.check_output("stat -c '%u:%g' /srv/pypi/packages") == before
    finally:
        reader.check_output(f"usermod -u {uid} pypiserver")
