"""The nginx TLS front, from a client container that holds nothing but the fetched CA.

The four failures of the widely copied cache configuration (`proxy_cache_key $uri;
proxy_cache_valid any 5m;`) each have a test here that fails on it: a cached 401 locking users
out, a page or file served to an anonymous client after a user fetched it, an upload invisible
for minutes, and uploads over 1 MB refused.
"""
import base64
import bz2
import io
import json
import os
import re
import shlex
import subprocess
import tarfile
import time
import zipfile
from urllib.parse import urljoin, urlsplit

import pytest

from conftest import (body, client_wheel as make_wheel, first_file_url, headers, https_upload as upload,
                      project_playbook, restart_nginx, run_playbook, served_while_pypiserver_is_down, status, twine_status,
                      until_page, version)

testinfra_hosts = ["ansible://clients"]


@pytest.fixture(scope="module", autouse=True)
def probe_package(host, test_vars, server, ca, uploader):
    """The package the tests here read (cheeseshop-probe), uploaded over HTTPS by this file
    itself: it does not depend on another file having run first."""
    ver = version()
    path = make_wheel(host, "cheeseshop-probe", ver)
    run = upload(host, test_vars, server, ca, path, uploader)
    assert run.rc == 0, run.stdout + run.stderr
    yield ver
    host.run(f"rm -rf /var/tmp/proxy-{ver}")


# --- Transport -------------------------------------------------------------------------

def test_http_redirects_to_https(host, server):
    out = host.check_output(f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{server}/simple/")
    assert out == f"301 https://{server}/simple/"


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_old_tls_versions_are_refused(host, server, ca, flag):
    # SECLEVEL=0 lets this client offer TLS 1.0/1.1, so only the server can refuse them.
    run = host.run(f"openssl s_client -connect {server}:443 -servername {server} {flag} "
                   f"-cipher 'DEFAULT:@SECLEVEL=0' -CAfile {ca} </dev/null")
    # The server's alert 70; a refusal by the client itself would say "no protocols available".
    assert run.rc != 0 and "alert protocol version" in run.stderr, run.stdout + run.stderr


def test_tls13_is_spoken_and_the_certificate_verifies(host, server, ca):
    run = host.run(f"openssl s_client -connect {server}:443 -servername {server} -tls1_3 "
                   f"-CAfile {ca} -verify_return_error </dev/null")
    assert run.rc == 0, run.stdout + run.stderr
    assert "TLSv1.3" in run.stdout and "Verify return code: 0 (ok)" in run.stdout


def test_http2_hsts_and_no_server_version(host, curl, server, reader):
    head = headers(host, curl, f"https://{server}/simple/", reader, "--http2")
    assert head.startswith("http/2 200"), head
    assert "strict-transport-security: max-age=" in head
    assert "\nserver: nginx\r\n" in head, head  # curl writes the header lines as received: CRLF


def test_every_answer_carries_one_hsts_header(host, curl, server, reader):
    """HSTS is set once for the server (more_set_headers), not per location: every status and
    every kind of location sends it exactly once."""
    answers = {
        f"https://{server}/simple/": (reader, "200"),
        f"https://{server}/simple/Cheeseshop_Probe": (reader, "301"),
        f"https://{server}/packages/no-such-file-1.0.tar.gz": (reader, "404"),
        f"https://{server}/simple/?anonymous": (None, "401"),
        f"https://{server}/no/such/path": (reader, "404"),
        f"https://{server}/health": (None, "200"),
    }
    for url, (user, code) in answers.items():
        head = headers(host, curl, url, user)
        assert head.split(" ", 2)[1] == code, (url, head)
        # check_output strips the last header's CRLF: read the lines, not the text.
        assert re.findall(r"^strict-transport-security:(.*?)\r?$", head, re.M) == [" max-age=63072000"], (url, head)


def test_served_certificate_is_not_a_ca(host, server, ca):
    """uv (rustls) refuses a CA used as a server certificate: the default is CA + leaf."""
    text = host.check_output(f"openssl s_client -connect {server}:443 -servername {server} </dev/null "
                             f"2>/dev/null | openssl x509 -noout -text")
    assert "CA:FALSE" in text and f"DNS:{server}" in text
    # Security review #27, finding 8: it named the host's internal addresses too.
    addresses = sorted(re.findall(r"IP Address:([0-9A-Fa-f.:]+)", text))
    assert addresses == ["0:0:0:0:0:0:0:1", "127.0.0.1"], addresses


# --- Who may read ----------------------------------------------------------------------

def test_anonymous_and_outsider_are_refused_pages_and_files(host, curl, server, credentials, reader):
    """No credentials or a wrong password: 401. A user of the host who may not read this index,
    with its right password: 403 (#41), which clients take as final."""
    page = f"https://{server}/simple/"
    outsider = ("molecule-outsider", credentials["molecule-outsider"])
    # The index's own path too, whatever the method: nothing there tells a stranger of the index.
    for extra in ("", " -X PUT", " -X DELETE"):
        assert status(host, curl, f"https://{server}/", None, extra) == 401, extra
    assert status(host, curl, page) == 401
    assert status(host, curl, page, outsider) == 403
    assert status(host, curl, page, (reader[0], "wrong-password")) == 401
    assert status(host, curl, page, (outsider[0], "wrong-password")) == 401
    file_url = first_file_url(host, curl, f"https://{server}/simple/cheeseshop-probe/", reader)
    assert status(host, curl, file_url, reader) == 200
    assert status(host, curl, file_url) == 401
    assert status(host, curl, file_url, outsider) == 403


def test_no_cached_401_locks_users_out(host, curl, server, reader):
    """Copied config: an anonymous 401 cached for 5 minutes under $uri answers everyone."""
    url = f"https://{server}/simple/cheeseshop-probe/?lockout={time.time_ns()}"
    assert status(host, curl, url) == 401
    assert status(host, curl, url, reader) == 200


def test_page_and_file_never_reach_anonymous(host, curl, server, reader):
    """Copied config: what a user fetched is then served from cache to anyone."""
    url = f"https://{server}/simple/cheeseshop-probe/"
    assert status(host, curl, url, reader) == 200
    assert status(host, curl, url) == 401
    assert status(host, curl, first_file_url(host, curl, url, reader)) == 401
    json_accept = "-H 'Accept: application/vnd.pypi.simple.v1+json'"
    assert status(host, curl, url, None, json_accept) == 401
    assert status(host, curl, f"https://{server}/simple/", None, json_accept) == 401


@pytest.mark.parametrize("accept, content_type", [
    (None, "text/html"),
    ("text/html", "text/html"),
    ("application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.v1+json"),
    ("application/vnd.pypi.simple.latest+json", "application/vnd.pypi.simple.v1+json"),
    ("application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.v1+html"),
    # What pip sends: JSON first.
    ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01",
     "application/vnd.pypi.simple.v1+json"),
    ("application/vnd.pypi.simple.v1+json; q=0.2, text/html", "text/html"),
    ("application/vnd.pypi.simple.v1+json; q=0, text/html", "text/html"),
])
def test_pages_are_html_or_json_as_accept_asks(host, curl, server, reader, probe_package, accept, content_type):
    """PEP 691: one URL, the form the client prefers, told in Content-Type and Vary."""
    url = f"https://{server}/simple/cheeseshop-probe/"
    extra = f"-H {shlex.quote('Accept: ' + accept)}" if accept else ""
    head = headers(host, curl, url, reader, extra)
    assert head.startswith("http/2 200") and f"content-type: {content_type}\r\n" in head, head
    assert "vary: accept" in head and "cache-control: private, no-cache" in head
    page = body(host, curl, url, reader) if not accept else host.check_output(
        f"{curl} -u {shlex.quote(reader[0] + ':' + reader[1])} {extra} {url}")
    if "json" in content_type:
        data = json.loads(page)
        assert data["meta"]["api-version"] == "1.4" and data["name"] == "cheeseshop-probe"
        assert probe_package in data["versions"]
    else:
        assert '<meta name="pypi:repository-version" content="1.4">' in page and probe_package in page


