"""Air-gapped installs (molecule/cluster, docs/offline.md): the writer converged site.yml with
pypi_offline after prepare.yml built its wheelhouse (cheeseshop.pypi.wheelhouse, on the writer's
own python3) and then refused every connection out of the scenario's network.

From the client: the writer serves twine and pip over HTTPS, and its mirror, synced from the
stand-in upstream on the client (an internal proxy on a closed network). On the writer: it
reaches no Python index (the client, on the same machine's network, does: the cut is the
writer's), each of its three virtualenvs (pypiserver, trusted publishing, the mirror's pip)
holds only what the wheelhouse holds (its rerun, offline, is test_cluster.py's rerun of both
servers). A wheelhouse that is not there stops site.yml before anything changes.
"""
import os
import re
import shlex
import tempfile

import pytest

from conftest import (client_wheel, https_upload, project_playbook, run_playbook, status, unit_state,
                      version)

testinfra_hosts = ["ansible://clients"]

WHEELHOUSE = "/var/lib/cheeseshop-pypi/wheelhouse"
# Each virtualenv an offline host has, and the wheels its pip installs from.
VENVS = ["/opt/pypiserver/venv", "/opt/cheeseshop-oidc", "/opt/cheeseshop-mirror"]


@pytest.fixture(scope="module")
def server(test_vars):
    """The offline writer: the cluster's reader (test_cluster.py) is a server too, and is online."""
    return test_vars["groups"]["cheeseshop_offline"][0]


@pytest.fixture(scope="module")
def writer(host, server):
    return host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def reaches(host, url, ca, address=None):
    """Whether an HTTPS GET of url gets any HTTP answer within 10 s (from address, given)."""
    at = f"--resolve {shlex.quote(url.split('/')[2])}:443:{address} " if address else ""
    run = host.run(f"curl -s -o /dev/null --max-time 10 --cacert {ca} {at}-w '%{{http_code}}' {shlex.quote(url)}")
    return run.rc == 0 and run.stdout not in ("", "000")


def test_the_writer_reaches_no_python_index_and_the_client_does(host, writer):
    """The cut is the writer's alone: from the same Docker network the client reaches PyPI
    through the machine's proxy (its CA bundle), so the writer's failure is its route's. The
    writer resolves no outside name (Docker's DNS asks from the container's own network), and
    given PyPI's address it is refused at once."""
    bundle = "/usr/local/share/cheeseshop-test/ca-bundle.pem"
    assert reaches(host, "https://pypi.org/simple/pip/", bundle)
    address = host.check_output("getent ahostsv4 pypi.org | head -n1 | cut -d' ' -f1")
    assert reaches(host, "https://pypi.org/simple/pip/", bundle, address)
    assert not reaches(writer, "https://pypi.org/simple/pip/", bundle)
    refused = writer.run(f"curl -sS -o /dev/null --max-time 10 --resolve pypi.org:443:{address} https://pypi.org/")
    # 7: could not connect (the reset, at once), not 28, a timeout.
    assert refused.rc == 7 and "failed to connect" in refused.stderr.lower(), (refused.rc, refused.stderr)
    assert not reaches(writer, "https://files.pythonhosted.org/", bundle)


def test_the_wheelhouse_was_built_for_the_writer_s_python(writer):
    """Markers follow the interpreter that resolved them: Debian 12's Python 3.11 needs
    importlib-resources (python_version < "3.12") and not legacy-cgi (>= "3.13")."""
    wheels = writer.check_output(f"ls {WHEELHOUSE}").split()
    names = {re.match(r"^([A-Za-z0-9_.]+?)-\d", w).group(1).lower().replace("_", "-") for w in wheels}
    assert {"pypiserver", "pip", "waitress", "bcrypt", "pyjwt", "cryptography", "importlib-resources"} <= names, names
    assert "legacy-cgi" not in names
    assert all(w.endswith(".whl") for w in wheels), wheels
    assert "pypiserver-2.4.2-py3-none-any.whl" in wheels and "pip-26.3-py3-none-any.whl" in wheels


def test_every_virtualenv_holds_what_the_wheelhouse_holds(writer):
    """Each distribution installed in the product's virtualenvs is a wheel of the wheelhouse,
    version for version: nothing came from elsewhere."""
    wheels = {(m.group(1).lower().replace("_", "-"), m.group(2))
              for m in (re.match(r"^([A-Za-z0-9_.]+?)-([^-]+)-", w)
                        for w in writer.check_output(f"ls {WHEELHOUSE}").split())}
    # What python3 -m venv puts in every virtualenv (pip, setuptools): Debian's own wheels.
    bundled = {(m.group(1).lower(), m.group(2))
               for m in (re.match(r"^([A-Za-z0-9_.]+?)-([^-]+)-", w)
                         for w in writer.check_output("ls /usr/share/python-wheels").split())}
    for venv in VENVS:
        frozen = writer.check_output(f"{venv}/bin/python -m pip list --format=freeze --exclude-editable")
        installed = {(name.lower().replace("_", "-"), ver) for name, ver in
                     (line.split("==") for line in frozen.splitlines() if "==" in line)}
        assert installed - bundled <= wheels, (venv, installed - bundled - wheels)
        assert installed - bundled, (venv, installed)


def test_the_offline_writer_serves_twine_and_pip(host, test_vars, server, ca, credentials):
    uploader = ("molecule-uploader", credentials["molecule-uploader"])
    reader = ("molecule-reader", credentials["molecule-reader"])
    ver = version()
    run = https_upload(host, test_vars, server, ca, client_wheel(host, "cheeseshop-offline", ver), uploader)
    assert run.rc == 0, run.stdout + run.stderr
    venv = "/var/tmp/offline-client"
    host.check_output(f"rm -rf {venv} && python3 -m venv {venv}")
    index = f"https://{reader[0]}:{reader[1]}@{server}/simple/"
    host.check_output(f"{venv}/bin/pip install --quiet --no-cache-dir --cert {ca} --index-url {shlex.quote(index)} "
                      f"cheeseshop-offline=={ver}")
    assert f"cheeseshop-offline=={ver}" in host.check_output(f"{venv}/bin/pip list --format=freeze")
    assert status(host, f"curl -s --cacert {ca}", f"https://{server}/simple/cheeseshop-offline/") == 401
    # The mirror synced from the upstream on the network; pip installs through it.
    mirrored = f"https://{reader[0]}:{reader[1]}@{server}/mirror/simple/"
    host.check_output(f"{venv}/bin/pip install --quiet --no-cache-dir --cert {ca} --index-url {shlex.quote(mirrored)} "
                      "cheeseshop-mirrored-widgets==1.0")


def test_a_missing_wheelhouse_stops_site_yml_before_any_change(server, writer):
    before = unit_state(writer)
    with tempfile.TemporaryDirectory() as empty:
        rc, output, _ = run_playbook(server, project_playbook("site.yml"), {"pypi_wheelhouse_dir": empty})
    text = " ".join(output.split())
    assert rc != 0 and "holds no wheel for debian12-python3.11" in text, output[-3000:]
    assert "cheeseshop.pypi.wheelhouse" in text and "changed=0" in output
    assert unit_state(writer) == before
