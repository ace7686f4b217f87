"""The mirror index over the wire (molecule/indexes, cheeseshop.pypi.mirror): pypi-mirror at
/mirror/ syncs cheeseshop-mirrored-widgets and its dependencies from the stand-in upstream on the
client (prepare.yml), which serves PEP 691 pages with upload times, as PyPI does.

The first converge filled it; pip and uv install from it, uv's exclude-newer reads upstream's
upload times there; nobody uploads to it. When upstream offers a name that another index of the
host holds, the sync never fetches it and says so (dependency confusion), and a rerun with
nothing new changes nothing.
"""
import json
import os
import shlex
import time
from types import SimpleNamespace

import pytest

from conftest import (body, client_wheel, headers, https_upload, project_playbook, run_playbook, sha256_by_name,
                      status, version)

testinfra_hosts = ["ansible://clients"]

MIRROR = "/mirror/"
PACKAGES = "/srv/pypi/indexes/pypi-mirror"
UPSTREAM = "/opt/stand-in-upstream/files"
WIDGETS = "cheeseshop_mirrored_widgets-1.0-py3-none-any.whl"
GADGETS = "cheeseshop_mirrored_gadgets-2.0-py3-none-any.whl"
JSON = "-H 'Accept: application/vnd.pypi.simple.v1+json'"


@pytest.fixture(scope="module")
def reader(credentials):
    """Every present user reads the mirror (read: authenticated)."""
    return ("customer-b-dev", credentials["customer-b-dev"])


def publish(host, name, ver, requires=""):
    """A release on the stand-in upstream, uploaded now."""
    env = f"REQUIRES_DIST={shlex.quote(requires)} " if requires else ""
    path = host.check_output(f"{env}/usr/local/bin/make_wheel.py {name} {ver} {UPSTREAM}")
    times = json.loads(host.file(f"{UPSTREAM}/upload-times.json").content_string)
    times[os.path.basename(path)] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    host.check_output(f"echo {shlex.quote(json.dumps(times))} > {UPSTREAM}/upload-times.json")
    return os.path.basename(path)


def pip_installs(host, venv, ca, index, requirement):
    """pip in a fresh virtualenv, from index alone and trusting only ca: what it lists after."""
    host.check_output(f"rm -rf {venv} && python3 -m venv {venv}")
    host.check_output(f"{venv}/bin/pip install --quiet --no-cache-dir --cert {ca} --index-url {shlex.quote(index)} "
                      f"{shlex.quote(requirement)}")
    return host.check_output(f"{venv}/bin/pip list --format=freeze")


def test_the_first_converge_filled_the_mirror_with_upstream_s_files_and_times(host, server_host, server, curl,
                                                                            reader, test_vars, ca):
    stored = sha256_by_name(server_host, PACKAGES)
    upstream = sha256_by_name(host, UPSTREAM)
    assert {WIDGETS, GADGETS} <= set(stored)
    assert stored[WIDGETS] == upstream[WIDGETS] and stored[GADGETS] == upstream[GADGETS]
    page = json.loads(body(host, f"{curl} {JSON}", f"https://{server}{MIRROR}simple/cheeseshop-mirrored-widgets/",
                           reader))
    (entry,) = [f for f in page["files"] if f["filename"] == WIDGETS]
    assert entry["upload-time"].startswith("2021-05-06T07:08:09"), entry
    assert entry["hashes"]["sha256"] == upstream[WIDGETS]

    index = f"https://{reader[0]}:{reader[1]}@{server}{MIRROR}simple/"
    venv = "/var/tmp/mirror-client"
    # 1.0: the 1.1 that test_a_private_name... publishes needs a name that is never mirrored.
    installed = pip_installs(host, venv, ca, index, "cheeseshop-mirrored-widgets==1.0")
    assert "cheeseshop-mirrored-widgets==1.0" in installed and "cheeseshop-mirrored-gadgets==2.0" in installed
    # uv reads the upload times the mirror kept: nothing of widgets is older than May 2021.
    uv = (f"SSL_CERT_FILE={ca} {test_vars['cheeseshop_test_client_venv']}/bin/uv pip install --python {venv}/bin/python "
          f"--index-url {shlex.quote(index)} --reinstall cheeseshop-mirrored-widgets==1.0 --exclude-newer")
    assert host.run(f"{uv} 2022-06-01T00:00:00Z").rc == 0
    too_early = host.run(f"{uv} 2021-05-01T00:00:00Z")
    assert too_early.rc != 0 and "cheeseshop-mirrored-widgets" in too_early.stderr, too_early.stderr