def test_json_page_has_hashes_sizes_times_and_metadata(host, curl, server, reader, probe_package):
    """PEP 691 1.1 and PEP 700: every file's sha256, size and upload time; PEP 658/714: a
    wheel's metadata file, whose hash is on the page, beside the wheel."""
    url = f"https://{server}/simple/cheeseshop-probe/"
    data = json.loads(host.check_output(f"{curl} -u {shlex.quote(reader[0] + ':' + reader[1])} "
                                        f"-H 'Accept: application/vnd.pypi.simple.v1+json' {url}"))
    wheel = next(f for f in data["files"] if probe_package in f["filename"])
    file_url = urljoin(url, wheel["url"])
    downloaded = host.check_output(f"{curl} -u {shlex.quote(reader[0] + ':' + reader[1])} {file_url} | sha256sum")
    assert downloaded.split()[0] == wheel["hashes"]["sha256"]
    assert int(host.check_output(f"{curl} -u {shlex.quote(reader[0] + ':' + reader[1])} {file_url} | wc -c")) \
        == wheel["size"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", wheel["upload-time"]), wheel
    metadata = host.check_output(f"{curl} -u {shlex.quote(reader[0] + ':' + reader[1])} {file_url}.metadata")
    assert "Name: cheeseshop-probe" in metadata and f"Version: {probe_package}" in metadata
    digest = host.check_output(f"{curl} -u {shlex.quote(reader[0] + ':' + reader[1])} {file_url}.metadata "
                               "| sha256sum").split()[0]
    assert wheel["core-metadata"] == {"sha256": digest}
    # PEP 714: not the old JSON key, on which pip 22.3 to 23.1 (Debian 12's) fail.
    assert "dist-info-metadata" not in wheel
    page = body(host, curl, url, reader)
    assert f'data-core-metadata="sha256={digest}"' in page and f'data-dist-info-metadata="sha256={digest}"' in page
    assert status(host, curl, f"{file_url}.metadata") == 401


def test_xmlrpc_is_not_exposed(host, curl, server, reader):
    """Security review #27, finding 2: any reader's (on a public index, anyone's) XML-RPC POST to
    /RPC2 got 200 from pypiserver and emptied the page cache of every index. /RPC2 is 404."""
    call = ("-X POST -H 'Content-Type: text/xml' --data "
            "'<?xml version=\"1.0\"?><methodCall><methodName>list_packages</methodName></methodCall>'")
    assert status(host, curl, f"https://{server}/RPC2", reader, call) == 404


# --- Uploads, freshness, files ------------------------------------------------------------

def test_every_upload_is_listed_when_twine_returns(host, test_vars, curl, server, ca, uploader, reader):
    """Copied config: a cached project page hides a new upload for up to 5 minutes. Here nginx
    answers twine only once the page service has written the project's pages: the page
    fetched right after twine returns lists the file, every time, in both forms."""
    url = f"https://{server}/simple/cheeseshop-fresh/"
    json_accept = "-H 'Accept: application/vnd.pypi.simple.v1+json'"
    for _ in range(5):
        ver = version()
        assert upload(host, test_vars, server, ca, make_wheel(host, "cheeseshop-fresh", ver), uploader).rc == 0
        assert ver in body(host, curl, url, reader)
        assert ver in host.check_output(f"{curl} -u {shlex.quote(reader[0] + ':' + reader[1])} {json_accept} {url}")


def test_files_copied_in_or_deleted_by_hand_show_on_the_page(host, curl, server, reader):
    """A file that did not come through nginx (a copy by hand, a restore, a mirror job) is
    listed once it is whole, and one deleted by hand leaves the page: the page service watches
    the directory (inotify)."""
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    page = f"https://{server}/simple/cheeseshop-probe/"
    new = version()
    by_hand = f"/srv/pypi/packages/cheeseshop_probe-{new}-py3-none-any.whl"
    wheel = host.check_output(f"/usr/local/bin/make_wheel.py cheeseshop-probe {new} /var/tmp/by-hand-{new}")
    content = host.check_output(f"base64 -w0 {wheel}")
    try:
        # Written in two steps, as a slow copy is: half a wheel is never listed.
        server_host.check_output(f"echo {content} | base64 -d > /var/tmp/{new}.whl && "
                                 f"head -c 100 /var/tmp/{new}.whl > {by_hand} && chown pypiserver {by_hand}")
        server_host.check_output(f"cat /var/tmp/{new}.whl > {by_hand}")
        until_page(host, curl, page, reader, new)
        server_host.check_output(f"rm -f {by_hand}")
        until_page(host, curl, page, reader, new, listed=False)
    finally:
        server_host.check_output(f"rm -f {by_hand} /var/tmp/{new}.whl")
        host.run(f"rm -rf /var/tmp/by-hand-{new}")


def test_half_written_file_is_not_listed(host, curl, server, reader):
    """pypiserver writes uploads in place; a file that is not whole yet (here, cut short) is
    not listed, so no client installs it with a hash of the truncated bytes."""
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    page = f"https://{server}/simple/cheeseshop-probe/"
    new = version()
    wheel = host.check_output(f"/usr/local/bin/make_wheel.py cheeseshop-probe {new} /var/tmp/cut-{new}")
    content = host.check_output(f"head -c 600 {wheel} | base64 -w0")
    cut = f"/srv/pypi/packages/cheeseshop_probe-{new}-py3-none-any.whl"
    marker = version()
    marker_file = f"/srv/pypi/packages/cheeseshop_probe-{marker}-py3-none-any.whl"
    marker_wheel = host.check_output(f"/usr/local/bin/make_wheel.py cheeseshop-probe {marker} /var/tmp/cut-{new}")
    try:
        server_host.check_output(f"echo {content} | base64 -d > {cut}")
        # A whole file written after it: once that one is listed, the cut one was seen too.
        server_host.check_output(f"echo {host.check_output(f'base64 -w0 {marker_wheel}')} | base64 -d > {marker_file}")
        until_page(host, curl, page, reader, marker)
        assert new not in body(host, curl, page, reader)
    finally:
        server_host.check_output(f"rm -f {cut} {marker_file}")
        host.run(f"rm -rf /var/tmp/cut-{new}")


def form_upload(host, curl, server, user, path, name, ver, filename):
    """An upload as an attacker sends it, with curl: the form's project name and the file name
    are whatever the caller says. The HTTP status and the answer's text."""
    out = host.check_output(
        f"{curl} -u {shlex.quote(user[0] + ':' + user[1])} -w '\\n%{{http_code}}' "
        f"-F ':action=file_upload' -F protocol_version=1 -F {shlex.quote('name=' + name)} "
        f"-F {shlex.quote('version=' + ver)} -F {shlex.quote(f'content=@{path};filename={filename}')} "
        f"https://{server}/")
    text, code = out.rsplit("\n", 1)
    return int(code), text


def test_hidden_or_misnamed_uploads_are_refused(host, curl, server, uploader, reader):
    """Security review #27, finding 6: an uploader's `.name-1.0.tar.gz` got 200, was listed
    nowhere, yet downloadable, and no removal reached it; a file under another project's name
    was taken too. nginx now refuses both with 400 before pypiserver stores anything, and the
    same form with a proper name still goes through."""
    ver = version()
    path = make_wheel(host, "cheeseshop-probe", ver)
    good = f"cheeseshop_probe-{ver}-py3-none-any.whl"
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    refused = {
        "." + good: "cheeseshop-probe",
        f"cheeseshop_probe-{ver}-py3-none-any.whl": "another-project",
        f"cheeseshop_probe-{ver}.exe": "cheeseshop-probe",
        f"../cheeseshop_probe-{ver}-py3-none-any.whl": "cheeseshop-probe",
    }
    for filename, name in refused.items():
        code, text = form_upload(host, curl, server, uploader, path, name, ver, filename)
        assert code == 400 and text.startswith("400 Bad upload: "), (filename, name, code, text)
        assert server_host.run(f"ls -a /srv/pypi/packages | grep -F -- {shlex.quote(ver)}").rc == 1
        assert status(host, curl, f"https://{server}/packages/{filename}", reader) == 404
    code, text = form_upload(host, curl, server, uploader, path, "Cheeseshop.Probe", ver, good)
    assert code == 200, (code, text)
    assert good in body(host, curl, f"https://{server}/simple/cheeseshop-probe/", reader)


def test_hidden_files_in_the_packages_directory_are_not_served(host, curl, server, reader):
    """Dot-files stored before nginx checked upload names (#27, finding 6) and uploads still
    being written (.<file>.<random>.part) are nobody's download: 404, while the same bytes
    under a plain name are served."""
    ver = version()
    plain = f"cheeseshop_probe-{ver}.tar.gz"
    hidden = [f".{plain}", f".{plain}.0123456789abcdef.part"]
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    try:
        for name in hidden + [plain]:
            server_host.check_output(f"echo hidden | install -o pypiserver -g www-data -m 0640 /dev/stdin "
                                     f"/srv/pypi/packages/{shlex.quote(name)}")
        for name in hidden:
            assert status(host, curl, f"https://{server}/packages/{name}", reader) == 404, name
        assert body(host, curl, f"https://{server}/packages/{plain}", reader) == "hidden"
    finally:
        server_host.run(f"rm -f {' '.join('/srv/pypi/packages/' + shlex.quote(n) for n in hidden + [plain])}")


def test_an_upload_whose_metadata_names_another_project_is_not_stored(host, curl, server, uploader, reader):
    """Security review #27, finding 6: a file named for one project whose own metadata names
    another was stored. Listed on neither page, it was a file only those who know its name
    could download. It is refused with 400 and nothing of it is kept; the real file of that
    name and version is taken afterwards."""
    ver = version()
    good = f"cheeseshop_probe-{ver}-py3-none-any.whl"
    other = make_wheel(host, "cheeseshop-other", ver)
    code, text = form_upload(host, curl, server, uploader, other, "cheeseshop-probe", ver, good)
    assert (code, text) == (400, f"400 Bad upload: {good}: its metadata names the project "
                                 f"'cheeseshop-other', its file name 'cheeseshop_probe'; nothing was stored.\n"), (code, text)
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    assert server_host.run(f"ls -a /srv/pypi/packages | grep -F -- {shlex.quote(ver)}").rc == 1
    assert status(host, curl, f"https://{server}/packages/{good}", reader) == 404
    code, text = form_upload(host, curl, server, uploader, make_wheel(host, "cheeseshop-probe", ver),
                             "cheeseshop-probe", ver, good)
    assert code == 200, (code, text)
    assert good in body(host, curl, f"https://{server}/simple/cheeseshop-probe/", reader)


def raw_upload(host, curl, server, user, content_type, data):
    """A hand-made request body, sent as is: its status and answer."""
    path = f"/var/tmp/raw-form-{version()}"
    put(host, data, path)
    try:
        out = host.check_output(
            f"{curl} -u {shlex.quote(user[0] + ':' + user[1])} -w '\\n%{{http_code}}' "
            f"-H {shlex.quote('Content-Type: ' + content_type)} --data-binary @{path} https://{server}/")
    finally:
        host.run(f"rm -f {path}")
    text, code = out.rsplit("\n", 1)
    return int(code), text


def put(host, data, path):
    """Bytes made here, written to a file on the client."""
    host.check_output(f"echo {base64.b64encode(data).decode()} | base64 -d > {path}")


def listed_on_its_page(host, curl, server, reader, filename):
    """Whether the page of the project a file name gives (PEP 503) lists that file."""
    project = re.sub(r"[-_.]+", "-", re.split(r"-(?=\d)", filename, maxsplit=1)[0]).lower()
    page = host.run(f"{curl} -u {shlex.quote(reader[0] + ':' + reader[1])} "
                    f"-H 'Accept: application/vnd.pypi.simple.v1+json' https://{server}/simple/{project}/").stdout
    try:
        return filename in [found["filename"] for found in json.loads(page)["files"]]
    except (ValueError, KeyError, TypeError):
        return False


def stored_unlisted(host, curl, server, reader, ver):
    """Files of this version in the packages directory (dot-files included) that their page does
    not list: there must never be one, whatever an upload looked like."""
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    stored = server_host.run(f"ls -A /srv/pypi/packages | grep -F -- {shlex.quote(ver)}").stdout.split()
    return [name for name in stored if not listed_on_its_page(host, curl, server, reader, name)]


def test_a_form_that_hides_a_second_file_from_a_plain_reader_is_refused(host, curl, server, uploader, reader):
    """A form with a delimiter hidden in the description (cgi ends lines at a bare LF and keeps
    the last file of a field). pypiserver's one parse decides which file it is, and the one
    check after it refuses the hidden name: nothing is stored."""
    ver, boundary = version(), "cheeseshop-probe-boundary"
    good = f"cheeseshop_probe-{ver}-py3-none-any.whl"

    def part(name, value, filename=""):
        file = f'; filename="{filename}"' if filename else ""
        return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{file}\r\n\r\n{value}\r\n'
    hidden = (f'README\n--{boundary}\nContent-Disposition: form-data; name="content"; '
              f'filename=".{good}"\n\nhidden')
    data = (part(":action", "file_upload") + part("name", "cheeseshop-probe") + part("version", ver)
            + part("content", "PK", good) + part("description", hidden) + f"--{boundary}--\r\n")
    code, text = raw_upload(host, curl, server, uploader, f"multipart/form-data; boundary={boundary}", data.encode())
    assert code == 400 and text.startswith("400 Bad upload: "), (code, text)
    assert stored_unlisted(host, curl, server, reader, ver) == []


@pytest.mark.parametrize("shape", ["second boundary parameter", "quote in the boundary", "bare CR in a header"])
def test_odd_body_shapes_store_nothing_unlisted(host, curl, server, uploader, reader, shape):
    """Second review, upload path: three body shapes made the Lua form reader and Python's cgi
    read different forms, and files named _x-1.0.tar.gz, -x-1.0.tar.gz, x-1.0.tar.xz and a
    dot-file were stored, downloadable and listed nowhere. Now one parse decides, and whatever
    it reads is checked: every answer is a refusal or a listed file, never a hidden one."""
    ver = version()
    wheel = host.check_output(f"base64 -w0 {make_wheel(host, 'cheeseshop-probe', ver)}")
    content = base64.b64decode(wheel)
    for hidden in (f"_x-{ver}.tar.gz", f"-x-{ver}.tar.gz", f"x-{ver}.tar.xz", f".x-{ver}.tar.gz"):
        boundary = 'a"b' if shape == "quote in the boundary" else "cheeseshop-odd"
        header = {"second boundary parameter": f'multipart/form-data; boundary=decoy; boundary ={boundary}',
                  "quote in the boundary": f"multipart/form-data; boundary={boundary}",
                  "bare CR in a header": f"multipart/form-data; boundary={boundary}"}[shape]
        disposition = ('Content-Disposition: form-data; name="content";\r filename="{}"'
                       if shape == "bare CR in a header" else 'Content-Disposition: form-data; name="content"; filename="{}"')
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in ((":action", "file_upload"), ("name", "cheeseshop-probe"), ("version", ver))]
        for filename in (f"cheeseshop_probe-{ver}-py3-none-any.whl", hidden):
            parts.append(f"--{boundary}\r\n{disposition.format(filename)}\r\n\r\n".encode() + content + b"\r\n")
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        code, text = raw_upload(host, curl, server, uploader, header, data)
        assert code in (200, 400, 409), (shape, hidden, code, text)
        assert stored_unlisted(host, curl, server, reader, ver) == [], (shape, hidden, code, text)
        assert status(host, curl, f"https://{server}/packages/{hidden}", reader) == 404


