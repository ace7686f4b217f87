"""Shared by the unit tests of the roles' programs: loading one, the real page service, and a
stand-in page service that answers "ok" to every line."""
import importlib.machinery
import importlib.util
import json
import pathlib
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

ROLES = pathlib.Path(__file__).resolve().parents[2] / "roles"


def program_path(role, program):
    return ROLES / role / "files" / program


def load_program(role, program):
    """A role's program (a Python file with no .py) as a module. cheeseshop_dist, the page
    service's client that the pages role installs beside the programs, is importable as on the
    host."""
    beside = str(ROLES / "pages" / "files")
    if beside not in sys.path:
        sys.path.insert(0, beside)
    name = program.replace("-", "_")
    loader = importlib.machinery.SourceFileLoader(name, str(program_path(role, program)))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(module)
    return module


@pytest.fixture
def pages_socket(tmp_path):
    """A stand-in for the page service's socket: (its path, the request lines it got), each
    answered "ok", as the service answers a line it has written."""
    path, lines = str(tmp_path / "pages.sock"), []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)

    def serve():
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with client:
                lines.append(client.makefile("rb").readline().decode())
                client.sendall(b"ok\n")
    threading.Thread(target=serve, daemon=True).start()
    yield path, lines
    listener.close()


def wait_for(check, what):
    for _ in range(100):
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within 5 s")


@pytest.fixture
def service(tmp_path):
    """The real page service (cheeseshop-pages `serve`) on one index, main, in tmp_path,
    answering on its socket; stopped after."""
    pk, pg = tmp_path / "packages", tmp_path / "pages"
    pk.mkdir()
    config = tmp_path / "config.json"
    sock = tmp_path / "pages.sock"
    config.write_text(json.dumps({"socket": str(sock), "indexes": [
        {"name": "main", "packages_dir": str(pk), "pages_dir": str(pg)}]}))
    process = subprocess.Popen([sys.executable, str(program_path("pages", "cheeseshop-pages")), "serve", str(config)],
                               stderr=subprocess.PIPE)
    try:
        wait_for(sock.exists, "the socket")
        yield SimpleNamespace(packages=pk, pages=pg, config=config, socket=sock)
    finally:
        process.terminate()
        process.wait(timeout=10)
