"""Bad input fails before anything changes, with a message that names the variable.

These run the site playbook the way users do, from the controller, against this scenario's
inventory, and check that the host's unit file did not change.
"""
import os
import subprocess

import pytest

from conftest import SERVICE

testinfra_hosts = ["ansible://pypi_servers"]

BAD_INPUTS = [
    # (extra vars as JSON, text the error must contain)
    ('{"pypiserver_port": 80}', "pypiserver_port"),
    ('{"pypiserver_authenticate": ["upload"]}', "pypiserver_authenticate"),
    ('{"pypiserver_pip_requirements": ["pypiserver==2.4.2", "waitress"]}', "pypiserver_pip_requirements"),
    ('{"pypiserver_fallback_url": "pypi.org"}', "pypiserver_fallback_url"),
    ('{"pypiserver_version": "latest"}', "pypiserver_version"),
]


@pytest.mark.parametrize("extra_vars,named", BAD_INPUTS, ids=[n for _, n in BAD_INPUTS])
def test_bad_value_is_refused_before_any_change(host, extra_vars, named):
    unit = host.file(f"/etc/systemd/system/{SERVICE}.service")
    before = (unit.sha256sum, unit.mtime)
    project = os.environ["MOLECULE_PROJECT_DIRECTORY"]
    run = subprocess.run(
        [
            "ansible-playbook",
            "-i", os.environ["MOLECULE_INVENTORY_FILE"],
            "--limit", host.backend.get_hostname(),
            "-e", extra_vars,
            os.path.join(project, "playbooks", "site.yml"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": os.path.join(project, ".ansible", "collections")},
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert named in output, output
    assert "changed=0" in output, output
    assert (unit.sha256sum, unit.mtime) == before