def hostile_files(ver):
    """{file name: bytes} of distributions an attacker uploads, each with a valid name."""
    meta = f"Metadata-Version: 2.1\nName: cheeseshop-probe\nVersion: {ver}\n"
    files = {}

    def wheel_bytes(metadata, encrypt=False):
        data = io.BytesIO()
        with zipfile.ZipFile(data, "w") as z:
            z.writestr(f"cheeseshop_probe-{ver}.dist-info/METADATA", metadata)
            z.writestr("cheeseshop_probe/__init__.py", "x = 1\n")
        raw = bytearray(data.getvalue())
        if encrypt:  # the "encrypted" flag in the member's local and central headers
            raw[6] |= 1
            raw[raw.find(b"PK\x01\x02") + 8] |= 1
        return bytes(raw)
    files[f"cheeseshop_probe-{ver}-py3-none-any.whl"] = b"junk, not a zip\n" * 8
    files[f"cheeseshop_probe-{ver}-py2-none-any.whl"] = wheel_bytes(meta + "Requires-Python: >=3.8\u00a0\n")
    files[f"cheeseshop_probe-{ver}-py3-none-linux_x86_64.whl"] = wheel_bytes(meta, encrypt=True)
    files[f"cheeseshop_probe-{ver}-py3-none-win32.whl"] = wheel_bytes(meta.replace(ver, ver + "<b>"))
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as t:
        info = tarfile.TarInfo(f"cheeseshop_probe-{ver}/PKG-INFO")
        info.size = len(meta)
        t.addfile(info, io.BytesIO(meta.encode()))
    # 24 KB that unpack to 13.5 GB: a small tar, then 300 bz2 streams of 45 MiB of zeros.
    files[f"cheeseshop_probe-{ver}.tar.bz2"] = (bz2.compress(inner.getvalue()[:-1024])
                                                + bz2.compress(b"\0" * (45 << 20)) * 300)
    return files


