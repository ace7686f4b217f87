"""Fixtures shared by the unit tests of the programs that talk to the page service."""
import socket
import threading

import pytest


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
