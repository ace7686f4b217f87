"""Several indexes as the server sees them: one pypiserver instance each, adding and removing
an index with a rerun, and bad index lists refused before any change (molecule/indexes)."""
import pytest

from conftest import HOST_CURL, project_playbook, run_playbook, status, unit_state, version

testinfra_hosts = ["ansible://pypi_servers"]

LAYOUT = {
    # index: (port, packages directory, URL path)
    "public": (8080, "/srv/pypi/indexes/public", "/public/"),
    "customer-a": (8081, "/srv/pypi/indexes/customer-a", "/private/customer-a/"),
    "customer-b": (8082, "/srv/pypi/indexes/customer-b", "/private/customer-b/"),
}


def https_status(host, path, user=None):
    """Status of one request through nginx on this host, trusting the index's own CA."""
    return status(host, HOST_CURL, f"https://localhost{path}", user)


@pytest.mark.parametrize("index", LAYOUT)
def test_each_index_is_its_own_sandboxed_instance(host, index):
    port, packages_dir, path = LAYOUT[index]
    service = host.service(f"pypiserver@{index}")
    assert service.is_running and service.is_enabled
    listeners = [s for s in host.socket.get_listening_sockets() if s.endswith(f":{port}")]
    assert listeners == [f"tcp://127.0.0.1:{port}"]
    show = host.check_output(f"systemctl show --property=ReadWritePaths,ExecStart pypiserver@{index}")
    assert f"ReadWritePaths={packages_dir}" in show
    assert f"--server-base-url {path} " in show and f" {packages_dir} ;" in show
    assert f"--passwords /etc/pypi-users/{index}-uploaders.htpasswd" in show
    assert host.mount_point("/srv/pypi").exists and host.file(packages_dir).is_directory
    assert not host.file("/etc/systemd/system/pypiserver.service").exists


def test_an_index_is_added_then_removed_and_its_packages_are_kept(host, test_vars, credentials):
    name = host.backend.get_hostname()
    base = test_vars["pypi_indexes"]
    bob = ("customer-b-dev", credentials["customer-b-dev"])
    added = base + [{"name": "customer-c", "path": "/private/customer-c/", "read": [bob[0]], "upload": [bob[0]]}]
    pids = {index: host.check_output(f"systemctl show --value --property=MainPID pypiserver@{index}") for index in LAYOUT}

    rc, output, _ = run_playbook(name, project_playbook("site.yml"), {"pypi_indexes": added})
    assert rc == 0, output[-3000:]
    # Every check ran once: in site.yml's pre_tasks, not again inside the roles.
    assert output.count("preflight | Assert the host is one this role supports") == 1, output[-3000:]
    assert output.count("Assert the indexes have usable names, paths, ports, directories and rights") == 1
    assert host.service("pypiserver@customer-c").is_running
    # The indexes already there were not restarted.
    assert pids == {i: host.check_output(f"systemctl show --value --property=MainPID pypiserver@{i}") for i in LAYOUT}
    ver = version()
    wheel = host.check_output(f"/usr/local/bin/make_wheel.py cheeseshop-customer-c {ver} /var/tmp/customer-c-{ver}")
    host.check_output(
        f"TWINE_USERNAME={bob[0]} TWINE_PASSWORD='{bob[1]}' {test_vars['cheeseshop_test_client_venv']}/bin/twine "
        "upload --non-interactive --disable-progress-bar --cert /etc/pypi-tls/ca.crt "
        f"--repository-url https://localhost/private/customer-c/ {wheel}")
    assert https_status(host, "/private/customer-c/simple/cheeseshop-customer-c/", bob) == 200
    stored = f"/srv/pypi/indexes/customer-c/cheeseshop_customer_c-{ver}-py3-none-any.whl"
    checksum = host.file(stored).sha256sum
    user_files = [f"/etc/pypi-users/customer-c-{kind}.htpasswd" for kind in ("readers", "uploaders")]
    assert all(bob[0] + ":" in host.file(path).content_string for path in user_files)

    rc, output, _ = run_playbook(name, project_playbook("site.yml"))
    assert rc == 0, output[-3000:]
    assert "Index customer-c is no longer in pypi_indexes" in output and "not deleted" in output
    # The message names where this index's files are, as its unit said.
    assert "they stay in /srv/pypi/indexes/customer-c." in " ".join(output.split())
    service = host.service("pypiserver@customer-c")
    assert not service.is_running and not service.is_enabled
    assert host.file(stored).sha256sum == checksum
    # Who could read or upload there is not kept (#27, finding 8).
    assert not any(host.file(path).exists for path in user_files)
    assert https_status(host, "/private/customer-c/simple/", bob) == 404
    assert https_status(host, "/private/customer-b/simple/", bob) == 200

    # A removal done once: the roles that hold an index's state (its unit, pages, rights and
    # nginx's locations) find nothing left to do. (The others, unchanged by an index, are left out:
    # a full converge costs this scenario a minute and a half.)
    rc, output, _ = run_playbook(name, project_playbook("site.yml"), tags="pypiserver,pages,users,nginx_proxy")
    assert rc == 0 and "changed=0" in output, output[-3000:]


BAD_INDEXES = [
    # (pypi_indexes, text the error must contain)
    ([{"name": "public"}, {"name": "public", "path": "/other/"}], "'public' is used by more than one index"),
    # The unit tests of plugins/filter/indexes.py go through every other rule.
    ([{"name": "main"}, {"name": "public", "path": "/simple/"}], "overlapping paths '/' and '/simple/'"),
    ([{"name": "a", "read": ["nobody-by-this-name"]}], "'nobody-by-this-name', who is not a present user"),
    ([{"name": "Customer A"}], "index name 'Customer A' is not valid"),
]


@pytest.mark.parametrize("indexes,message", BAD_INDEXES, ids=[m for _, m in BAD_INDEXES])
def test_bad_index_list_is_refused_before_any_change(host, indexes, message):
    before = unit_state(host)
    rc, output, _ = run_playbook(host.backend.get_hostname(), project_playbook("site.yml"),
                                 {"pypi_indexes": indexes})
    assert rc == 2 and message in " ".join(output.split()), output[-3000:]
    assert "changed=0" in output, output[-3000:]
    assert unit_state(host) == before


def test_health_is_503_while_any_index_is_down_and_the_others_keep_serving(host):
    """/health is what a load balancer polls: a host that cannot serve one index is unhealthy."""
    assert https_status(host, "/health") == 200
    host.check_output("systemctl stop pypiserver@customer-b")
    try:
        assert https_status(host, "/health") == 503
        assert https_status(host, "/public/simple/") == 200
    finally:
        host.check_output("systemctl start pypiserver@customer-b")
    host.check_output("for i in $(seq 50); do curl -sf -o /dev/null --cacert /etc/pypi-tls/ca.crt "
                      "https://localhost/health && exit 0; sleep 0.2; done; exit 1")