def test_nobody_uploads_to_the_mirror(host, server_host, server, ca, test_vars, credentials):
    wheel = client_wheel(host, "cheeseshop-mirrored-forged", version())
    run = https_upload(host, test_vars, server, ca, wheel, ("customer-a-dev", credentials["customer-a-dev"]), MIRROR)
    assert run.rc != 0
    assert os.path.basename(wheel) not in sha256_by_name(server_host, PACKAGES)


@pytest.fixture(scope="module")
def confusion(host, server_host, server, ca, test_vars, credentials):
    """customer-a holds cheeseshop-owned-confused; upstream then publishes a higher version of
    that name, and a widgets release that depends on it; the mirror syncs twice (--tags mirror).
    Made once for the tests that read it, in whatever order they run."""
    private = client_wheel(host, "cheeseshop-owned-confused", "1.0")
    run = https_upload(host, test_vars, server, ca, private, ("customer-a-dev", credentials["customer-a-dev"]),
                       "/private/customer-a/")
    assert run.rc == 0, run.stdout + run.stderr
    confused = publish(host, "cheeseshop-owned-confused", "99.0")
    widgets = publish(host, "cheeseshop-mirrored-widgets", "1.1", "cheeseshop-owned-confused>=1")
    name = server_host.backend.get_hostname()
    first = run_playbook(name, project_playbook("site.yml"), tags="mirror")
    again = run_playbook(name, project_playbook("site.yml"), tags="mirror")
    return SimpleNamespace(confused=confused, widgets=widgets, first=first, again=again)


def test_a_private_name_upstream_offers_is_never_mirrored_and_is_reported(server_host, confusion):
    """The sync takes widgets and not the private name, and names the attempt with upstream's
    version; a rerun with nothing new changes nothing and still names it."""
    rc, output, _ = confusion.first
    text = " ".join(output.split())
    assert rc == 0 and "changed=0" not in output, output[-3000:]
    assert ("cheeseshop-owned-confused is private here and upstream offers 99.0: not mirrored (shadowed)"
            in text), output[-3000:]
    stored = sha256_by_name(server_host, PACKAGES)
    assert confusion.widgets in stored and confusion.confused not in stored
    assert not any(f.startswith("cheeseshop_owned_confused") for f in stored)
    # The audit log has the new file's line, from the mirror.
    lines = [json.loads(line) for line in
             server_host.file("/var/log/cheeseshop-pypi/audit.log").content_string.splitlines()]
    assert [(line["index"], line["identity"]) for line in lines if line.get("file") == confusion.widgets] == [
        ("pypi-mirror", "mirror")]

    rc, output, _ = confusion.again
    assert rc == 0 and "changed=0" in output, output[-3000:]
    assert "upstream offers 99.0: not mirrored (shadowed)" in " ".join(output.split())


def test_the_timer_syncs_in_a_sandbox(server_host):
    assert server_host.service("cheeseshop-mirror.timer").is_enabled
    show = server_host.check_output("systemctl show --property=User,ProtectSystem,ReadWritePaths cheeseshop-mirror")
    assert "User=pypiserver" in show and "ProtectSystem=strict" in show
    assert f"ReadWritePaths={PACKAGES}" in show


# --- One URL for everything: the group /all/ -------------------------------------------------

GROUP = "/all/simple/"


