"""The simple API's modern parts, each proven with the real client that uses it (#28).

The pages are static files the page service writes (cheeseshop.pypi.pages); these tests run on
the client, which holds nothing but the index's CA. Each test uploads its own project.
"""
import json
import os
import shlex
import time

import pytest

from conftest import body, https_upload, project_playbook, run_playbook, status, twine_status, version

testinfra_hosts = ["ansible://clients"]

ACCESS_LOG = "/var/log/nginx/pypi-access.log"


@pytest.fixture(scope="module")
def server_host(host, server):
    return host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


@pytest.fixture
def project(host, test_vars, server, ca, uploader):
    """A fresh project with versions 1.0 and 2.0 (extra metadata per version as asked)."""
    name = f"cheeseshop-api-{version().replace('.', '-')}"
    made = []

    def publish(ver, requires_python="", requires_dist=""):
        env = f"REQUIRES_PYTHON={shlex.quote(requires_python)} " if requires_python else ""
        env += f"REQUIRES_DIST={shlex.quote(requires_dist)} " if requires_dist else ""
        path = host.check_output(f"{env}/usr/local/bin/make_wheel.py {name} {ver} /var/tmp/{name}")
        run = https_upload(host, test_vars, server, ca, path, uploader)
        assert run.rc == 0, run.stdout + run.stderr
        made.append(path)
        return path

    yield name, publish
    host.run(f"rm -rf /var/tmp/{name} /var/tmp/{name}-target")


def pip(host, test_vars, server, ca, reader, project_spec, name, extra=""):
    """pip install into an empty target directory, with only the CA; returns the run."""
    index = f"https://{reader[0]}:{reader[1]}@{server}/simple/"
    return host.run(f"rm -rf /var/tmp/{name}-target && REQUESTS_CA_BUNDLE={ca} "
                    f"{test_vars['cheeseshop_test_client_venv']}/bin/pip install "
                    f"--no-cache-dir --disable-pip-version-check --cert {ca} --index-url {index} "
                    f"--target /var/tmp/{name}-target {extra} {shlex.quote(project_spec)}")


def installed_version(host, name):
    dist = name.replace("-", "_")
    found = host.check_output(f"ls /var/tmp/{name}-target | grep -E '^{dist}-.*\\.dist-info$' || true").split()
    assert len(found) == 1, found
    return found[0][len(dist) + 1:-len(".dist-info")]


def access_log_lines(server_host, needle):
    # nginx writes its access log in batches, at least every second.
    time.sleep(1.5)
    return server_host.check_output(f"grep -F {shlex.quote(needle)} {ACCESS_LOG} || true").splitlines()


# pip reads PEP 714's core-metadata key from 23.2 on. Debian 12's pip (23.0, the default
# scenario's client) reads JSON pages but not their metadata key (and would fail on the older
# one), so it downloads wheels as before; Debian 13's pip (25.1) is the one to prove it with.
@pytest.mark.scenarios("debian13")
def test_pip_reads_metadata_files_and_downloads_only_the_wheel_it_installs(
        host, test_vars, server, ca, reader, server_host, project):
    """PEP 658/714: pip reads the .metadata file beside each wheel. Version 2.0 needs a project
    that does not exist, so pip must look inside 2.0 and fall back to 1.0: it does so from the
    metadata file alone, and downloads only the 1.0 wheel it installs."""
    name, publish = project
    publish("1.0")
    publish("2.0", requires_dist="cheeseshop-never-published")
    dist = name.replace("-", "_")
    run = pip(host, test_vars, server, ca, reader, name, name)
    assert run.rc == 0, run.stdout + run.stderr
    assert installed_version(host, name) == "1.0"
    lines = access_log_lines(server_host, f"/packages/{dist}-")
    assert any(f"GET /packages/{dist}-2.0-py3-none-any.whl.metadata " in line and '" 200 ' in line
               for line in lines), lines
    wheels = [line for line in lines if ".whl " in line]
    assert len(wheels) == 1 and f"GET /packages/{dist}-1.0-py3-none-any.whl " in wheels[0], wheels


def test_pip_skips_a_version_whose_requires_python_excludes_it(host, test_vars, server, ca, reader, project):
    name, publish = project
    publish("1.0", ">=3.8")
    publish("2.0", "<3")
    run = pip(host, test_vars, server, ca, reader, name, name)
    assert run.rc == 0, run.stdout + run.stderr
    assert installed_version(host, name) == "1.0"


def test_uv_honours_exclude_newer_from_the_upload_times(host, test_vars, server, ca, reader, project):
    """PEP 700: the JSON pages give each file's upload time, which --exclude-newer reads."""
    name, publish = project
    publish("1.0")
    page = json.loads(host.check_output(
        f"curl -s --cacert {ca} -u {shlex.quote(reader[0] + ':' + reader[1])} "
        f"-H 'Accept: application/vnd.pypi.simple.v1+json' https://{server}/simple/{name}/"))
    first = page["files"][0]["upload-time"]
    time.sleep(2)
    publish("2.0")
    # Just after the first upload: the second one is newer.
    cutoff = first[:19] + ".999999Z"
    uv = f"{test_vars['cheeseshop_test_client_venv']}/bin/uv"
    index = f"https://{reader[0]}:{reader[1]}@{server}/simple/"
    run = host.run(f"SSL_CERT_FILE={ca} {uv} pip install --no-cache --python /usr/bin/python3 "
                   f"--target /var/tmp/{name}-target --index-url {index} --exclude-newer {cutoff} {name}")
    assert run.rc == 0, run.stdout + run.stderr
    assert installed_version(host, name) == "1.0"


