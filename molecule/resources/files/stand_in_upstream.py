#!/usr/bin/env python3
"""TEST TOOLING: a stand-in for an upstream index (PyPI) that a mirror index syncs from.

    stand_in_upstream.py PORT CERT KEY DIRECTORY

Serves, over HTTPS, the PEP 691 JSON simple API of the wheels in DIRECTORY, as PyPI does:
each file with its sha256, its upload time (DIRECTORY/upload-times.json, {file name: ISO time},
else the file's time) and its METADATA (PEP 714 core-metadata), so pip resolves without
fetching files. A test publishes a release by writing a wheel (and its time) into DIRECTORY.
"""
import datetime
import hashlib
import http.server
import json
import os
import re
import ssl
import sys
import zipfile

PORT, CERT, KEY, DIRECTORY = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
KIND = "application/vnd.pypi.simple.v1+json"


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def metadata(path):
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name)


def wheels():
    """{project: [file name]} of the wheels in DIRECTORY."""
    found = {}
    for filename in sorted(os.listdir(DIRECTORY)):
        if filename.endswith(".whl"):
            found.setdefault(normalize(filename.split("-", 1)[0]), []).append(filename)
    return found


def times():
    try:
        with open(os.path.join(DIRECTORY, "upload-times.json")) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, body, kind):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        parts = [part for part in self.path.split("?")[0].split("/") if part]
        projects, stamps = wheels(), times()
        if parts == ["simple"]:
            body = {"meta": {"api-version": "1.1"}, "projects": [{"name": p} for p in sorted(projects)]}
            return self.answer(json.dumps(body).encode(), KIND)
        if len(parts) == 2 and parts[0] == "simple" and parts[1] in projects:
            files = []
            for filename in projects[parts[1]]:
                path = os.path.join(DIRECTORY, filename)
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                when = stamps.get(filename) or datetime.datetime.fromtimestamp(
                    os.stat(path).st_mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                files.append({"filename": filename, "url": f"/files/{filename}", "hashes": {"sha256": digest},
                              "upload-time": when,
                              "core-metadata": {"sha256": hashlib.sha256(metadata(path)).hexdigest()}})
            body = {"meta": {"api-version": "1.1"}, "name": parts[1], "files": files}
            return self.answer(json.dumps(body).encode(), KIND)
        if len(parts) == 2 and parts[0] == "files" and "/" not in parts[1]:
            filename = parts[1][:-len(".metadata")] if parts[1].endswith(".metadata") else parts[1]
            path = os.path.join(DIRECTORY, filename)
            if filename.endswith(".whl") and os.path.isfile(path):
                if parts[1].endswith(".metadata"):
                    return self.answer(metadata(path), "text/plain")
                with open(path, "rb") as handle:
                    return self.answer(handle.read(), "application/octet-stream")
        self.send_response(404)
        self.end_headers()


server = http.server.ThreadingHTTPServer(("", PORT), Handler)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(CERT, KEY)
server.socket = tls.wrap_socket(server.socket, server_side=True)
server.serve_forever()
