"""The pypiserver service as the host sees it: systemd state, sockets, user, sandbox."""
import re

from conftest import INDEX, SERVICE, http_status, main_pid

testinfra_hosts = ["ansible://pypi_servers"]


def test_service_is_running_and_enabled(host):
    service = host.service(SERVICE)
    assert service.is_running
    assert service.is_enabled


def test_listens_on_loopback_only(host):
    listeners = [s for s in host.socket.get_listening_sockets() if s.endswith(":8080")]
    assert listeners == ["tcp://127.0.0.1:8080"]


def test_health_endpoint_answers(host):
    assert http_status(host, "/health") == 200


def test_served_by_waitress_not_wsgiref(host):
    headers = host.check_output(f"curl -s -D - -o /dev/null {INDEX}/health")
    assert re.search(r"(?im)^server: waitress", headers), headers


def test_process_runs_as_service_user(host):
    status = host.file(f"/proc/{main_pid(host)}/status").content_string
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M).groups()
    expected = str(host.user("pypiserver").uid)
    assert uids == (expected, expected)
    assert expected != "0"


def test_sandbox_allows_writes_only_to_packages(host):
    """Inside the service's own mount namespace only the packages directory is writable."""
    pid = main_pid(host)
    enter = f"nsenter --target {pid} --mount --"
    denied = host.run(f"{enter} touch /opt/pypiserver/write-probe")
    assert denied.rc != 0 and "Read-only file system" in denied.stderr
    denied_etc = host.run(f"{enter} touch /etc/write-probe")
    assert denied_etc.rc != 0 and "Read-only file system" in denied_etc.stderr
    host.check_output(f"{enter} touch /srv/pypi/packages/.write-probe")
    host.check_output("rm /srv/pypi/packages/.write-probe")


def test_systemd_exposure_is_low(host):
    report = host.check_output(f"systemd-analyze security {SERVICE}.service")
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", report).group(1))
    assert score <= 2.0, report


def test_restarts_after_a_crash(host):
    before = main_pid(host)
    host.check_output(f"kill -9 {before}")
    # Restart=on-failure with RestartSec=2s: a new process must answer within 5 s.
    back = host.run(
        f"for i in $(seq 1 25); do "
        f"curl -sf -o /dev/null {INDEX}/health && "
        f"[ \"$(systemctl show --value --property=MainPID {SERVICE})\" != {before} ] && exit 0; "
        f"sleep 0.2; done; exit 1"
    )
    assert back.rc == 0, "pypiserver did not answer within 5 s of a SIGKILL"
    assert main_pid(host) not in (0, before)


def test_access_log_is_rotated(host):
    """Debian's nginx rule rotates /var/log/nginx/*.log; logrotate itself is installed by the role."""
    assert host.package("logrotate").is_installed
    debug = host.run("logrotate --debug /etc/logrotate.d/nginx")
    assert "/var/log/nginx/pypi-access.log" in debug.stdout + debug.stderr, debug.stdout + debug.stderr