def test_hostile_archives_are_refused_and_the_page_service_stays_responsive(
        host, test_vars, curl, server, ca, uploader, reader):
    """Second review, upload path: junk under a valid name, a non-ASCII Requires-Python (it
    crashed the page service at every start), an encrypted member (testzip raised), a version
    that is not the file's, and a bz2 bomb (a minute of the page service's time). Each is a
    400 and nothing is stored; a normal upload right after is listed when twine returns, and
    the page service never restarted."""
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    started = server_host.check_output("systemctl show -P ExecMainStartTimestampMonotonic cheeseshop-pages")
    ver = version()
    for filename, data in hostile_files(ver).items():
        path = f"/var/tmp/{filename}"
        put(host, data, path)
        try:
            code, text = form_upload(host, curl, server, uploader, path, "cheeseshop-probe", ver, filename)
        finally:
            host.run(f"rm -f {path}")
        assert code == 400 and text.startswith("400 Bad upload: ") and "nothing was stored" in text, (filename, text)
    assert server_host.run(f"ls -a /srv/pypi/packages | grep -F -- {shlex.quote(ver)}").rc == 1
    after = version()
    assert upload(host, test_vars, server, ca, make_wheel(host, "cheeseshop-probe", after), uploader).rc == 0
    assert after in body(host, curl, f"https://{server}/simple/cheeseshop-probe/", reader)
    assert server_host.check_output("systemctl show -P ExecMainStartTimestampMonotonic cheeseshop-pages") == started


