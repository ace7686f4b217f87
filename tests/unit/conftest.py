"""Shared by the unit tests of the roles' programs: loading one, and a stand-in page service."""
import importlib.machinery
import importlib.util
import pathlib
import socket
import sys
import threading

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
