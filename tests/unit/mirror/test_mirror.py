"""Unit tests of cheeseshop-mirror (roles/mirror/files): real pip, pinned as the role pins it,
resolves against a stand-in upstream on loopback that serves PEP 691 pages and real wheels.

widgets 1.0 (uploaded long ago) and 1.1 (uploaded now) depend on gadgets and on acme-internal,
a name that is private here: it is never fetched and is reported as shadowed."""
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
import hashlib

import pytest

from conftest import load_program

mirror = load_program("mirror", "cheeseshop-mirror")

# The pip the mirror role installs (roles/mirror/defaults: mirror_pip_version).
PIP = "26.3"
OLD = "2020-01-02T03:04:05Z"
OLD_EPOCH = 1577934245


def wheel(name, version, requires=()):
    """The file name, bytes and METADATA of a minimal valid wheel."""
    dist = f"{name.replace('-', '_')}-{version}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
            f"Requires-Dist: {r}\n" for r in requires)
        files = {f"{dist}.dist-info/METADATA": metadata,
                 f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
                 f"{name.replace('-', '_')}/__init__.py": ""}
        record = "".join(f"{path},,\n" for path in files) + f"{dist}.dist-info/RECORD,,\n"
        for path, text in files.items():
            archive.writestr(path, text)
        archive.writestr(f"{dist}.dist-info/RECORD", record)
    return f"{dist}-py3-none-any.whl", buffer.getvalue(), metadata.encode()


class Upstream:
    """A simple API (PEP 691 JSON only) and its files, on loopback."""

    def __init__(self):
        self.projects = {}   # name -> [(filename, bytes, upload-time, METADATA)]
        self.served = {}     # file name -> bytes actually served (a test may corrupt one)
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = [p for p in self.path.split("/") if p]
                if parts[:1] == ["simple"] and len(parts) == 2 and parts[1] in upstream.projects:
                    # PEP 714's core-metadata, as PyPI serves it: pip resolves from the METADATA
                    # alone and fetches no file.
                    files = [{"filename": f, "url": f"/files/{f}", "hashes": {"sha256": hashlib.sha256(b).hexdigest()},
                              "upload-time": t, "core-metadata": {"sha256": hashlib.sha256(m).hexdigest()}}
                             for f, b, t, m in upstream.projects[parts[1]]]
                    body = json.dumps({"meta": {"api-version": "1.1"}, "name": parts[1], "files": files}).encode()
                    kind = "application/vnd.pypi.simple.v1+json"
                elif parts[:1] == ["files"] and len(parts) == 2 and parts[1] in upstream.served:
                    body, kind = upstream.served[parts[1]], "application/octet-stream"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/simple/"

    def publish(self, name, version, requires=(), when=OLD):
        filename, body, metadata = wheel(name, version, requires)
        self.projects.setdefault(name, []).append((filename, body, when, metadata))
        self.served[filename] = body
        self.served[filename + ".metadata"] = metadata
        return filename


@pytest.fixture(scope="session")
def pip(tmp_path_factory):
    """A virtualenv with the pip the role pins (--uploaded-prior-to is pip 26's)."""
    venv = tmp_path_factory.mktemp("pip") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    f"pip=={PIP}"], check=True)
    return str(venv / "bin" / "python")


@pytest.fixture
def upstream():
    found = Upstream()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    found.publish("widgets", "1.0", ["gadgets>=2", "acme-internal"])
    found.publish("widgets", "1.1", ["gadgets>=2", "acme-internal"], when=now)
    found.publish("gadgets", "2.0")
    found.publish("acme-internal", "99.0")
    yield found
    found.server.shutdown()


@pytest.fixture
def config(tmp_path, pip, upstream, pages_socket):
    packages = tmp_path / "mirror"
    packages.mkdir()
    # Another index of the host holds acme-internal (under another spelling).
    private = tmp_path / "customer-a"
    private.mkdir()
    (private / "Acme_Internal-1.0.tar.gz").write_bytes(b"private")
    return {"index": "pypi-mirror", "packages_dir": str(packages), "pip": pip, "upstream": upstream.url,
            "upstream_ca": "", "requirements": ["widgets"], "min_age_days": 0, "private_dirs": [str(private)],
            "targets": [{"python": "3.11", "platforms": ["manylinux_2_28_x86_64"], "abi": "cp311"}],
            "pages_socket": pages_socket[0]}


def test_resolved_files_arrive_checked_with_upstream_times_and_private_names_stay_out(config, pages_socket):
    summary = mirror.sync(config)
    assert summary["added"] == ["gadgets-2.0-py3-none-any.whl", "widgets-1.1-py3-none-any.whl"]
    assert summary["shadowed"] == [{"project": "acme-internal", "version": "99.0"}]
    assert summary["failed"] == [] and summary["present"] == 0
    assert sorted(os.listdir(config["packages_dir"])) == summary["added"]
    gadgets = os.path.join(config["packages_dir"], "gadgets-2.0-py3-none-any.whl")
    assert int(os.stat(gadgets).st_mtime) == OLD_EPOCH
    # Each new file is listed by the page service, with its audit line (identity mirror).
    lines = pages_socket[1]
    assert [line.split(" ", 3)[:3] for line in lines] == [["file", "pypi-mirror", f] for f in summary["added"]]
    assert json.loads(lines[0].split(" ", 3)[3])["identity"] == "mirror"

    again = mirror.sync(config)
    assert again["added"] == [] and again["present"] == 2 and len(lines) == 2


def test_a_cool_down_leaves_a_release_younger_than_it_upstream(config):
    config["min_age_days"] = 7
    summary = mirror.sync(config)
    assert summary["added"] == ["gadgets-2.0-py3-none-any.whl", "widgets-1.0-py3-none-any.whl"]


def test_a_file_that_is_not_what_upstream_lists_is_not_kept(config, upstream):
    upstream.served["gadgets-2.0-py3-none-any.whl"] = b"not the wheel upstream's page hashes"
    summary = mirror.sync(config)
    assert [f["file"] for f in summary["failed"]] == ["gadgets-2.0-py3-none-any.whl"]
    assert "sha256" in summary["failed"][0]["why"]
    # Nothing half-written or unchecked is left, not even hidden.
    assert os.listdir(config["packages_dir"]) == ["widgets-1.1-py3-none-any.whl"]


def test_a_check_run_says_what_it_would_add_and_fetches_nothing(config, pages_socket):
    summary = mirror.sync(config, check=True)
    assert summary["added"] == ["gadgets-2.0-py3-none-any.whl", "widgets-1.1-py3-none-any.whl"]
    assert os.listdir(config["packages_dir"]) == [] and pages_socket[1] == []


def test_a_file_already_there_is_never_replaced(config):
    kept = os.path.join(config["packages_dir"], "gadgets-2.0-py3-none-any.whl")
    with open(kept, "wb") as handle:
        handle.write(b"here first")
    summary = mirror.sync(config)
    assert summary["added"] == ["widgets-1.1-py3-none-any.whl"] and summary["present"] == 1
    with open(kept, "rb") as handle:
        assert handle.read() == b"here first"
