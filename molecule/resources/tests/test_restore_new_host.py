"""Restore onto a new host (#30): the indexes scenario's server is lost and a fresh host takes its
place. A fresh container from the server's image, on its network, with a data volume of its own;
site.yml with the server's inventory; then cheeseshop.pypi.restore with restore_overwrite, which
replaces what site.yml made differently. From the client container, the new host serves the same
packages (sha256) to the same users with their existing passwords, behind a certificate that
chains to the CA the client already trusts. A second converge of the new host changes nothing:
this scenario's proof that a rerun of site.yml is idempotent (it runs no molecule idempotence
step of its own).

The new host is made once for the module (a converge is the expensive part) and removed, with
its loop device, in the fixture's finalizer.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from types import SimpleNamespace

import pytest

from conftest import PROJECT, docker, listed_files, project_playbook, run_playbook, sha256_by_name, status
from test_backup import back_up, upload

testinfra_hosts = ["ansible://pypi_servers"]

NEW = "cheeseshop-indexes-new-host"
BYTECODE_CACHE = os.path.join(PROJECT, "molecule", "resources", "files", "cheeseshop_test_bytecode_cache.py")
# Who reads each index, as the indexes scenario's inventory gives the rights (None: anonymous).
READERS = {"/public/": None, "/private/customer-a/": "customer-a-ci", "/private/customer-b/": "customer-b-dev"}
PACKAGES = {"/public/": "/srv/pypi/indexes/public", "/private/customer-a/": "/srv/pypi/indexes/customer-a",
            "/private/customer-b/": "/srv/pypi/indexes/customer-b"}


@pytest.fixture(scope="module")
def client(host, test_vars):
    return host.get_host(f"ansible://{test_vars['groups']['clients'][0]}",
                         ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def downloaded(client, curl, files, user):
    """{file name: sha256 of the bytes served}, each file downloaded as the reader."""
    auth = f"-u {shlex.quote(user[0] + ':' + user[1])} " if user else ""
    names = sorted(files)
    script = "; ".join(f"{curl} -f {auth}{shlex.quote(files[name][1])} | sha256sum | cut -c1-64" for name in names)
    return dict(zip(names, client.check_output(script).split())) if names else {}


def make_host(backing, server):
    """A container like the scenario's server (resources/create.yml): same distribution, network and
    systemd options, and a fresh sparse loop device (on backing) as its data volume, at the
    server's path. Returns its address on the network."""
    subprocess.run(["truncate", "-s", "512M", backing], check=True)
    loop = subprocess.run(["losetup", "--find", "--show", backing], check=True, capture_output=True,
                          text=True).stdout.strip()
    info = json.loads(docker("inspect", server))[0]
    network = next(iter(info["NetworkSettings"]["Networks"]))
    with open(os.path.join(os.path.dirname(backing), "loop-devices.json")) as handle:
        path = next(entry["path"] for entry in json.load(handle)
                    if entry["platform"] == server and entry["name"] == "data")
    docker("run", "--detach", "--name", NEW, "--hostname", NEW, "--network", network,
           "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
           "--cgroupns", "host", "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run",
           "--tmpfs", "/run/lock", "--stop-signal", "SIGRTMIN+3", "--device", f"{loop}:{path}:rwm",
           # The bare image the server's -tools image was built from: a new host has none of the
           # test tooling, and site.yml installs all it needs.
           "--label", "owner=molecule", info["Config"]["Image"].replace("-tools:", ":"), "/lib/systemd/systemd")
    # But the bytecode cache of the -tools images (test tooling that changes no result): the new
    # host's two converges are this scenario's longest step, on CI's two shared cores.
    docker("cp", BYTECODE_CACHE, f"{NEW}:/usr/lib/python3/dist-packages/")
    docker("exec", NEW, "sh", "-c", "echo 'import cheeseshop_test_bytecode_cache' > "
           "/usr/lib/python3/dist-packages/cheeseshop-test-bytecode-cache.pth")
    # And the SSH server the tests reach every instance through (create.yml's ssh_config runs
    # `docker exec ... sshd -i`), masked first as in the -tools images: no service, no port.
    # Once booted: before, systemctl finds no bus, and apt's signature check fails while
    # systemd mounts /tmp under it.
    docker("exec", NEW, "sh", "-c", "for i in $(seq 150); do case $(systemctl is-system-running --wait 2>/dev/null) "
           "in running|degraded) break;; esac; sleep 0.2; done; systemctl mask ssh.service ssh.socket && "
           "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
           "openssh-server")
    docker("cp", os.path.join(os.path.dirname(backing), "ssh_key.pub"),
           f"{NEW}:/etc/ssh/cheeseshop-test-authorized-key")
    return json.loads(docker("inspect", NEW))[0]["NetworkSettings"]["Networks"][network]["IPAddress"]


