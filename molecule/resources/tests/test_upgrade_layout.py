"""Upgrade from the single-index layout (default scenario only).

The collection before several indexes ran one pypiserver.service with the packages in
/srv/pypi/packages. This converges the host with that release, taken from this repository's
history, uploads a package, then reruns the current site.yml: the old unit is replaced by
pypiserver@main.service with one restart, the package and its URL are kept, and the next run
changes nothing.
"""
import os
import subprocess

import pytest

from conftest import INDEX, PROJECT, SERVICE, project_playbook, run_playbook, twine_upload

testinfra_hosts = ["ansible://pypi_servers"]

# The last commit whose pypiserver role ran the single unit pypiserver.service.
SINGLE_UNIT_RELEASE = "90926d2"
LEGACY_UNIT = "/etc/systemd/system/pypiserver.service"


@pytest.fixture(scope="module")
def single_unit_collection(tmp_path_factory):
    """That release of the collection, unpacked where ANSIBLE_COLLECTIONS_PATH can find it."""
    root = tmp_path_factory.mktemp("single-unit")
    dest = root / "ansible_collections" / "cheeseshop" / "pypi"
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", PROJECT, "archive", SINGLE_UNIT_RELEASE, "galaxy.yml", "meta",
                              "plugins", "roles", "playbooks"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return str(root)


def test_single_unit_host_is_upgraded_with_one_restart_and_every_package_kept(
        host, test_vars, credentials, single_unit_collection, wheel):
    name = host.backend.get_hostname()
    site = project_playbook("site.yml")
    # The host as the earlier release left it: its own units, nothing of the new layout.
    host.check_output(f"systemctl disable --now {SERVICE} && rm -rf /etc/systemd/system/pypiserver@.service "
                      "/etc/systemd/system/pypiserver@main.service.d && systemctl daemon-reload")
    rc, output, _ = run_playbook(name, os.path.join(single_unit_collection, "ansible_collections", "cheeseshop",
                                                    "pypi", "playbooks", "site.yml"),
                                 collections_path=single_unit_collection)
    assert rc == 0, output[-3000:]
    assert host.service("pypiserver").is_running and host.file(LEGACY_UNIT).exists
    user = test_vars["cheeseshop_test_user"]
    upload = twine_upload(host, test_vars, wheel["path"], user, credentials[user])
    assert upload.rc == 0, upload.stdout + upload.stderr
    stored = host.file(f"/srv/pypi/packages/{os.path.basename(wheel['path'])}")
    checksum = stored.sha256sum
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")

    rc, output, _ = run_playbook(name, site)
    assert rc == 0, output[-3000:]
    assert not host.file(LEGACY_UNIT).exists
    assert host.run("systemctl cat pypiserver.service").rc != 0  # gone from systemd too
    assert host.service(SERVICE).is_running and host.service(SERVICE).is_enabled
    journal = host.check_output(f"journalctl --no-pager -o cat --since '{since}' -u pypiserver -u {SERVICE}")
    assert journal.count("Started") == 1, journal
    assert stored.sha256sum == checksum
    # The same URL, through nginx, with the reader's credentials.
    reader = ("molecule-reader", credentials["molecule-reader"])
    page = host.check_output(f"curl -sf --cacert /etc/pypi-tls/ca.crt -u '{reader[0]}:{reader[1]}' "
                             f"https://localhost/simple/{wheel['name']}/")
    assert os.path.basename(wheel["path"]) in page
    assert host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {INDEX}/health") == "200"

    rc, output, _ = run_playbook(name, site)
    assert rc == 0 and "changed=0" in output, output[-3000:]
