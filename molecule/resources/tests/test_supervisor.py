"""pypiserver under supervisor (supervisor scenario only: pypi_process_manager: supervisor).

Its one index is anonymous-read: the one scenario where no index is private, so nginx's access
check exists only for the uploads there.

The scenario's host_vars log one line per request and rotate at 4 KB, so the rotation is seen
for real. Tests run in any order (pytest-randomly shuffles them), each leaving the host as it
found it: a SIGKILL, the program stopped behind nginx (pages and files served, uploads a clear
503), the switch to
systemd and back. The container restart and the missing volume are test_boot.py's, shared with
the systemd scenarios.
"""
import os
import shlex
import time
from urllib.parse import quote

import pytest

from conftest import (HOST_CURL, INDEX, project_playbook, run_playbook, served_while_pypiserver_is_down, status,
                      twine_upload, version)

testinfra_hosts = ["ansible://pypi_servers"]

PROGRAM = "pypiserver-main"
UNIT = "pypiserver@main"
LOG_DIR = "/var/log/pypiserver"
SITE = project_playbook("site.yml")
HOST_CA = "/etc/pypi-tls/ca.crt"


def program_pid(host):
    """The program's PID, or 0 when supervisord does not run it."""
    out = host.run(f"supervisorctl pid {PROGRAM}").stdout.strip()
    return int(out) if out.isdigit() else 0


def instances(host):
    """The PIDs of every pypi-server process (run through its launcher), and how many sockets
    listen on main's port."""
    # The bracket keeps pgrep from matching the shell that runs it.
    pids = host.run("pgrep -f '/cheeseshop-pypiserve[r] --index '").stdout.split()
    return pids, len(host.check_output("ss -Htln 'sport = :8080'").splitlines())


def proc(host, pid, what):
    return host.check_output(f"cat /proc/{pid}/{what} | tr '\\0' '\\n'")


@pytest.fixture(scope="module")
def published(host, test_vars, credentials):
    """A project with one file on the index, uploaded here: the pypiserver-down test needs a
    page that links a file, whichever test ran before it."""
    uploader, release = test_vars["cheeseshop_test_user"], version()
    wheel = host.check_output(f"/usr/local/bin/make_wheel.py cheeseshop-supervised-kept {release} /var/tmp/kept")
    upload = twine_upload(host, test_vars, wheel, uploader, credentials[uploader])
    assert upload.rc == 0, upload.stdout + upload.stderr
    return "cheeseshop-supervised-kept"


def wait_until_running(host):
    """STARTING turns RUNNING after startsecs (2 s): whatever ran before (test_boot.py's restart,
    a switch of manager) may have just started the program."""
    running = host.run(f"for i in $(seq 1 25); do supervisorctl status {PROGRAM} | grep -q ' RUNNING ' && exit 0; "
                       "sleep 0.2; done; exit 1")
    assert running.rc == 0, host.run(f"supervisorctl status {PROGRAM}").stdout


def test_each_index_is_a_supervisor_program_as_the_service_user(host):
    wait_until_running(host)
    pid = program_pid(host)
    assert host.check_output(f"ps -o user= -p {pid}") == "pypiserver"
    # The systemd instance's command line, umask and environment.
    command = proc(host, pid, "cmdline").splitlines()
    for option in (["--port", "8080"], ["--interface", "127.0.0.1"], ["--disable-fallback"],
                   ["--passwords", "/etc/pypi-users/main-uploaders.htpasswd"], ["/srv/pypi/packages"]):
        assert any(command[i:i + len(option)] == option for i in range(len(command))), (option, command)
    assert "Umask:\t0027" in proc(host, pid, "status")
    environment = proc(host, pid, "environ").splitlines()
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "HOME=/opt/pypiserver"} <= set(environment)
    # Only supervisord's instance: no systemd unit of pypiserver, one process on the port.
    assert host.run(f"systemctl cat {UNIT}.service").rc != 0
    assert not host.file("/etc/systemd/system/pypiserver@.service").exists
    assert instances(host) == ([str(pid)], 1)
    # supervisord (and so pypiserver) starts only on the mounted data volume.
    assert "/srv/pypi/packages" in host.check_output("systemctl show --value -p RequiresMountsFor supervisor")


def test_upload_and_install_over_https_with_the_same_file_permissions(host, test_vars, credentials):
    uploader, reader, release = test_vars["cheeseshop_test_user"], "molecule-reader", version()
    wheel = host.check_output(f"/usr/local/bin/make_wheel.py cheeseshop-supervised {release} /var/tmp/supervised")
    upload = host.run(
        f"TWINE_USERNAME={uploader} TWINE_PASSWORD={shlex.quote(credentials[uploader])} "
        f"{test_vars['cheeseshop_test_client_venv']}/bin/twine upload --non-interactive --disable-progress-bar "
        f"--cert {HOST_CA} --repository-url https://localhost/ {wheel}")
    assert upload.rc == 0, upload.stdout
    stored = host.file(f"/srv/pypi/packages/{os.path.basename(wheel)}")
    # As under systemd: pypiserver's file, nginx's group (setgid directory), umask 027.
    assert (stored.user, stored.group, stored.mode) == ("pypiserver", "www-data", 0o640)
    pip = host.run(
        f"{test_vars['cheeseshop_test_client_venv']}/bin/pip download --no-deps --quiet --dest /var/tmp/sv "
        f"--cert {HOST_CA} --index-url https://{reader}:{quote(credentials[reader], safe='')}@localhost/simple/ "
        f"cheeseshop-supervised=={release}")
    assert pip.rc == 0
    # Anyone reads; an upload still needs the uploader, checked by nginx (#39), though no index
    # here is private: without a credential, or with a wrong one, nothing reaches pypiserver.
    assert status(host, HOST_CURL, "https://localhost/simple/cheeseshop-supervised/") == 200
    other = host.check_output(f"/usr/local/bin/make_wheel.py cheeseshop-supervised {version()} /var/tmp/supervised")
    for auth in ("", f"-u {shlex.quote(uploader + ':wrong-password')} "):
        refused = host.run(f"{HOST_CURL} {auth}-o /dev/null -w '%{{http_code}}' -F ':action=file_upload' "
                           f"-F protocol_version=1 -F name=cheeseshop-supervised -F content=@{other} "
                           "https://localhost/")
        assert refused.stdout == "401", (auth, refused.stdout, refused.stderr)
    assert not host.file(f"/srv/pypi/packages/{os.path.basename(other)}").exists


