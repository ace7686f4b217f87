"""Boots: the whole container restarts, with its data volume and without it.

Shared by the scenarios that converge the full stack on one volume, under either process
manager (default, debian13, supervisor): everything must come back with no manual step, and a
missing volume must leave pypiserver down and the root disk untouched, with nginx saying why.
"""
import os
import shlex
import subprocess

import pytest

from conftest import (docker, pypiserver_running, source_of, twine_upload, version, wait_for_boot,
                      wait_for_index)

testinfra_hosts = ["ansible://pypi_servers"]

DATA_ROOT = "/srv/pypi"
PACKAGES = DATA_ROOT + "/packages"
DATA = "/dev/xvdf"


@pytest.fixture(scope="module")
def stored(host, test_vars, credentials):
    """A package on the volume, uploaded here so the checks never start from an empty index."""
    user = test_vars["cheeseshop_test_user"]
    path = host.check_output(f"/usr/local/bin/make_wheel.py cheeseshop-boot {version()} /var/tmp/boot")
    upload = twine_upload(host, test_vars, path, user, credentials[user])
    assert upload.rc == 0, upload.stdout + upload.stderr
    return os.path.basename(path)


def test_restarted_host_mounts_the_volume_and_serves_from_it(host, name, test_vars, stored):
    files = host.check_output(f"ls {PACKAGES}").split()
    assert stored in files
    docker("restart", name)
    wait_for_boot(host)
    assert source_of(host, DATA_ROOT) == DATA
    wait_for_index(host)
    assert pypiserver_running(host, test_vars)
    assert host.check_output(f"ls {PACKAGES}").split() == files


def test_missing_volume_at_boot_keeps_pypiserver_off_the_root_disk(host, name, loops, test_vars, credentials,
                                                                   stored):
    data = loops["data"]
    auth = "-u " + shlex.quote("molecule-reader:" + credentials["molecule-reader"])
    fetch = f"curl -s -k {auth} -o /dev/null -w '%{{http_code}}' https://127.0.0.1/packages/{stored}"
    assert host.check_output(fetch) == "200"
    docker("stop", name)
    subprocess.run(["losetup", "--detach", data["device"]], check=True)
    try:
        docker("start", name)
        wait_for_boot(host, failed=["srv-pypi.mount"])
        assert source_of(host, DATA_ROOT) is None
        assert not pypiserver_running(host, test_vars)
        # Nothing was written into the bare mount point on the root disk.
        assert host.check_output(f"ls -A {DATA_ROOT}") == ""
        # nginx says why a file it listed cannot be had, rather than 404.
        assert host.check_output(fetch) == "503"
        said = host.check_output(f"curl -s -k {auth} https://127.0.0.1/packages/none.whl")
        assert said.startswith("503 The package files are unavailable: the data volume is not mounted"), said
        # The pages live on the volume too: their service waits for it, and nginx says so.
        assert not host.service("cheeseshop-pages").is_running
        page = host.check_output(f"curl -s -k {auth} https://127.0.0.1/simple/")
        assert page.startswith("503 The index pages are unavailable"), page
    finally:
        docker("stop", name)
        subprocess.run(["losetup", data["device"], data["file"]], check=True)
        docker("start", name)
    wait_for_boot(host)
    assert source_of(host, DATA_ROOT) == DATA
    wait_for_index(host)
    assert pypiserver_running(host, test_vars)
    assert host.check_output(fetch) == "200"
    # With the volume back, a file that is not there is a plain 404, not cached as immutable.
    missing = host.check_output(f"curl -s -k {auth} -D - -o /dev/null https://127.0.0.1/packages/none.whl")
    assert missing.startswith("HTTP/2 404") and "immutable" not in missing, missing
