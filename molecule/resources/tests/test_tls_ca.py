"""selfsigned mode with the CA in vault: the controller signs, the CA key never reaches the host.

The debian13 scenario's server has such a CA (molecule/debian13/inventory/host_vars/, made by
the cheeseshop.pypi.tls_ca playbook with the TEST-ONLY vault password). These tests run on the
client, which holds nothing but the fetched CA certificate.
"""
import os
import subprocess

import pytest
import yaml

from conftest import VAULT_PASSWORD_FILE, project_playbook, run_playbook

testinfra_hosts = ["ansible://clients"]

SCENARIO_CA_VAULT = os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "inventory", "host_vars",
                                 "cheeseshop-debian13-server", "tls_ca.vault.yml")
TLS_DIR = "/etc/pypi-tls"


@pytest.fixture(scope="module")
def vault_ca():
    """The scenario's CA as the vault holds it (decrypted with the test-only password)."""
    out = subprocess.run(["ansible-vault", "view", "--vault-password-file", VAULT_PASSWORD_FILE, SCENARIO_CA_VAULT],
                         capture_output=True, text=True, check=True).stdout
    return yaml.safe_load(out)


@pytest.fixture(scope="module")
def server_host(host, server):
    return host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def verifies(host, server, ca_path):
    """The served chain, checked by OpenSSL against one CA file on the client."""
    run = host.run(f"openssl s_client -connect {server}:443 -servername {server} -CAfile {ca_path} "
                   "-verify_return_error </dev/null")
    return run.rc == 0 and "Verify return code: 0 (ok)" in run.stdout


def served_serial(host, server):
    return host.check_output(f"openssl s_client -connect {server}:443 -servername {server} </dev/null "
                             "2>/dev/null | openssl x509 -noout -serial")


def test_ca_key_never_reaches_the_host(host, server, ca, server_host, vault_ca):
    assert not server_host.file(f"{TLS_DIR}/ca.key").exists
    assert not server_host.file(f"{TLS_DIR}/ca.csr").exists
    # The host keeps the public certificate, the one from vault, for its health check.
    assert server_host.file(f"{TLS_DIR}/ca.crt").content_string.strip() == vault_ca[
        "nginx_proxy_tls_ca_certificate"].strip()
    assert host.file(ca).content_string.strip() == vault_ca["nginx_proxy_tls_ca_certificate"].strip()
    assert verifies(host, server, ca)


def test_name_constraints_keep_the_ca_to_the_servers_names(server, vault_ca, tmp_path):
    """A certificate this CA signs for any other name fails verification: a stolen CA key, or a
    client that trusts the CA system-wide, cannot be turned against other sites."""
    (tmp_path / "ca.crt").write_text(vault_ca["nginx_proxy_tls_ca_certificate"])
    (tmp_path / "ca.key").write_text(vault_ca["nginx_proxy_tls_ca_private_key"])
    os.chmod(tmp_path / "ca.key", 0o600)
    results = {}
    for name in (server, "evil.example"):
        ext = tmp_path / f"{name}.cnf"
        ext.write_text(f"subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", tmp_path / f"{name}.key", "-out", tmp_path / f"{name}.csr", "-subj", f"/CN={name}"],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", tmp_path / f"{name}.csr", "-CA", tmp_path / "ca.crt",
                        "-CAkey", tmp_path / "ca.key", "-CAcreateserial", "-out", tmp_path / f"{name}.crt",
                        "-days", "1", "-extfile", ext], check=True, capture_output=True)
        results[name] = subprocess.run(["openssl", "verify", "-CAfile", tmp_path / "ca.crt", tmp_path / f"{name}.crt"],
                                       capture_output=True, text=True, check=False)
    assert results[server].returncode == 0, results[server].stdout + results[server].stderr
    assert results["evil.example"].returncode != 0
    assert "permitted subtree violation" in results["evil.example"].stdout + results["evil.example"].stderr


