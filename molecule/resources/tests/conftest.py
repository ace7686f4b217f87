"""Shared fixtures: the test client on the server host, credentials from the vault, playbook runs."""
import base64
import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from urllib.parse import urljoin

import pytest
import yaml

INDEX = "http://127.0.0.1:8080"
SERVICE = "pypiserver@main"
PROJECT = os.environ["MOLECULE_PROJECT_DIRECTORY"]
# TEST-ONLY vault password; the scenarios keep their users in vault like operators do.
VAULT_PASSWORD_FILE = os.path.join(PROJECT, "inventories", "vault-password.test-only")
GROUP_VARS_DIR = os.path.join(PROJECT, "molecule", "resources", "inventory", "group_vars", "pypi_servers")
VAULT_FILE = os.path.join(GROUP_VARS_DIR, "vault.yml")
GROUP_VARS = os.path.join(GROUP_VARS_DIR, "main.yml")
USERS_DIR = "/etc/pypi-users"
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def pytest_configure(config):
    config.addinivalue_line("markers", "scenarios(*names): run this test only in these scenarios. For what "
                            "Ansible decides the same way on every Debian release, so debian13 need not repeat it.")


def scenario_test_files():
    """The files the scenario's molecule.yml lists (verifier.env.CHEESESHOP_TEST_FILES), checked."""
    listed = os.environ.get("CHEESESHOP_TEST_FILES", "").split()
    if not listed:
        raise pytest.UsageError(
            f"scenario {os.environ.get('MOLECULE_SCENARIO_NAME')!r} lists no test files: set "
            "verifier.env.CHEESESHOP_TEST_FILES in its molecule.yml")
    missing = [name for name in listed if not os.path.isfile(os.path.join(TESTS_DIR, name))]
    if missing:
        raise pytest.UsageError(f"CHEESESHOP_TEST_FILES names files that do not exist in {TESTS_DIR}: {missing}")
    return set(listed)


def _applies_here(item, files):
    marker = item.get_closest_marker("scenarios")
    if marker and os.environ.get("MOLECULE_SCENARIO_NAME") not in marker.args:
        return False
    return item.path.name in files


def pytest_collection_modifyitems(config, items):
    """Keep the scenario's own files (molecule names every file in the directory)."""
    files = scenario_test_files()
    other = [item for item in items if not _applies_here(item, files)]
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = [item for item in items if _applies_here(item, files)]


@pytest.fixture(scope="module")
def test_vars(host):
    """Molecule's inventory variables for this host (test user, client virtualenv)."""
    return host.ansible.get_variables()


def vault_view(path):
    """A vault file's variables, decrypted with the test-only password."""
    out = subprocess.run(["ansible-vault", "view", "--vault-password-file", VAULT_PASSWORD_FILE, path],
                         capture_output=True, text=True, check=True).stdout
    return yaml.safe_load(out)


@pytest.fixture(scope="session")
def vault_users():
    """The scenario's users as the vault holds them."""
    return vault_view(VAULT_FILE)["pypi_users"]


@pytest.fixture(scope="session")
def credentials(vault_users):
    return {u["name"]: u["password"] for u in vault_users if u.get("state", "present") == "present"}


# The indexes scenario's tokens (test_tokens.py, test_audit.py).
TOKENS_VAULT = os.path.join(PROJECT, "molecule", "indexes", "inventory", "host_vars", "cheeseshop-indexes-server",
                            "tokens.vault.yml")


@pytest.fixture(scope="module")
def vault_tokens():
    # As a run's extra variables carry them: a date is written as text.
    return [{**t, "expires": str(t["expires"])} for t in vault_view(TOKENS_VAULT)["pypi_tokens"]]


@pytest.fixture(scope="module")
def token(vault_tokens):
    """name -> token text: from the vault, or from the controller's file the converge made."""
    made = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "tokens")
    texts = {t["name"]: t["token"] for t in vault_tokens if t.get("token")}
    for t in vault_tokens:
        if not t.get("token"):
            with open(os.path.join(made, f"{t['name']}.token")) as handle:
                texts[t["name"]] = handle.read().strip()
    return texts


