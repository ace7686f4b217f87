"""Bad input fails before anything changes, with a message that names the variable.

These run the site playbook the way users do, from the controller, against this scenario's
inventory, and check that the host's units did not change.
"""
import json

import pytest

from conftest import project_playbook, run_playbook, unit_state

testinfra_hosts = ["ansible://pypi_servers"]

BAD_INPUTS = [
    # (extra vars as JSON, text the error must contain)
    ('{"pypi_base_port": 80}', "pypi_indexes: index 'main' has port 80"),
    # A layout setting of 0.2.0, now read by the layout role under a collection-wide name.
    ('{"pypiserver_port": 8080}', "pypiserver_port is now pypi_base_port"),
    ('{"pypi_indexes": [{"name": "main", "read": ["nobody"]}]}', "gives read rights to 'nobody'"),
    ('{"pypiserver_authenticate": ["update"]}', "pypiserver_authenticate no longer exists"),
    ('{"pypiserver_pip_requirements": ["pypiserver==2.4.2", "waitress"]}', "pypiserver_pip_requirements"),
    ('{"pypiserver_fallback_url": "https://pypi.org/simple/"}', "pypiserver_fallback_url no longer exists"),
    ('{"pypiserver_version": "latest"}', "pypiserver_version"),
    ('{"nginx_proxy_auth_fail_delay": 30}', "nginx_proxy_auth_fail_delay"),
    ('{"nginx_proxy_auth_threads": 0}', "nginx_proxy_auth_threads"),
    ('{"nginx_proxy_auth_account_fail_limit": 5}', "nginx_proxy_auth_account_fail_limit"),
    ('{"nginx_proxy_trusted_proxies": ["0.0.0.0/0"]}', "never 0.0.0.0/0"),
    # 37 characters, 74 bytes: bcrypt would read only the first 72 (#27). The length used to be
    # counted in characters.
    (json.dumps({"users_list": [{"name": "molecule-reader", "password": "\u00e9" * 37}]}),
     "bcrypt ignores everything after 72 bytes"),
]


@pytest.mark.parametrize("extra_vars,named", BAD_INPUTS, ids=[n for _, n in BAD_INPUTS])
def test_bad_value_is_refused_before_any_change(host, extra_vars, named):
    before = unit_state(host)
    rc, output, _ = run_playbook(host.backend.get_hostname(), project_playbook("site.yml"), json.loads(extra_vars))
    assert rc == 2, output  # a failed task; 1 or 4 would be a crash or an unreachable host
    assert named in output, output
    assert "changed=0" in output, output
    assert unit_state(host) == before


@pytest.mark.parametrize("role", ["users", "nginx_proxy"])
def test_a_role_used_alone_computes_the_layout_and_checks_it(host, tmp_path, role):
    """Without site.yml's layout step a role runs cheeseshop.pypi.layout itself: on the
    converged host it changes nothing, and a bad index list is refused by the layout's own
    check before anything changes."""
    playbook = tmp_path / f"{role}-alone.yml"
    playbook.write_text(f"- hosts: pypi_servers\n  become: true\n  roles: [cheeseshop.pypi.{role}]\n")
    rc, output, _ = run_playbook(host.backend.get_hostname(), str(playbook), check_diff=True)
    assert rc == 0 and "changed=0" in output, output
    before = unit_state(host)
    rc, output, _ = run_playbook(host.backend.get_hostname(), str(playbook),
                                 {"pypi_indexes": [{"name": "main", "read": ["nobody"]}]})
    assert rc == 2 and "gives read rights to 'nobody'" in output and "changed=0" in output, output
    assert unit_state(host) == before