def remove_host(backing):
    """The container, then every loop device on backing (found by its file, as destroy.yml
    does, also after a make_host that failed half-way), then the file."""
    subprocess.run(["docker", "rm", "--force", NEW], capture_output=True, check=False)
    if os.path.exists(backing):
        attached = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME", "--associated", backing],
                                  capture_output=True, text=True, check=False).stdout.split()
        for loop in attached:
            subprocess.run(["losetup", "--detach", loop], check=False)
        os.unlink(backing)


def write_inventory(directory, server, ca_copy):
    """The new host's inventory: the server's group_vars and host_vars (the same indexes, users,
    vault and repository), as an operator's inventory gives them to a replacement host."""
    os.symlink(os.path.join(PROJECT, "molecule", "resources", "inventory", "group_vars"),
               os.path.join(directory, "group_vars"))
    os.makedirs(os.path.join(directory, "host_vars"))
    os.symlink(os.path.join(PROJECT, "molecule", "indexes", "inventory", "host_vars", server),
               os.path.join(directory, "host_vars", NEW))
    inventory = os.path.join(directory, "hosts.yml")
    with open(inventory, "w") as handle:
        json.dump({"pypi_servers": {"hosts": {NEW: {
            # Over SSH, as the scenario's instances (.config/molecule/config.yml).
            "ansible_connection": "ssh",
            "ansible_ssh_common_args": "-F " + os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "ssh_config"),
            # The name clients use moves to the new host (a DNS change), as pypi_server_name says
            # in an operator's inventory; the scenario's server has it from its inventory name.
            "pypi_server_name": server,
            # Test tooling: the CA it hands out lands here, not over the scenario's copy.
            "nginx_proxy_tls_ca_fetch_path": ca_copy,
            # A server: no test clients on it (what site.yml needs, it installs).
            "cheeseshop_install_test_clients": False}}}}, handle)
    return inventory