def test_log_goes_to_a_file_that_supervisord_rotates(host):
    log = f"{LOG_DIR}/main.log"
    assert host.file(LOG_DIR).user == "root" and host.file(LOG_DIR).group == "adm"
    assert host.file(LOG_DIR).mode & 0o007 == 0  # not world-readable
    marker = f"/health?rotation-{time.time_ns()}"
    # One line per request (verbosity 1): enough requests to pass 4 KB more than once.
    host.check_output(f"for i in $(seq 1 150); do curl -s -o /dev/null '{INDEX}{marker}'; done")
    assert host.file(f"{log}.1").exists
    assert not host.file(f"{log}.3").exists  # two backups kept
    assert marker in host.file(log).content_string + host.file(f"{log}.1").content_string
    assert host.file(log).size <= 4096 + 512


def test_killed_pypiserver_is_back_within_5_seconds(host):
    # A kill while STARTING is a failed start, retried after a back-off: not what is tested here.
    wait_until_running(host)
    before = program_pid(host)
    host.check_output(f"kill -9 {before}")
    # autorestart: supervisord starts a new process at once. Poll for 5 s at most.
    back = host.run(
        f"for i in $(seq 1 25); do curl -sf -o /dev/null {INDEX}/health && exit 0; sleep 0.2; done; exit 1")
    assert back.rc == 0, "pypiserver did not answer within 5 s of a SIGKILL"
    assert program_pid(host) not in (0, before)


def test_pypiserver_down_pages_and_files_are_served_uploads_get_a_clear_503(host, credentials, published):
    """The same fault answers as under systemd (test_proxy.py), with supervisord's program stopped."""
    served_while_pypiserver_is_down(host, HOST_CURL, "https://localhost", published,
                                    ("molecule-uploader", credentials["molecule-uploader"]), host,
                                    f"supervisorctl stop {PROGRAM}", f"supervisorctl start {PROGRAM}",
                                    anonymous=True)


def switch_to(host, manager):
    """site.yml with the manager (systemd given on the command line, supervisor the inventory's),
    then: the old manager's instance is gone, one process serves, a rerun of what the manager
    drives changes nothing."""
    name = host.backend.get_hostname()
    extra = {"pypi_process_manager": "systemd"} if manager == "systemd" else {}
    rc, output, _ = run_playbook(name, SITE, extra)
    assert rc == 0, output[-3000:]
    running = host.run("supervisorctl status").stdout
    if manager == "systemd":
        assert host.service(UNIT).is_running and host.service(UNIT).is_enabled
        assert PROGRAM not in running
        assert not host.file(f"/etc/supervisor/conf.d/{PROGRAM}.conf").exists
        pid = host.check_output(f"systemctl show --value --property=MainPID {UNIT}")
    else:
        assert f"{PROGRAM} " in running and "RUNNING" in running
        assert host.run(f"systemctl cat {UNIT}.service").rc != 0
        assert not host.service(UNIT).is_running
        pid = str(program_pid(host))
    assert instances(host) == ([pid], 1)
    assert host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {INDEX}/health") == "200"
    assert status(host, HOST_CURL, "https://localhost/health") == 200

    # The rerun: the manager is read by the pypiserver role alone (its tag also runs every
    # preflight check and the wheelhouse), so the other roles are left out (a minute each way).
    rc, output, _ = run_playbook(name, SITE, extra, tags="pypiserver")
    assert rc == 0 and "changed=0" in output, output[-3000:]


def test_switching_to_systemd_and_back_leaves_one_instance_per_index(host):
    """One test for both ways, so that the host is back on the inventory's supervisor
    whatever runs next, even when the switch to systemd fails."""
    try:
        switch_to(host, "systemd")
    finally:
        switch_to(host, "supervisor")


def test_supervisord_and_its_programs_have_the_instances_limits(host):
    """Second review, finding 7, under supervisor: supervisord and the programs it runs share
    one cgroup, bounded like the systemd instances together (512 MiB and 64 tasks each, one
    index here) plus supervisord's own share. The kernel's cgroup holds the limit (cgroup v2's
    memory.max, or v1's memory.limit_in_bytes as on this machine's containers)."""
    shown = [host.check_output(f"systemctl show -P {name} supervisor") for name in ("MemoryMax", "TasksMax")]
    assert shown == [str((512 + 64) << 20), str(64 + 16)], shown
    cgroup = host.check_output("systemctl show -P ControlGroup supervisor")
    pid = program_pid(host)
    assert host.check_output(f"cat /proc/{pid}/cgroup").endswith(cgroup)
    limit = host.check_output(f"cat /sys/fs/cgroup{cgroup}/memory.max 2>/dev/null"
                              f" || cat /sys/fs/cgroup/memory{cgroup}/memory.limit_in_bytes")
    assert limit == str((512 + 64) << 20)