# The page service and the pages role decide yanks and rebuilds the same way on every Debian
# release (the same Python program, the same tasks): default proves it for both.
@pytest.mark.scenarios("default")
def test_yanked_version_is_skipped_unless_pinned_and_a_rerun_unyanks_it(
        host, test_vars, server, ca, reader, project):
    """PEP 592, declared in the inventory: pip passes over a yanked version, installs it when
    pinned exactly and says why it was yanked; taking the entry out un-yanks it."""
    name, publish = project
    publish("1.0")
    publish("2.0")
    yanked = {"pypi_indexes": [{"name": "main", "yanked": [
        {"project": name.upper().replace("-", "_"), "version": "2.0", "reason": "broken build"}]}]}
    try:
        rc, output, _ = run_playbook(server, project_playbook("site.yml"), yanked, tags="pages")
        assert rc == 0, output[-3000:]
        run = pip(host, test_vars, server, ca, reader, name, name)
        assert run.rc == 0 and installed_version(host, name) == "1.0", run.stdout + run.stderr
        run = pip(host, test_vars, server, ca, reader, f"{name}==2.0", name)
        assert run.rc == 0 and installed_version(host, name) == "2.0", run.stdout + run.stderr
        assert "broken build" in run.stdout + run.stderr
    finally:
        rc, output, _ = run_playbook(server, project_playbook("site.yml"), tags="pages")
        assert rc == 0, output[-3000:]
    host.check_output(f"rm -rf /var/tmp/{name}-target")
    run = pip(host, test_vars, server, ca, reader, name, name)
    assert run.rc == 0 and installed_version(host, name) == "2.0", run.stdout + run.stderr


@pytest.mark.scenarios("default")
def test_reindex_tag_rebuilds_the_pages_and_changes_nothing_when_nothing_changed(server, server_host):
    """--tags reindex: every page from the files on disk; with nothing new, nothing is written."""
    page = "/srv/pypi/pages/main/simple/index.html"
    server_host.check_output(f"rm {page}")
    rc, output, _ = run_playbook(server, project_playbook("site.yml"), tags="reindex")
    assert rc == 0 and "changed=1" in output, output[-3000:]
    assert server_host.file(page).exists
    rc, output, _ = run_playbook(server, project_playbook("site.yml"), tags="reindex")
    assert rc == 0 and "changed=0" in output, output[-3000:]


def test_a_rebuild_by_hand_goes_through_the_running_service(server_host):
    """One writer per index: the service holds each index's lock, so a rebuild started by hand
    asks the service (it would otherwise wait for the lock) and answers at once."""
    out = server_host.check_output("runuser -u cheeseshop-pages -- /usr/bin/python3 -I "
                                   "/usr/local/lib/cheeseshop-pages/cheeseshop-pages rebuild /etc/cheeseshop-pages.json")
    assert json.loads(out.splitlines()[0])["index"] == "main"
    assert server_host.service("cheeseshop-pages").is_running


# The data volume of the debian13 scenario is xfs; default's ext4 keeps blocks for root that
# would make "full" mean two things.
@pytest.mark.scenarios("debian13")
def test_an_upload_the_full_volume_cannot_hold_leaves_nothing_and_is_taken_once_there_is_room(
        host, test_vars, server, ca, curl, reader, uploader, server_host):
    """pypiserver wrote uploads in place: on a full volume the cut file stayed, was listed with
    the hash of the cut bytes, and every retry was refused as "already exists"."""
    name = f"cheeseshop-full-{version().replace('.', '-')}"
    path = host.check_output(f"PAYLOAD_MB=3 /usr/local/bin/make_wheel.py {name} 1.0 /var/tmp/{name}")
    filename = os.path.basename(path)
    page = f"https://{server}/simple/{name}/"
    filler = "/srv/pypi/cheeseshop-test-filler"
    free = int(server_host.check_output("df --block-size=1 --output=avail /srv/pypi | tail -1"))
    server_host.check_output(f"fallocate -l {free - 2 ** 20} {filler}")
    try:
        assert int(server_host.check_output("df --block-size=1 --output=avail /srv/pypi | tail -1")) <= 2 ** 20
        run = https_upload(host, test_vars, server, ca, path, uploader)
        assert run.rc != 0 and twine_status(run) == 507, run.stdout + run.stderr
        form = (f"-F ':action=file_upload' -F protocol_version=1 -F name={name} -F version=1.0 "
                f"-F content=@{path}")
        login = shlex.quote(f"{uploader[0]}:{uploader[1]}")
        answer = host.run(f"{curl} -u {login} {form} -w '\\n%{{http_code}}' https://{server}/")
        assert answer.stdout.endswith("\n507"), answer.stdout
        # pypiserver's message as text, without Bottle's page (which names its loopback address).
        assert answer.stdout.startswith(f"507 {filename} was not stored: the package volume is full"), answer.stdout
        # Nothing of it kept, under its name or a hidden one, and nothing listed.
        dist = name.replace("-", "_")
        assert server_host.check_output(f"ls -A /srv/pypi/packages | grep -F {dist} || true") == ""
        assert status(host, curl, page, reader) == 404
    finally:
        server_host.check_output(f"rm -f {filler}")
    run = https_upload(host, test_vars, server, ca, path, uploader)
    assert run.rc == 0, run.stdout + run.stderr
    digest = host.check_output(f"sha256sum {path}").split()[0]
    assert f"{filename}#sha256={digest}" in body(host, curl, page, reader)
    host.run(f"rm -rf /var/tmp/{name}")