def test_signing_on_the_controller_prints_no_key_even_at_vvv(server, vault_ca):
    rc, output, _ = run_playbook(server, project_playbook("site.yml"), {"nginx_proxy_tls_renew_days": 400},
                                 verbosity=3, tags="tls")
    assert rc == 0 and "Sign the server certificate on the controller" in output, output[-3000:]
    for line in vault_ca["nginx_proxy_tls_ca_private_key"].strip().splitlines()[1:-1]:
        assert line not in output


def test_host_made_ca_is_taken_over_and_its_key_leaves_the_host(host, server, ca, server_host, vault_ca, tmp_path):
    """An install from before (the host made its CA and kept its key) hands over to vault:
    clients that trust the host's CA keep trusting the server, and the key leaves the host."""
    no_vault_ca = {"nginx_proxy_tls_ca_certificate": "", "nginx_proxy_tls_ca_private_key": ""}
    try:
        rc, output, _ = run_playbook(server, project_playbook("site.yml"), no_vault_ca, tags="tls")
        assert rc == 0, output[-3000:]
        assert server_host.file(f"{TLS_DIR}/ca.key").exists
        old_ca = server_host.file(f"{TLS_DIR}/ca.crt").content_string
        host.check_output("mkdir -p /var/tmp/takeover")
        host.check_output(f"cat > /var/tmp/takeover/ca.crt <<'EOF'\n{old_ca}\nEOF")
        assert verifies(host, server, "/var/tmp/takeover/ca.crt")
        serial = served_serial(host, server)

        # The vault's CA would leave those clients stranded: refused, and nothing changes.
        rc, output, _ = run_playbook(server, project_playbook("site.yml"), tags="tls")
        assert rc == 2 and "already has a different CA" in " ".join(output.split()), output[-3000:]
        assert "Nothing was changed" in output
        assert server_host.file(f"{TLS_DIR}/ca.key").exists and served_serial(host, server) == serial

        # Take the host's CA over into a vault file of its own; never overwrite one.
        taken = tmp_path / "tls_ca.vault.yml"
        takeover = {"tls_ca_from_host": server, "tls_ca_vault_file": str(taken),
                    "tls_ca_vault_password_file": VAULT_PASSWORD_FILE}
        rc, output, _ = run_playbook(server, project_playbook("tls_ca.yml"), takeover)
        assert rc == 0, output[-3000:]
        assert taken.read_text().startswith("$ANSIBLE_VAULT;") and "PRIVATE KEY" not in taken.read_text()
        assert oct(taken.stat().st_mode & 0o777) == "0o600"
        rc, output, _ = run_playbook(server, project_playbook("tls_ca.yml"), takeover)
        assert rc == 2 and "must not exist yet" in " ".join(output.split()), output[-3000:]

        taken_vars = yaml.safe_load(subprocess.run(
            ["ansible-vault", "view", "--vault-password-file", VAULT_PASSWORD_FILE, taken],
            capture_output=True, text=True, check=True).stdout)
        rc, output, _ = run_playbook(server, project_playbook("site.yml"), taken_vars, tags="tls")
        assert rc == 0, output[-3000:]
        assert not server_host.file(f"{TLS_DIR}/ca.key").exists
        # The same certificate is served: nothing was re-signed, no client notices.
        assert served_serial(host, server) == serial and verifies(host, server, "/var/tmp/takeover/ca.crt")
        rc, output, _ = run_playbook(server, project_playbook("site.yml"), taken_vars, tags="tls")
        assert rc == 0 and "changed=0" in output, output[-3000:]
    finally:
        # Back to the scenario's CA, replacing the taken-over one on purpose.
        rc, output, _ = run_playbook(server, project_playbook("site.yml"), {"nginx_proxy_tls_ca_replace": True},
                                     tags="tls")
        assert rc == 0, output[-3000:]
        host.run("rm -rf /var/tmp/takeover")
    assert verifies(host, server, ca)
    assert not server_host.file(f"{TLS_DIR}/ca.key").exists
    rc, output, _ = run_playbook(server, project_playbook("site.yml"), tags="tls")
    assert rc == 0 and "changed=0" in output, output[-3000:]