def test_a_signature_is_refused_not_stored_unlisted(host, curl, server, uploader, reader):
    """Second review: a gpg_signature part of any content was stored as .asc, served, and on
    no page. Signatures are refused (PyPI dropped them too) and nothing is stored."""
    ver = version()
    path = make_wheel(host, "cheeseshop-probe", ver)
    name = path.rsplit("/", 1)[1]
    out = host.check_output(
        f"{curl} -u {shlex.quote(uploader[0] + ':' + uploader[1])} -w '\\n%{{http_code}}' "
        f"-F ':action=file_upload' -F name=cheeseshop-probe -F version={ver} -F content=@{path} "
        f"-F {shlex.quote(f'gpg_signature=@{path};filename={name}.asc')} https://{server}/")
    assert out.endswith("\n400") and "signatures are not kept" in out, out
    assert stored_unlisted(host, curl, server, reader, ver) == []
    assert status(host, curl, f"https://{server}/packages/{name}.asc", reader) == 404


def test_a_published_release_is_never_changed(host, test_vars, curl, server, ca, uploader, reader):
    """Second review: a case variant and a build-tagged wheel of a published 1.0.0 were both
    accepted and listed, and pip and uv then installed them for ==1.0.0. Each is a 409 now, as
    is a second sdist of the release; the release keeps its one wheel and its one sdist."""
    ver = version()
    path = make_wheel(host, "cheeseshop-probe", ver)
    assert upload(host, test_vars, server, ca, path, uploader).rc == 0
    meta = f"Metadata-Version: 2.1\nName: cheeseshop-probe\nVersion: {ver}\n".encode()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as t:
        info = tarfile.TarInfo(f"cheeseshop_probe-{ver}/PKG-INFO")
        info.size = len(meta)
        t.addfile(info, io.BytesIO(meta))
    put(host, data.getvalue(), f"/var/tmp/sdist-{ver}.tar.gz")
    try:
        code, text = form_upload(host, curl, server, uploader, f"/var/tmp/sdist-{ver}.tar.gz", "cheeseshop-probe",
                                 ver, f"cheeseshop_probe-{ver}.tar.gz")
        assert code == 200, text
        for filename in (f"Cheeseshop_Probe-{ver}-py3-none-any.whl", f"cheeseshop_probe-{ver}-1-py3-none-any.whl",
                         f"cheeseshop.probe-{ver}.0-py3-none-any.whl"):
            code, text = form_upload(host, curl, server, uploader, path, "cheeseshop-probe", ver, filename)
            assert code == 409 and "File already exists" in text, (filename, code, text)
        code, text = form_upload(host, curl, server, uploader, f"/var/tmp/sdist-{ver}.tar.gz", "cheeseshop-probe",
                                 ver, f"Cheeseshop-Probe-{ver}.tar.gz")
        assert code == 409, (code, text)
    finally:
        host.run(f"rm -f /var/tmp/sdist-{ver}.tar.gz")
    page = json.loads(host.check_output(
        f"{curl} -u {shlex.quote(reader[0] + ':' + reader[1])} -H 'Accept: application/vnd.pypi.simple.v1+json' "
        f"https://{server}/simple/cheeseshop-probe/"))
    listed = [found["filename"] for found in page["files"] if ver in found["filename"]]
    assert sorted(listed) == [f"cheeseshop_probe-{ver}-py3-none-any.whl", f"cheeseshop_probe-{ver}.tar.gz"]
    assert stored_unlisted(host, curl, server, reader, ver) == []


def test_reader_cannot_upload_through_the_proxy(host, test_vars, server, ca, reader):
    run = upload(host, test_vars, server, ca, make_wheel(host, "cheeseshop-denied", version()), reader)
    assert run.rc != 0 and twine_status(run) == 403, run.stdout + run.stderr


def test_100_mb_upload_works(host, test_vars, server, ca, uploader, curl, reader):
    """Copied config: nginx's default client_max_body_size (1 MB) refuses real wheels.

    100 MiB is PyPI's own default file limit; the request carries form fields on top."""
    ver = version()
    path = make_wheel(host, "cheeseshop-big", ver, payload_mb=100)
    try:
        run = upload(host, test_vars, server, ca, path, uploader)
        assert run.rc == 0, run.stdout + run.stderr
        file_url = first_file_url(host, curl, f"https://{server}/simple/cheeseshop-big/", reader,
                                  path.rsplit("/", 1)[1])
        size = host.check_output(f"{curl} -u {shlex.quote(reader[0] + ':' + reader[1])} -o /dev/null "
                                 f"-w '%{{size_download}}' {file_url}")
        assert int(size) == host.file(path).size
    finally:
        host.run(f"rm -rf /var/tmp/proxy-{ver}")


@pytest.mark.scenarios("default")
def test_upload_over_the_limit_is_413_and_a_new_limit_reloads_nginx(host, test_vars, server, ca, uploader):
    """nginx_proxy_client_max_body_size is the limit clients meet: a changed limit rewrites
    nginx.conf and reloads nginx (the same master process), and an upload over it gets 413 from
    nginx, before pypiserver sees it. Then the scenario's own limit comes back."""
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    master = server_host.check_output("systemctl show --value --property=MainPID nginx")
    ver = version()
    path = make_wheel(host, "cheeseshop-too-big", ver, payload_mb=2)
    try:
        rc, output, _ = run_playbook(server, project_playbook("site.yml"), {"nginx_proxy_client_max_body_size": "1m"},
                                     tags="nginx_proxy")
        assert rc == 0, output[-3000:]
        assert server_host.check_output("systemctl show --value --property=MainPID nginx") == master
        run = upload(host, test_vars, server, ca, path, uploader)
        assert run.rc != 0 and twine_status(run) == 413, run.stdout + run.stderr
        assert not server_host.file(f"/srv/pypi/packages/{path.rsplit('/', 1)[1]}").exists
    finally:
        host.run(f"rm -rf /var/tmp/proxy-{ver}")
        rc, output, _ = run_playbook(server, project_playbook("site.yml"), tags="nginx_proxy")
        assert rc == 0, output[-3000:]
    assert server_host.check_output("systemctl show --value --property=MainPID nginx") == master


