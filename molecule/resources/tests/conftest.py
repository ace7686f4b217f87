"""Shared fixtures: the test client on the server host, and a unique package per test."""
import shlex
import time

import pytest

INDEX = "http://127.0.0.1:8080"
SERVICE = "pypiserver"


@pytest.fixture(scope="module")
def test_vars(host):
    """Molecule's inventory variables for this host (test user, client virtualenv)."""
    return host.ansible.get_variables()


@pytest.fixture
def wheel(host, request):
    """A fresh wheel with a version no earlier run uploaded, so reruns never collide."""
    name = "cheeseshop-probe"
    version = f"1.0.{time.time_ns() // 1000}"
    out = f"/var/tmp/wheels-{version}"
    path = host.check_output(f"/usr/local/bin/make_wheel.py {name} {version} {out}")
    return {"name": name, "version": version, "path": path, "module": "cheeseshop_probe"}


def twine_upload(host, test_vars, path, username=None, password=None):
    """Run twine from the client virtualenv; returns testinfra's CommandResult."""
    user = username if username is not None else test_vars["cheeseshop_test_user"]
    secret = password if password is not None else test_vars["cheeseshop_test_password"]
    return host.run(
        f"TWINE_USERNAME={shlex.quote(user)} TWINE_PASSWORD={shlex.quote(secret)} "
        f"{test_vars['cheeseshop_test_client_venv']}/bin/twine upload --non-interactive "
        f"--disable-progress-bar --repository-url {INDEX}/ {shlex.quote(path)}"
    )


def http_status(host, path, method="GET"):
    """Status code of one request to the index, redirects not followed."""
    return int(host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' -X {method} {INDEX}{path}"))


def main_pid(host):
    return int(host.check_output(f"systemctl show --value --property=MainPID {SERVICE}"))