@pytest.fixture(scope="module")
def user(credentials):
    """name -> (name, password) of a user of the vault."""
    return lambda name: (name, credentials[name])


@pytest.fixture(scope="module")
def server_host(host, server):
    """The index's server, for the wire tests that look at it from the client's side."""
    return host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


@pytest.fixture(scope="module")
def reader(credentials):
    return ("molecule-reader", credentials["molecule-reader"])


@pytest.fixture(scope="module")
def uploader(credentials):
    return ("molecule-uploader", credentials["molecule-uploader"])


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


def unit_state(host):
    """Checksum and time of every pypiserver unit file and of nginx.conf: what a refused run must
    leave alone."""
    return host.check_output(
        "find /etc/systemd/system /etc/nginx/nginx.conf -path '*pypiserver*' -o -name nginx.conf "
        "| sort | xargs -r stat -c '%n %Y %s' && find /etc/systemd/system -path '*pypiserver*' -type f "
        "| sort | xargs -r sha256sum"
    )


def main_pid(host):
    return int(host.check_output(f"systemctl show --value --property=MainPID {SERVICE}"))


def run_playbook(hostname, playbook, extra_vars=None, verbosity=0, tags=None, collections_path=None,
                 check_diff=False, diff=False, inventory=None, skip_tags=None):
    """Run a playbook from the controller against one host, as users do.

    The inventory holds the vaulted users, so the test-only vault password file is given.
    extra_vars go through a 0600 temporary file, so test passwords never reach a command line.
    collections_path points at another build of the collection (an earlier release, say).
    check_diff runs it as `--check --diff`, the operator's preview; diff as `--diff` alone.
    inventory replaces the scenario's (a host the test made itself).
    Returns (returncode, combined output, seconds).
    """
    args = ["ansible-playbook", "-i", inventory or os.environ["MOLECULE_INVENTORY_FILE"],
            "--limit", hostname]
    if verbosity:
        args.append("-" + "v" * verbosity)
    args += ["--vault-password-file", VAULT_PASSWORD_FILE]
    if tags:
        args += ["--tags", tags]
    if skip_tags:
        args += ["--skip-tags", skip_tags]
    if check_diff:
        args += ["--check", "--diff"]
    elif diff:
        args.append("--diff")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(extra_vars or {}, handle)
    try:
        args += ["-e", "@" + handle.name, playbook]
        env = {**os.environ, "ANSIBLE_PIPELINING": "true",
               "ANSIBLE_COLLECTIONS_PATH": collections_path or os.path.join(PROJECT, ".ansible", "collections")}
        env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
        # Molecule forces colour for its own output; tests read this output as plain text.
        env.pop("ANSIBLE_FORCE_COLOR", None)
        env["ANSIBLE_NOCOLOR"] = "true"
        start = time.monotonic()
        run = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        return run.returncode, run.stdout + run.stderr, time.monotonic() - start
    finally:
        os.unlink(handle.name)


def project_playbook(name):
    return os.path.join(PROJECT, "playbooks", name)


# --- Clients over HTTPS: what the wire tests (on the client container) use ---------------

@pytest.fixture(scope="module")
def server(test_vars):
    """The index's host name, as clients on the scenario's network reach it."""
    return test_vars["groups"]["pypi_servers"][0]


@pytest.fixture(scope="module")
def ca(test_vars):
    return test_vars["cheeseshop_client_ca"]


# On the server itself: curl through nginx, trusting the CA the role made there.
HOST_CURL = "curl -s --cacert /etc/pypi-tls/ca.crt"


@pytest.fixture(scope="module")
def curl(ca):
    """curl trusting only the index's CA: status, headers or body of one request."""
    return f"curl -s --cacert {ca}"


def _auth(user):
    return f"-u {shlex.quote(user[0] + ':' + user[1])} " if user else ""


def status(host, curl, url, user=None, extra=""):
    return int(host.check_output(f"{curl} {_auth(user)}{extra} -o /dev/null -w '%{{http_code}}' {shlex.quote(url)}"))


def headers(host, curl, url, user=None, extra=""):
    return host.check_output(f"{curl} {_auth(user)}{extra} -D - -o /dev/null {shlex.quote(url)}").lower()


