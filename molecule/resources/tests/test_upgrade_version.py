"""Upgrade pypiserver in place (upgrade scenario only).

The scenario converged the whole stack (data volume, pypiserver, users, nginx) with the older
release pinned in its host_vars. Here a package goes up through nginx, then the operator's
steps: `--check --diff` previews the change and changes nothing, site.yml with the role's
default version upgrades with one restart of pypiserver and none of nginx, keeping every
package, user and certificate, and the next run changes nothing; `--tags upgrade` rolls back
to the older release and touches only the pypiserver role.

The three steps are one test, in the operator's order, each starting where the one before left
the host; it leaves the host on the scenario's older release, as test_starts_on_the_older_release
expects in whichever order the two run.
"""
import os
import re
import shlex
from urllib.parse import quote

import pytest
import yaml

from conftest import HOST_CURL, PROJECT, SERVICE, USERS_DIR, project_playbook, run_playbook, status, version

testinfra_hosts = ["ansible://pypi_servers"]

SITE = project_playbook("site.yml")
VENV = "/opt/pypiserver/venv"
TLS_DIR = "/etc/pypi-tls"
NGINX_CONF = "/etc/nginx/nginx.conf"
HOST_CA = f"{TLS_DIR}/ca.crt"


def _yaml(*path):
    with open(os.path.join(PROJECT, *path), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


OLD = _yaml("molecule", "upgrade", "inventory", "host_vars", "cheeseshop-upgrade-server.yml")["pypiserver_version"]
NEW = _yaml("roles", "pypiserver", "defaults", "main.yml")["pypiserver_version"]


def installed(host):
    return host.check_output(f"{VENV}/bin/python -c "
                             "'import importlib.metadata as m; print(m.version(\"pypiserver\"))'")


def checksums(host):
    """Every package, users file and TLS file, with its sha256: what an upgrade must keep."""
    return host.check_output(f"find /srv/pypi/packages {USERS_DIR} {TLS_DIR} -type f | sort | xargs sha256sum")


def main_pid(host, unit):
    return host.check_output(f"systemctl show --value --property=MainPID {unit}")


def nginx_processes(host):
    """nginx's master and workers: a restart changes the first, a reload the others. (nginx has
    no page cache, so no cache loader that exits on its own a minute after a start.)"""
    master = main_pid(host, "nginx")
    children = host.check_output(f"ps -o pid=,args= --ppid {master}").splitlines()
    return master, sorted(line.split()[0] for line in children)


def started_since(host, cursor):
    return host.check_output(f"journalctl --no-pager -o cat --after-cursor '{cursor}' -u {SERVICE}").count("Started")


def now(host):
    """The journal's cursor: unlike a time in whole seconds, it never counts a restart made
    just before (the set-up of the test) as one made after."""
    return host.check_output("journalctl -n 1 --show-cursor --no-pager -o cat | tail -1").removeprefix("-- cursor: ")


def ensure_release(host, release):
    """Put release in place with site.yml, as an operator would, unless it is already there."""
    if installed(host) != release:
        rc, output, _ = run_playbook(host.backend.get_hostname(), SITE, {"pypiserver_version": release})
        assert rc == 0, output[-3000:]
    assert installed(host) == release


def changed_tasks(output):
    """The task headers under which the play printed a "changed:" line."""
    tasks, current = set(), None
    for line in output.splitlines():
        header = re.match(r"(TASK|RUNNING HANDLER) \[(.*)\]", line)
        if header:
            current = header.group(2)
        elif line.startswith("changed:"):
            tasks.add(current)
    return tasks


@pytest.fixture(scope="module")
def uploaded(host, test_vars, credentials):
    """A package uploaded with twine over HTTPS on the older release: its version and file name.

    Asserted, not put in place: test_starts_on_the_older_release must see what converge left."""
    assert installed(host) == OLD
    uploader, release = test_vars["cheeseshop_test_user"], version()
    wheel = host.check_output(f"/usr/local/bin/make_wheel.py cheeseshop-keepsake {release} /var/tmp/keepsake")
    host.check_output(
        f"TWINE_USERNAME={uploader} TWINE_PASSWORD={shlex.quote(credentials[uploader])} "
        f"{test_vars['cheeseshop_test_client_venv']}/bin/twine upload --non-interactive --disable-progress-bar "
        f"--cert {HOST_CA} --repository-url https://localhost/ {wheel}")
    return release, os.path.basename(wheel)


def test_starts_on_the_older_release(host, uploaded):
    assert OLD != NEW, "the scenario must start older than the role's default"
    assert installed(host) == OLD
    assert host.service(SERVICE).is_running
    assert host.file(f"/srv/pypi/packages/{uploaded[1]}").exists


def preview(host, name):
    """--check --diff: nothing to do on the inventory's release; a new release and a new upload
    limit are named, with the nginx.conf lines, and nothing changes."""
    before, pid = checksums(host), main_pid(host, SERVICE)
    conf = host.file(NGINX_CONF).sha256sum

    rc, output, _ = run_playbook(name, SITE, check_diff=True)
    assert rc == 0 and "changed=0" in output, output[-3000:]

    rc, output, _ = run_playbook(name, SITE, {"pypiserver_version": NEW, "nginx_proxy_client_max_body_size": "256m"},
                                 check_diff=True)
    assert rc == 0, output[-3000:]
    assert "changed=0" not in output
    tasks = changed_tasks(output)
    assert "cheeseshop.pypi.pypiserver : install | Preview what pip would install (check mode)" in tasks, tasks
    assert re.search(r"^-\s+client_max_body_size 128m;$", output, re.M), output[-3000:]
    assert re.search(r"^\+\s+client_max_body_size 256m;$", output, re.M), output[-3000:]
    assert f"pypiserver=={NEW}" in output  # the requirements file's diff

    assert installed(host) == OLD
    assert main_pid(host, SERVICE) == pid
    assert host.file(NGINX_CONF).sha256sum == conf
    assert checksums(host) == before


def upgrade(host, name, test_vars, credentials, uploaded):
    """site.yml with the new release: one restart of pypiserver, none of nginx, every package,
    user and certificate kept, the kept package installed over HTTPS; a rerun changes nothing."""
    before, nginx_before, since = checksums(host), nginx_processes(host), now(host)
    rc, output, _ = run_playbook(name, SITE, {"pypiserver_version": NEW})
    assert rc == 0, output[-3000:]
    assert installed(host) == NEW
    assert started_since(host, since) == 1
    assert nginx_processes(host) == nginx_before  # neither restarted nor reloaded
    assert checksums(host) == before

    # A reader installs the package kept from the older release, over HTTPS, with pip.
    reader = "molecule-reader"
    pip = (f"{test_vars['cheeseshop_test_client_venv']}/bin/pip download --no-deps --quiet "
           f"--dest /var/tmp/kept --cert {HOST_CA} "
           f"--index-url https://{reader}:{quote(credentials[reader], safe='')}@localhost/simple/ "
           f"cheeseshop-keepsake=={uploaded[0]}")
    assert host.run(pip).rc == 0
    kept = uploaded[1]
    assert host.file(f"/var/tmp/kept/{kept}").sha256sum == host.file(f"/srv/pypi/packages/{kept}").sha256sum
    # Everyone else still gets a 401, through the same stack.
    assert status(host, HOST_CURL, "https://localhost/simple/cheeseshop-keepsake/") == 401

    rc, output, _ = run_playbook(name, SITE, {"pypiserver_version": NEW})
    assert rc == 0 and "changed=0" in output, output[-3000:]


def roll_back(host, name):
    """--tags upgrade with the older release: pypiserver's tasks alone, one restart, nginx and
    every file untouched; a rerun changes nothing."""
    before, nginx_before, since = checksums(host), nginx_processes(host), now(host)
    conf = host.file(NGINX_CONF).sha256sum

    rc, output, _ = run_playbook(name, SITE, {"pypiserver_version": OLD}, tags="upgrade")
    assert rc == 0, output[-3000:]
    assert installed(host) == OLD
    assert started_since(host, since) == 1
    tasks = changed_tasks(output)
    assert tasks and all(task.startswith("cheeseshop.pypi.pypiserver : ") for task in tasks), tasks
    assert nginx_processes(host) == nginx_before
    assert host.file(NGINX_CONF).sha256sum == conf
    assert checksums(host) == before
    assert host.check_output("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/health") == "200"

    rc, output, _ = run_playbook(name, SITE, {"pypiserver_version": OLD}, tags="upgrade")
    assert rc == 0 and "changed=0" in output, output[-3000:]


def test_the_upgrade_is_previewed_applied_with_one_restart_and_rolled_back(host, test_vars, credentials, uploaded):
    """The operator's steps, in their order: each starts where the one before left the host, so
    no step pays a converge to put a release back (one test, not three that pytest-randomly
    would shuffle into extra converges)."""
    name = host.backend.get_hostname()
    assert installed(host) == OLD  # the inventory's release
    try:
        preview(host, name)
        upgrade(host, name, test_vars, credentials, uploaded)
        roll_back(host, name)
    finally:
        ensure_release(host, OLD)  # a no-op unless a step failed