@pytest.fixture(scope="module")
def new_host(host, client, test_vars, credentials):
    server = host.backend.get_hostname()
    state_dir = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
    ca = test_vars["cheeseshop_client_ca"]
    curl = f"curl -s --cacert {ca}"
    fresh = [upload(host, test_vars, credentials, "/public/", "release-bot"),
             upload(host, test_vars, credentials, "/private/customer-a/", "customer-a-dev")]
    snapshot = back_up(host)["snapshot_id"]
    readers = {index: (user, credentials[user]) if user else None for index, user in READERS.items()}
    # The packages as the old server holds them when it is backed up: {file name: sha256}, the
    # uploads being written aside. (Its pages are not the reference: another test changes a
    # file behind their back.)
    before = {index: sha256_by_name(host, PACKAGES[index]) for index in READERS}
    assert fresh[0][2] in before["/public/"] and fresh[1][2] in before["/private/customer-a/"], before
    workdir = tempfile.mkdtemp(prefix="cheeseshop-new-host-")
    # In the scenario's directory: destroy.yml detaches it too, should this run be killed.
    backing = os.path.join(state_dir, f"{NEW}-data.img")
    remove_host(backing)
    try:
        address = make_host(backing, server)
        ca_copy = os.path.join(workdir, "pypi-ca.crt")
        inventory = write_inventory(workdir, server, ca_copy)
        rc, output, _ = run_playbook(NEW, os.path.join(PROJECT, "molecule", "resources", "prepare.yml"),
                                     inventory=inventory)
        assert rc == 0, output[-3000:]
        # The repository is a local path on the old server. Copied into the new host, it stands
        # for an S3 bucket both hosts reach (backup_repository: s3:...): the same repository,
        # found by the new host's site.yml, not initialised.
        source = subprocess.Popen(["docker", "exec", server, "tar", "-C", "/var/backups", "-c", "cheeseshop-pypi"],
                                  stdout=subprocess.PIPE)
        subprocess.run(["docker", "exec", "-i", NEW, "tar", "-C", "/var/backups", "-x"], stdin=source.stdout,
                       check=True, timeout=300)
        assert source.wait() == 0

        # As docs/backup.md says: the mirror syncs after the restore, when the restored indexes
        # say which names are private.
        rc, output, _ = run_playbook(NEW, project_playbook("site.yml"), inventory=inventory, skip_tags="mirror")
        assert rc == 0, output[-3000:]
        # Nothing was mirrored yet: with its private indexes still empty, a sync here would take
        # any private name that upstream offers too (the restore adds files, it removes none).
        mirrored = docker("exec", NEW, "find", "/srv/pypi/indexes/pypi-mirror", "-maxdepth", "1", "-type", "f",
                          "-not", "-name", ".*")
        assert mirrored.split() == [], mirrored
        # A host of its own so far: site.yml made it a CA, which the restore must replace.
        with open(ca_copy) as handle:
            own_ca = handle.read()
        rc, output, _ = run_playbook(NEW, project_playbook("restore.yml"), {"restore_overwrite": True},
                                     inventory=inventory)
        text = " ".join(output.split())
        assert rc == 0 and f"From snapshot {snapshot[:8]}" in text and f"host {server})" in text, output[-4000:]
        # restore_overwrite replaced what site.yml had made differently (its own CA, key and
        # certificate at least) and kept nothing that differs.
        replaced = re.search(r"(\d+) replaced, \d+ already as in the snapshot, (\d+) kept although they differ", text)
        assert replaced and int(replaced[1]) >= 3 and replaced[2] == "0", output[-4000:]
        yield SimpleNamespace(server=server, inventory=inventory, before=before, readers=readers, own_ca=own_ca,
                              ca_copy=ca_copy, curl=f"{curl} --resolve {server}:443:{address}")
    finally:
        remove_host(backing)
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_new_host_serves_the_same_packages_to_the_same_users(new_host, client, credentials):
    for index, reader in new_host.readers.items():
        files = listed_files(client, new_host.curl, f"https://{new_host.server}{index}", reader)
        assert {name: sha for name, (sha, _) in files.items()} == new_host.before[index], index
        assert downloaded(client, new_host.curl, files, reader) == new_host.before[index], index
    base = f"https://{new_host.server}/private/customer-a/simple/"
    # The same rights: no one else reads a private index (another index's user neither: 403),
    # nor a reader with a wrong password.
    assert status(client, new_host.curl, base) == 401
    assert status(client, new_host.curl, base, ("customer-a-ci", "not-the-password")) == 401
    assert status(client, new_host.curl, base, ("customer-b-dev", credentials["customer-b-dev"])) == 403


def test_the_new_host_has_the_ca_the_clients_already_trust(new_host, client, test_vars):
    """curl trusts only the client's CA: the served chain ends there. And the CA the host now
    hands out is that one, not the one its first converge made."""
    ca = client.file(test_vars["cheeseshop_client_ca"]).content_string
    assert new_host.own_ca != ca
    with open(new_host.ca_copy) as handle:
        assert handle.read() == ca
    run = client.run(f"{new_host.curl} -o /dev/null -w '%{{http_code}}' https://{new_host.server}/public/simple/")
    assert run.rc == 0 and run.stdout == "200", run.stdout + run.stderr


def test_a_second_converge_of_the_new_host_changes_nothing(new_host):
    rc, output, _ = run_playbook(NEW, project_playbook("site.yml"), inventory=new_host.inventory)
    assert rc == 0 and "changed=0" in output, output[-4000:]