def group_files(host, curl, server, project, user):
    """(status, [file URLs]) of a project's group page for this reader."""
    url = f"https://{server}{GROUP}{project}/"
    code = status(host, f"{curl} {JSON}", url, user)
    if code != 200:
        return code, []
    return code, sorted(f["url"] for f in json.loads(body(host, f"{curl} {JSON}", url, user))["files"])


def test_the_group_serves_a_private_name_from_its_index_and_never_from_the_mirror(host, server, curl,
                                                                                    credentials, confusion, token):
    """customer-a holds cheeseshop-owned-confused, which upstream offers at 99.0 (never
    mirrored). customer-a's reader gets customer-a's file; customer-b's reader, who may not read
    customer-a, gets 404 and never the mirror's; a name only the mirror has is the mirror's for
    both; no credentials, 401; a token, which reads its one index only, 403."""
    alice = ("customer-a-dev", credentials["customer-a-dev"])
    bob = ("customer-b-dev", credentials["customer-b-dev"])
    code, files = group_files(host, curl, server, "cheeseshop-owned-confused", alice)
    assert code == 200 and files == ["/private/customer-a/packages/cheeseshop_owned_confused-1.0-py3-none-any.whl"]
    assert group_files(host, curl, server, "cheeseshop-owned-confused", bob) == (404, [])
    for reader in (alice, bob):
        code, files = group_files(host, curl, server, "cheeseshop-mirrored-widgets", reader)
        assert code == 200 and files == [f"/mirror/packages/{WIDGETS}", f"/mirror/packages/{confusion.widgets}"]
    assert group_files(host, curl, server, "cheeseshop-never-heard-of", alice) == (404, [])
    headers = host.check_output(f"{curl} -D - -o /dev/null https://{server}{GROUP}cheeseshop-mirrored-widgets/")
    assert headers.startswith("HTTP/2 401") and "www-authenticate: basic" in headers.lower()
    # customer-a's read token, valid on customer-a's own URL: on the group, 403 (uv and pip stop
    # there instead of asking again), and not counted as a failed guess: 25 of them, past the
    # limit of 20 failures per address, leave the next request from this address served.
    ci = ("__token__", token["ci-a-read"])
    assert status(host, curl, f"https://{server}/private/customer-a/simple/", ci) == 200
    assert [status(host, curl, f"https://{server}{GROUP}cheeseshop-owned-confused/", ci) for _ in range(25)] == [403] * 25
    assert status(host, curl, f"https://{server}{GROUP}cheeseshop-owned-confused/", alice) == 200


# (Accept header, the page's Content-Type): the first two the map in nginx.conf decides, the last
# two cheeseshop_pages.lua weighs.
GROUP_ACCEPTS = [
    (None, "text/html"),
    ("application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.v1+json"),
    ("application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.v1+html"),
    ("text/html;q=0.2, application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.v1+json"),
]


@pytest.mark.parametrize("accept,content_type", GROUP_ACCEPTS, ids=[a or "no Accept" for a, _ in GROUP_ACCEPTS])
def test_group_pages_answer_every_accept_as_an_index_page_does(host, server, curl, credentials, confusion,
                                                               accept, content_type):
    """Whatever the client accepts, the reader gets the page of the members they may read, with
    an index page's headers; another reader gets 404 and an unnormalised name a redirect."""
    alice = ("customer-a-dev", credentials["customer-a-dev"])
    bob = ("customer-b-dev", credentials["customer-b-dev"])
    extra = f"-H {shlex.quote('Accept: ' + accept)}" if accept else ""
    url = f"https://{server}{GROUP}cheeseshop-owned-confused/"
    got = headers(host, curl, url, alice, extra)
    assert got.startswith("http/2 200"), got
    assert f"content-type: {content_type}\r\n" in got and "vary: accept" in got, got
    assert "cache-control: private, no-cache" in got, got
    page = body(host, curl, url, alice, extra)
    assert "cheeseshop_owned_confused-1.0-py3-none-any.whl" in page, page
    assert status(host, curl, url, bob, extra) == 404
    moved = headers(host, curl, f"https://{server}{GROUP}Cheeseshop_Owned.Confused/", alice, extra)
    assert moved.startswith("http/2 301") and f"location: {GROUP}cheeseshop-owned-confused/\r\n" in moved, moved