def test_error_answers_for_files_are_not_marked_cacheable(host, curl, server, reader):
    """Security review #27, finding 7: the 401 of a package file (anonymous, on a private index)
    carried `Cache-Control: ... immutable`: a shared proxy or a client cache would keep it for a
    year, and the 416 of a range past the end carried it twice. Only a file's successful
    answers (200, 206) have it now, once."""
    file_url = first_file_url(host, curl, f"https://{server}/simple/cheeseshop-probe/", reader)
    anonymous = headers(host, curl, file_url)
    assert anonymous.startswith("http/2 401") and "immutable" not in anonymous, anonymous
    past_the_end = headers(host, curl, file_url, reader, " -r 999999999-")
    assert past_the_end.startswith("http/2 416") and "cache-control" not in past_the_end, past_the_end
    for extra, code in (("", "200"), (" -r 0-9", "206")):
        answer = headers(host, curl, file_url, reader, extra)
        assert answer.startswith(f"http/2 {code}") and answer.count("immutable") == 1, answer


def test_package_file_headers(host, curl, server, reader):
    head = headers(host, curl, first_file_url(host, curl, f"https://{server}/simple/cheeseshop-probe/", reader), reader)
    assert "content-type: application/zip" in head
    assert "cache-control: private, max-age=31536000, immutable" in head


# --- Real clients with only the CA ----------------------------------------------------------

def test_pip_and_uv_install_over_https_with_only_the_ca(host, test_vars, server, ca, uploader, reader):
    ver = version()
    assert upload(host, test_vars, server, ca, make_wheel(host, "cheeseshop-tls", ver), uploader).rc == 0
    index = f"https://{reader[0]}:{reader[1]}@{server}/simple/"
    venv = f"/var/tmp/tls-pip-{ver}"
    host.check_output(f"python3 -m venv {venv}")
    host.check_output(f"{venv}/bin/pip install --no-cache-dir --cert {ca} --index-url {shlex.quote(index)} "
                      f"cheeseshop-tls=={ver}")
    assert host.check_output(f"{venv}/bin/python -c 'import cheeseshop_tls as m; print(m.VERSION)'") == ver
    uv = f"{test_vars['cheeseshop_test_client_venv']}/bin/uv"
    uv_venv = f"/var/tmp/tls-uv-{ver}"
    host.check_output(f"{uv} venv --python /usr/bin/python3 {uv_venv}")
    # A non-normalised name: pypiserver redirects it, and nginx keeps the redirect on HTTPS.
    host.check_output(f"SSL_CERT_FILE={ca} VIRTUAL_ENV={uv_venv} {uv} pip install --no-cache "
                      f"--index-url {shlex.quote(index)} {shlex.quote('Cheeseshop_TLS==' + ver)}")
    assert host.check_output(f"{uv_venv}/bin/python -c 'import cheeseshop_tls as m; print(m.VERSION)'") == ver


def test_redirect_for_unnormalised_name_stays_on_https(host, curl, server, reader):
    """pypiserver's redirect is passed on without scheme and host: the client stays on the
    HTTPS address it asked, whatever Host header it sent (#27, findings 1 and 5)."""
    url = f"https://{server}/simple/Cheeseshop_Probe/"
    head = headers(host, curl, url, reader, " -H 'Host: evil.example'")
    assert head.startswith("http/2 301") and "location: /simple/cheeseshop-probe/\r" in head, head
    out = host.check_output(f"{curl} -L -u {shlex.quote(reader[0] + ':' + reader[1])} -o /dev/null "
                            f"-w '%{{num_redirects}} %{{http_code}} %{{url_effective}}' {url}")
    redirects, code, effective = out.split(" ", 2)
    # curl puts the user and password in the URL it followed: compare its parts without them.
    followed = urlsplit(effective)
    got = (redirects, code, followed.scheme, followed.hostname, followed.path)
    assert got == ("1", "200", "https", server, "/simple/cheeseshop-probe/"), got


# --- What nginx exposes -------------------------------------------------------------------

def test_host_header_reaches_no_page(host, curl, server, reader):
    """Security review #27, findings 1 and 5: pypiserver's JSON API and welcome page built
    absolute URLs from the Host header (and always on http://), and the page cache served one
    client's Host to everyone. Neither is exposed now, and no page depends on Host."""
    evil = " -H 'Host: evil.example'"
    pages = [f"https://{server}/", f"https://{server}/simple/", f"https://{server}/simple/cheeseshop-probe/"]
    for url in pages:
        poisoned = host.run(f"{curl} -u {shlex.quote(reader[0] + ':' + reader[1])}{evil} -D - {shlex.quote(url)}")
        assert poisoned.rc == 0 and poisoned.stdout.startswith("HTTP/2 200"), (url, poisoned.stdout)
        assert "evil" not in poisoned.stdout and "http://" not in poisoned.stdout, (url, poisoned.stdout)
    for url in pages:
        assert "evil" not in body(host, curl, url, reader)
    for extra in ("", evil):
        assert status(host, curl, f"https://{server}/cheeseshop-probe/json", reader, extra) == 404


def test_welcome_text_tells_no_version_and_no_count(host, curl, server, reader):
    """#27, finding 8: pypiserver's welcome page gave its version and the package count."""
    text = body(host, curl, f"https://{server}/", reader)
    assert text.startswith('cheeseshop.pypi: Python package index "main".'), text
    assert "pypiserver" not in text and "version" not in text.lower() and "packages" not in text, text


def test_only_the_simple_api_files_and_uploads_are_exposed(host, curl, server, reader):
    """Every path of pypiserver's that no client needs answers 404, also to a reader: the file
    listing, the JSON API, the XML-RPC endpoint, its health path, the root redirects."""
    for path in ("/packages/", "/cheeseshop-probe", "/cheeseshop-probe/", "/cheeseshop-probe/json",
                 "/favicon.ico", "/RPC2", "/health/x", "/simple/cheeseshop-probe/json"):
        assert status(host, curl, f"https://{server}{path}", reader) == 404, path
    head = headers(host, curl, f"https://{server}/simple", reader)
    assert head.startswith("http/2 301") and "location: /simple/\r" in head, head
    assert status(host, curl, f"https://{server}/", reader, " -X PUT") == 405


# --- Configuration safety ---------------------------------------------------------------

@pytest.mark.scenarios("default")
def test_bad_nginx_value_is_refused_and_the_site_keeps_serving(host, curl, server, reader):
    # --tags nginx_proxy: the role that writes the file, after every role's checks (which pass).
    rc, output, _ = run_playbook(server, project_playbook("site.yml"), {"nginx_proxy_worker_processes": "soon"},
                                 tags="nginx_proxy")
    assert rc == 2, output  # a failed task; 1 or 4 would be a crash or an unreachable host
    # nginx's own message, from `nginx -t` on the candidate file.
    # (nginx 1.22: '"worker_processes" directive invalid value'; 1.26: 'invalid value "soon"')
    assert "invalid value" in output and "worker_processes" in output, output[-3000:]
    assert status(host, curl, f"https://{server}/simple/", reader) == 200


