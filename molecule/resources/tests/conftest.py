"""Shared fixtures: the test client on the server host, credentials from the vault, playbook runs."""
import json
import os
import shlex
import subprocess
import tempfile
import time

import pytest
import yaml

INDEX = "http://127.0.0.1:8080"
SERVICE = "pypiserver"
PROJECT = os.environ["MOLECULE_PROJECT_DIRECTORY"]
# TEST-ONLY vault password; the scenarios keep their users in vault like operators do.
VAULT_PASSWORD_FILE = os.path.join(PROJECT, "inventories", "example", "vault-password.test-only")
GROUP_VARS_DIR = os.path.join(PROJECT, "molecule", "resources", "inventory", "group_vars", "pypi_servers")
VAULT_FILE = os.path.join(GROUP_VARS_DIR, "vault.yml")
GROUP_VARS = os.path.join(GROUP_VARS_DIR, "main.yml")
USERS_DIR = "/etc/pypi-users"


@pytest.fixture(scope="module")
def test_vars(host):
    """Molecule's inventory variables for this host (test user, client virtualenv)."""
    return host.ansible.get_variables()


@pytest.fixture(scope="session")
def vault_users():
    """The scenario's users as the vault holds them (decrypted with the test-only password)."""
    out = subprocess.run(
        ["ansible-vault", "view", "--vault-password-file", VAULT_PASSWORD_FILE, VAULT_FILE],
        capture_output=True, text=True, check=True,
    ).stdout
    return yaml.safe_load(out)["pypi_users"]


@pytest.fixture(scope="session")
def credentials(vault_users):
    return {u["name"]: u["password"] for u in vault_users if u.get("state", "present") == "present"}


@pytest.fixture(scope="session")
def indexes():
    with open(GROUP_VARS) as handle:
        return yaml.safe_load(handle)["pypi_indexes"]


@pytest.fixture
def wheel(host, request):
    """A fresh wheel with a version no earlier run uploaded, so reruns never collide."""
    name = "cheeseshop-probe"
    version = f"1.0.{time.time_ns() // 1000}"
    out = f"/var/tmp/wheels-{version}"
    path = host.check_output(f"/usr/local/bin/make_wheel.py {name} {version} {out}")
    return {"name": name, "version": version, "path": path, "module": "cheeseshop_probe"}


def twine_upload(host, test_vars, path, username, password):
    """Run twine from the client virtualenv; returns testinfra's CommandResult."""
    return host.run(
        f"TWINE_USERNAME={shlex.quote(username)} TWINE_PASSWORD={shlex.quote(password)} "
        f"{test_vars['cheeseshop_test_client_venv']}/bin/twine upload --non-interactive "
        f"--disable-progress-bar --repository-url {INDEX}/ {shlex.quote(path)}"
    )


def http_status(host, path, method="GET"):
    """Status code of one request to the index, redirects not followed."""
    return int(host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' -X {method} {INDEX}{path}"))


def main_pid(host):
    return int(host.check_output(f"systemctl show --value --property=MainPID {SERVICE}"))


def run_playbook(hostname, playbook, extra_vars=None, verbosity=0, tags=None):
    """Run a playbook from the controller against one host, as users do.

    The inventory holds the vaulted users, so the test-only vault password file is given.
    extra_vars go through a 0600 temporary file, so test passwords never reach a command line.
    Returns (returncode, combined output, seconds).
    """
    args = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
            "--limit", hostname]
    if verbosity:
        args.append("-" + "v" * verbosity)
    args += ["--vault-password-file", VAULT_PASSWORD_FILE]
    if tags:
        args += ["--tags", tags]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(extra_vars or {}, handle)
    try:
        args += ["-e", "@" + handle.name, playbook]
        env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": os.path.join(PROJECT, ".ansible", "collections")}
        env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
        start = time.monotonic()
        run = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        return run.returncode, run.stdout + run.stderr, time.monotonic() - start
    finally:
        os.unlink(handle.name)


def project_playbook(name):
    return os.path.join(PROJECT, "playbooks", name)