def body(host, curl, url, user=None, extra=""):
    return host.check_output(f"{curl} {_auth(user)}{extra} {shlex.quote(url)}")


def first_file_url(host, curl, page, user=None, filename=""):
    """The first file a project page links to (with that file name, if given), resolved as a
    client resolves it."""
    hrefs = [h.split('"', 1)[0].split("#", 1)[0] for h in body(host, curl, page, user).split('href="')[1:]]
    return urljoin(page, next(h for h in hrefs if h.endswith("/" + filename) or not filename))


def served_while_pypiserver_is_down(host, curl, base, project, reader, server_host, stop, start, anonymous=False):
    """With pypiserver stopped (the stop command run on server_host): every page and file is
    still served from disk, as long as it stays down, and still behind the access check (to
    anyone on an anonymous index); an upload (reader: an uploader there) gets a 503 that says
    why, and so does the health endpoint. Then pypiserver starts."""
    page = f"{base}/simple/{project}/"
    file_url = first_file_url(host, curl, page, reader)
    json_accept = "-H 'Accept: application/vnd.pypi.simple.v1+json'"
    ver = version()
    fake = f"/var/tmp/{project.replace('-', '_')}-{ver}-py3-none-any.whl"
    host.check_output(f"echo not-stored > {fake}")
    server_host.check_output(stop)
    try:
        for url, extra in ((page, ""), (page, json_accept), (f"{base}/simple/", ""), (file_url, "")):
            assert status(host, curl, url, reader, extra) == 200, url
            assert status(host, curl, url, None, extra) == (200 if anonymous else 401), url
        answer = host.run(f"{curl} {_auth(reader)}-D - -F ':action=file_upload' -F protocol_version=1 "
                          f"-F name={project} -F version={ver} -F content=@{fake} {base}/")
        assert answer.stdout.startswith("HTTP/2 503"), answer.stdout
        assert "retry-after: 30" in answer.stdout.lower() and "pypiserver is not answering" in answer.stdout
        assert status(host, curl, f"{base}/health") == 503  # what a load balancer sees
    finally:
        server_host.check_output(start)
        host.run(f"rm -f {fake}")
    for _ in range(50):
        if status(host, curl, f"{base}/health") == 200:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the health endpoint did not answer 200 within 10 s of pypiserver's start")
    assert status(host, curl, page, reader) == 200


def restart_nginx(host, server):
    """A restart empties nginx's shared memory: no failure counted, no credential remembered."""
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    server_host.check_output("systemctl restart nginx")


def burst(host, curl, url, credentials, extra="", parallel=50):
    """One request per (name, password) in credentials, parallel at a time: {status: count}."""
    lines = "\n".join(base64.b64encode(f"{n}:{p}".encode()).decode() for n, p in credentials)
    out = host.check_output(
        f"printf '%s\\n' {shlex.quote(lines)} | xargs -P {parallel} -I@ {curl}{extra} -o /dev/null "
        f"-w '%{{http_code}}\\n' -H 'Authorization: Basic @' {shlex.quote(url)}")
    codes = {}
    for code in out.split():
        codes[int(code)] = codes.get(int(code), 0) + 1
    return codes


def listed_files(host, curl, base, user=None):
    """{file name: (sha256, URL)} of every file the index at base (https://NAME/PATH/) lists to
    this reader, read from its PEP 691 JSON pages."""
    accept = "-H 'Accept: application/vnd.pypi.simple.v1+json'"
    files = {}
    for project in json.loads(body(host, f"{curl} {accept}", f"{base}simple/", user))["projects"]:
        page = f"{base}simple/{project['name']}/"
        for found in json.loads(body(host, f"{curl} {accept}", page, user))["files"]:
            files[found["filename"]] = (found["hashes"]["sha256"], urljoin(page, found["url"]))
    return files


def sha256_by_name(host, directory, hidden=False):
    """{file name: sha256} of the files directly in directory; hidden ones (uploads being
    written) only when asked."""
    skip = "" if hidden else "! -name '.*' "
    out = host.check_output(f"cd {shlex.quote(directory)} && find . -maxdepth 1 -type f {skip}-printf '%P\\0'"
                            " | xargs -0 -r sha256sum")
    return dict(line.split()[::-1] for line in out.splitlines())