# --- A reader's life cycle, and revocation ---------------------------------------------

REVOCATION_BOUND = 2  # seconds after the users run returns; nginx re-reads the readers file every second


# Users logic over the wire: Debian 13's nginx re-reading the readers file is test_client_role's rotation.
@pytest.mark.scenarios("default")
def test_reader_added_changed_and_removed_over_https(host, test_vars, curl, server, ca, vault_users, indexes):
    """Add a reader (pip logs in), change the password (the old one fails), remove them (401 on
    pages and files), whatever nginx remembered or cached."""
    probe = f"reader-{time.time_ns() // 1000}"
    first, second = f"first-{time.time_ns()}", f"second-{time.time_ns()}"
    rights = [dict(indexes[0], read=indexes[0]["read"] + [probe])] + indexes[1:]
    page = f"https://{server}/simple/cheeseshop-probe/"

    def users_run(entry, index_rights):
        rc, output, _ = run_playbook(server, project_playbook("users.yml"),
                                     {"pypi_users": vault_users + [entry], "pypi_indexes": index_rights})
        assert rc == 0, output

    users_run({"name": probe, "password": first}, rights)
    venv = f"/var/tmp/reader-{probe}"
    host.check_output(f"python3 -m venv {venv}")
    index = shlex.quote(f"https://{probe}:{first}@{server}/simple/")
    host.check_output(f"{venv}/bin/pip download --no-deps --no-cache-dir --cert {ca} -d {venv}/dl "
                      f"--index-url {index} cheeseshop-probe")
    file_url = first_file_url(host, curl, page, (probe, first))
    for _ in range(3):  # remembered and cached from here on
        assert status(host, curl, page, (probe, first)) == 200
        assert status(host, curl, file_url, (probe, first)) == 200

    users_run({"name": probe, "password": second}, rights)
    time.sleep(REVOCATION_BOUND)
    assert status(host, curl, page, (probe, first)) == 401
    assert status(host, curl, page, (probe, second)) == 200

    users_run({"name": probe, "state": "absent"}, indexes)
    time.sleep(REVOCATION_BOUND)
    assert status(host, curl, page, (probe, second)) == 401
    assert status(host, curl, file_url, (probe, second)) == 401


# --- Certificate renewal ------------------------------------------------------------------

def restore_scenario_tls(host, server):
    """Back to the scenario's own TLS settings: the CA the clients hold verifies again."""
    rc, output, _ = run_playbook(server, project_playbook("site.yml"), tags="tls")
    assert rc == 0, output[-3000:]
    back = host.run(f"openssl s_client -connect {server}:443 -servername {server} "
                    f"-CAfile {host.ansible.get_variables()['cheeseshop_client_ca']} -verify_return_error </dev/null")
    assert back.rc == 0, back.stdout


def served_serial(host, server):
    return host.check_output(f"openssl s_client -connect {server}:443 -servername {server} </dev/null "
                             f"2>/dev/null | openssl x509 -noout -serial")


# Ansible decides a renewal the same way on every release; Debian 13 re-signs and reloads in test_tls_ca.py.
@pytest.mark.scenarios("default")
def test_certificate_renewal_reloads_nginx_without_a_restart(host, server):
    """A certificate inside the renewal window is re-signed by a --tags tls run; nginx reloads
    (same master process) and serves it; the next ordinary run changes nothing."""
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    master = server_host.check_output("systemctl show --value --property=MainPID nginx")
    before = served_serial(host, server)
    # Every certificate expires within 400 days: as if a year had passed.
    rc, output, _ = run_playbook(server, project_playbook("site.yml"), {"nginx_proxy_tls_renew_days": 400},
                                 tags="tls")
    assert rc == 0 and "Sign the server certificate" in output, output[-3000:]
    assert served_serial(host, server) != before
    assert server_host.check_output("systemctl show --value --property=MainPID nginx") == master
    rc, output, _ = run_playbook(server, project_playbook("site.yml"), tags="tls")
    assert rc == 0 and "changed=0" in output, output[-3000:]


@pytest.mark.scenarios("default")
def test_provided_certificate_is_served_and_its_key_never_printed(host, server, tmp_path):
    """provided mode: a certificate from another CA, the key from (here) extra vars; then back."""
    ca_key, ca_crt = tmp_path / "ca.key", tmp_path / "ca.crt"
    key, csr, crt = tmp_path / "server.key", tmp_path / "server.csr", tmp_path / "server.crt"
    ext = tmp_path / "ext.cnf"
    ext.write_text(f"subjectAltName=DNS:{server}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl = ["openssl"]
    subprocess.run(openssl + ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                              "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", "/CN=provided test CA"],
                   check=True, capture_output=True)
    subprocess.run(openssl + ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                              "-keyout", key, "-out", csr, "-subj", f"/CN={server}"], check=True, capture_output=True)
    subprocess.run(openssl + ["x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
                              "-out", crt, "-days", "2", "-extfile", ext], check=True, capture_output=True)
    private_key = key.read_text()
    try:
        rc, output, _ = run_playbook(server, project_playbook("site.yml"), {
            "nginx_proxy_tls": "provided", "nginx_proxy_tls_certificate": crt.read_text(),
            "nginx_proxy_tls_private_key": private_key}, tags="tls")
        assert rc == 0, output[-3000:]
        assert private_key.strip().splitlines()[1] not in output
        host.check_output(f"mkdir -p /var/tmp/provided && echo {shlex.quote(ca_crt.read_text())} > /var/tmp/provided/ca.crt")
        served = host.run(f"openssl s_client -connect {server}:443 -servername {server} "
                          f"-CAfile /var/tmp/provided/ca.crt -verify_return_error </dev/null")
        assert served.rc == 0 and "Verify return code: 0 (ok)" in served.stdout, served.stdout
    finally:
        restore_scenario_tls(host, server)


def test_pypiserver_down_pages_and_files_are_served_uploads_get_a_clear_503(host, curl, server, reader):
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    served_while_pypiserver_is_down(host, curl, f"https://{server}", "cheeseshop-probe", reader, server_host,
                                    "systemctl stop pypiserver@main", "systemctl start pypiserver@main")


ACME_NAME = "pypi.cheeseshop.test"


def served_issuer_and_serial(host, name):
    return host.check_output(f"openssl s_client -connect {name}:443 -servername {name} </dev/null 2>/dev/null "
                             "| openssl x509 -noout -issuer -serial")