def test_a_name_made_private_after_it_was_mirrored_is_then_served_only_from_its_index(host, server, ca, curl,
                                                                                     test_vars, credentials):
    bob = ("customer-b-dev", credentials["customer-b-dev"])
    alice = ("customer-a-dev", credentials["customer-a-dev"])
    private = client_wheel(host, "cheeseshop-mirrored-gadgets", "0.5")
    run = https_upload(host, test_vars, server, ca, private, bob, "/private/customer-b/")
    assert run.rc == 0, run.stdout + run.stderr
    code, files = group_files(host, curl, server, "cheeseshop-mirrored-gadgets", bob)
    assert code == 200 and files == ["/private/customer-b/packages/cheeseshop_mirrored_gadgets-0.5-py3-none-any.whl"]
    # A reader of the mirror who may not read customer-b: the name is private, so 404.
    assert group_files(host, curl, server, "cheeseshop-mirrored-gadgets", alice) == (404, [])
    # pip through the one URL: the private release, never upstream's 2.0.
    index = f"https://{bob[0]}:{bob[1]}@{server}{GROUP}"
    installed = pip_installs(host, "/var/tmp/group-client", ca, index, "cheeseshop-mirrored-gadgets")
    assert "cheeseshop-mirrored-gadgets==0.5" in installed, installed


def test_pip_and_uv_through_the_group_get_the_private_release_never_upstream_s_higher_one(
        host, server, ca, test_vars, credentials, confusion):
    """The first confusion case with real clients: upstream offers cheeseshop-owned-confused
    99.0, customer-a holds 1.0. pip and uv, given only the group URL and the CA, install 1.0.
    (Whether gadgets is private yet depends on the test order, so nothing here installs it.)"""
    alice = ("customer-a-dev", credentials["customer-a-dev"])
    index = f"https://{alice[0]}:{alice[1]}@{server}{GROUP}"
    venv = "/var/tmp/group-confused"
    installed = pip_installs(host, venv, ca, index, "cheeseshop-owned-confused")
    assert "cheeseshop-owned-confused==1.0" in installed, installed
    uv = f"SSL_CERT_FILE={ca} {test_vars['cheeseshop_test_client_venv']}/bin/uv"
    run = host.run(f"{uv} pip install --python {venv}/bin/python --no-cache --index-url {shlex.quote(index)} "
                   "--reinstall cheeseshop-owned-confused")
    assert run.rc == 0, run.stdout + run.stderr
    assert "cheeseshop-owned-confused==1.0" in host.check_output(f"{venv}/bin/pip list --format=freeze")
    # Asked for upstream's version by name, neither finds it: the group never serves it.
    for command in (f"{venv}/bin/pip install --quiet --no-cache-dir --cert {ca} --index-url {shlex.quote(index)} "
                    "cheeseshop-owned-confused==99.0",
                    f"{uv} pip install --python {venv}/bin/python --no-cache --index-url {shlex.quote(index)} "
                    "cheeseshop-owned-confused==99.0"):
        run = host.run(command)
        assert run.rc != 0 and "99.0" in run.stderr, run.stdout + run.stderr


def test_a_private_upload_is_listed_through_the_group_when_twine_returns(host, server, ca, curl, test_vars,
                                                                        credentials):
    """As on its own index: the page service writes the group's page before the upload is
    answered, so the very next request through the group lists it."""
    bob = ("customer-b-dev", credentials["customer-b-dev"])
    name, ver = "cheeseshop-group-fresh", version()
    wheel = client_wheel(host, name, ver)
    run = https_upload(host, test_vars, server, ca, wheel, bob, "/private/customer-b/")
    assert run.rc == 0, run.stdout + run.stderr
    code, files = group_files(host, curl, server, name, bob)
    assert code == 200 and f"/private/customer-b/packages/{os.path.basename(wheel)}" in files, (code, files)