def until_page(host, curl, page, user, text, listed=True):
    """Reads the page until it lists text (or, listed=False, no longer does); fails after 10 s."""
    for _ in range(100):
        if (text in body(host, curl, page, user)) == listed:
            return
        time.sleep(0.1)
    pytest.fail(f"{page} {'did not list' if listed else 'still listed'} {text} after 10 s")


def client_wheel(host, name, version, payload_mb=0):
    """Build a wheel on the client; returns its path."""
    env = f"PAYLOAD_MB={payload_mb} " if payload_mb else ""
    return host.check_output(f"{env}/usr/local/bin/make_wheel.py {name} {version} /var/tmp/proxy-{version}")


def https_upload(host, test_vars, server, ca, path, user, index_path="/"):
    """twine upload over HTTPS to the index at index_path, trusting only the index's CA."""
    return host.run(
        f"TWINE_USERNAME={shlex.quote(user[0])} TWINE_PASSWORD={shlex.quote(user[1])} "
        f"{test_vars['cheeseshop_test_client_venv']}/bin/twine upload --non-interactive "
        f"--disable-progress-bar --cert {ca} --repository-url https://{server}{index_path} {shlex.quote(path)}"
    )


_last_version = [0]


def version():
    """A version no earlier run used and no other call returns, so uploads never collide.

    Microseconds alone repeat when two calls fall in the same one (seen 44 times in 100)."""
    _last_version[0] = max(time.time_ns() // 1000, _last_version[0] + 1)
    return f"3.0.{_last_version[0]}"


def twine_status(run):
    """The HTTP status of twine's error line ("HTTPError: 403 Forbidden from ..."), or None.

    Read from that line only: a bare "403" in twine's output could be part of a version."""
    found = re.findall(r"HTTPError: (\d{3}) ", run.stdout + run.stderr)
    return int(found[-1]) if found else None


# --- The host as a machine: its name, its devices, its boots -------------------------------

@pytest.fixture(scope="module")
def name(host):
    """The container's (and inventory's) name."""
    return host.backend.get_hostname()


@pytest.fixture(scope="module")
def loops(name):
    """{name: {device, file, path}} of this host's loop devices, as create.yml recorded them."""
    with open(os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "loop-devices.json")) as handle:
        return {loop["name"]: loop for loop in json.load(handle) if loop["platform"] == name}


def docker(*args):
    """Run the docker client on the controller; returns what it printed."""
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True, timeout=120).stdout


def source_of(host, path):
    """The device mounted at path, or None."""
    found = host.run(f"findmnt --noheadings --output SOURCE --mountpoint {path}")
    return found.stdout.strip() if found.rc == 0 else None


def wait_for_boot(host, failed=()):
    """Until systemd has finished starting up (its bus answers a moment after the container
    starts); then exactly the units in failed have failed: "running" when none is expected,
    "degraded" with precisely those, never a boot that merely settled."""
    state = ""
    for _ in range(100):
        try:
            state = host.run("systemctl is-system-running --wait").stdout.strip()
        except RuntimeError as error:  # ssh's 255: no connection yet to a container just started
            state = str(error)
        if state in ("running", "degraded"):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the host did not finish booting: " + state)
    units = sorted(host.check_output("systemctl list-units --failed --plain --no-legend | cut -d' ' -f1").split())
    assert (state, units) == ("degraded" if failed else "running", sorted(failed))


def wait_for_index(host):
    for _ in range(50):
        if host.run(f"curl -sf -o /dev/null {INDEX}/health").rc == 0:
            return
        time.sleep(0.2)
    pytest.fail("pypiserver did not answer on " + INDEX)


def pypiserver_running(host, test_vars, index="main"):
    """Whether the index's pypiserver runs, under the scenario's process manager."""
    if test_vars.get("pypi_process_manager", "systemd") == "supervisor":
        # STARTING: the first startsecs (2 s) of a process that is already up.
        return host.run(f"supervisorctl status pypiserver-{index}").stdout.split()[1:2] in (["RUNNING"], ["STARTING"])
    return host.service(f"pypiserver@{index}").is_running