# community.crypto speaks ACME the same way on every release; the cryptography it signs with on
# Debian 13 makes the CA and certificates of test_tls_ca.py.
@pytest.mark.scenarios("default")
def test_acme_certificate_from_a_real_acme_ca(host, server):
    """acme mode against pebble (a real ACME server, on this client): the certificate is ordered
    with HTTP-01 challenges that nginx serves, verifies against pebble's root, no challenge is
    left behind, a rerun orders nothing, a renewal window reaching past its expiry renews it
    with a reload, not a restart; then the local CA's certificate comes back."""
    client = host.backend.get_hostname()
    acme = {"nginx_proxy_tls": "acme", "nginx_proxy_server_name": ACME_NAME,
            "nginx_proxy_acme_directory": f"https://{client}:14000/dir", "nginx_proxy_acme_terms_agreed": True}
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    master = server_host.check_output("systemctl show --value --property=MainPID nginx")
    try:
        rc, output, _ = run_playbook(server, project_playbook("site.yml"), acme, tags="tls")
        assert rc == 0, output[-3000:]
        # pebble makes a new root at every start and hands it out on its management port.
        host.check_output(f"curl -sf --cacert /etc/pebble/listener.crt https://{client}:15000/roots/0 "
                          "-o /var/tmp/pebble-root.pem")
        verified = host.run(f"curl -sf -o /dev/null --cacert /var/tmp/pebble-root.pem https://{ACME_NAME}/health")
        assert verified.rc == 0, verified.stderr
        first = served_issuer_and_serial(host, ACME_NAME)
        assert "Pebble" in first
        assert not server_host.file("/var/lib/cheeseshop-acme/.well-known/acme-challenge").exists

        rc, output, _ = run_playbook(server, project_playbook("site.yml"), acme, tags="tls")
        assert rc == 0 and "changed=0" in output, output[-3000:]

        rc, output, _ = run_playbook(server, project_playbook("site.yml"),
                                     {**acme, "nginx_proxy_tls_renew_days": 36500}, tags="tls")
        assert rc == 0, output[-3000:]
        renewed = served_issuer_and_serial(host, ACME_NAME)
        assert "Pebble" in renewed and renewed != first
        assert server_host.check_output("systemctl show --value --property=MainPID nginx") == master
    finally:
        restore_scenario_tls(host, server)


def reload_nginx(server_host):
    """A reload, waited for until no worker of before it is left."""
    workers = "pgrep -P $(cat /run/nginx.pid) | sort"
    before = set(server_host.check_output(workers).split())
    server_host.check_output("systemctl reload nginx")
    for _ in range(100):
        if not before & set(server_host.check_output(workers).split()):
            return
        time.sleep(0.1)
    raise AssertionError(f"nginx workers {before} still run 10 s after the reload")


def test_wrong_password_flood_is_cut_off_without_locking_out_known_users(host, curl, server, reader):
    """From a clean start, exactly nginx_proxy_auth_fail_limit (20) wrong passwords get 401, then
    429 without a hash check; a user nginx already verified still gets 200. The restarts before
    and after make the test stand alone: it leaves no address barred for the tests after it."""
    page = f"https://{server}/simple/"
    wrong = (reader[0], "not-the-password")
    restart_nginx(host, server)
    try:
        assert status(host, curl, page, reader) == 200  # verified and remembered
        codes = [status(host, curl, page, wrong) for _ in range(25)]
        assert codes == [401] * 20 + [429] * 5, codes
        # Each 429 is held back (nginx_proxy_auth_fail_delay, 1 s): a flooding client slows itself.
        held = host.check_output(f"{curl} -u {shlex.quote(wrong[0] + ':' + wrong[1])} -o /dev/null "
                                 f"-w '%{{http_code}} %{{time_total}}' {page}").split()
        assert held[0] == "429" and float(held[1]) >= 1.0, held
        assert status(host, curl, page, reader) == 200
    finally:
        restart_nginx(host, server)


def test_other_names_wrong_passwords_from_the_same_address_bar_no_other_user(host, curl, server, reader):
    """Security review #27, finding 3: failures were counted per address, so a flood of wrong
    passwords from a shared address (a NAT, a CI runner, Docker's port publishing) barred every
    user behind it whose credential nginx did not remember yet. Failures now count per user
    name: the flooded name is barred, the reader's fresh credential from the same address is not."""
    page = f"https://{server}/simple/"
    restart_nginx(host, server)
    try:
        codes = [status(host, curl, page, ("someone-else", f"guess-{n}")) for n in range(21)]
        assert codes == [401] * 20 + [429], codes
        assert status(host, curl, page, reader) == 200  # never verified since the restart
    finally:
        restart_nginx(host, server)


def test_x_forwarded_for_from_an_untrusted_client_changes_nothing(host, curl, server):
    """With no trusted load balancer (nginx_proxy_trusted_proxies empty), a client that names a
    new address in X-Forwarded-For for each guess is still one address: barred after 20."""
    page = f"https://{server}/simple/"
    name = f"xff-probe-{version()}"
    codes = [status(host, curl, page, (name, f"guess-{n}"), f" -H 'X-Forwarded-For: 203.0.113.{n}'")
             for n in range(21)]
    assert codes == [401] * 20 + [429], codes


def test_spellings_of_a_remembered_credential_are_one_credential_also_after_a_reload(
        host, curl, server, reader):
    """Security review #27, findings 3 and 4: every spelling of a valid header was a new key that
    cost a fresh hash check, and a reload forgot every credential, so users behind a barred
    address were refused until the window passed. The key is now the decoded name and password,
    and the salt and memory outlive a reload: with the reader's own name barred by wrong
    passwords, its credential in any spelling, before and after a reload, is still a 200."""
    page = f"https://{server}/simple/"
    token = base64.b64encode(f"{reader[0]}:{reader[1]}".encode()).decode()
    spellings = [f"Basic {token}", f"basic {token}", f"BASIC   {token}  ", f"  Basic\t{token}"]
    restart_nginx(host, server)
    try:
        assert status(host, curl, page, reader) == 200  # verified and remembered
        codes = [status(host, curl, page, (reader[0], "not-the-password")) for _ in range(21)]
        assert codes == [401] * 20 + [429], codes
        server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
        for reload in (False, True):
            if reload:
                reload_nginx(server_host)
            for spelling in spellings:
                code = status(host, curl, page, None, f" -H {shlex.quote('Authorization: ' + spelling)}")
                assert code == 200, (reload, spelling, code)
        assert status(host, curl, page, (reader[0], "not-the-password")) == 429
    finally:
        restart_nginx(host, server)
