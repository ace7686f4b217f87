"""Trusted publishing over the wire, from the client container (molecule/indexes): real `uv publish`
as a GitHub Actions job would run it, its job tokens signed by the stand-in issuer on the client
(prepare.yml, files/stand_in_issuer.py), whose keys the server's minting service fetches over
HTTPS. The publisher (host_vars): acme/widgets' release workflow on a tag uploads to customer-a.
"""
import hashlib
import hmac
import json
import os
import shlex
import time

import pytest

from conftest import client_wheel, https_upload, status, twine_status, version

testinfra_hosts = ["ansible://clients"]

CUSTOMER_A = "/private/customer-a/"
AUDIT_LOG = "/var/log/cheeseshop-pypi/audit.log"


@pytest.fixture(scope="module")
def runner(test_vars):
    """Where a job asks for its token: the stand-in issuer's plain port on this client (its HTTPS
    port, host_vars of the client, serves the key set to the server; prepare.yml)."""
    return f"http://{test_vars['inventory_hostname']}:{test_vars['cheeseshop_test_issuer_port'] + 1}"


def uv_publish(host, test_vars, server, ca, runner, wheel, query=""):
    """`uv publish` as in a GitHub Actions job with `id-token: write`: the runtime's token URL and
    request token are the stand-in issuer's."""
    uv = f"{test_vars['cheeseshop_test_client_venv']}/bin/uv"
    env = (f"GITHUB_ACTIONS=true ACTIONS_ID_TOKEN_REQUEST_URL={shlex.quote(runner + '/token?runner=1' + query)} "
           f"ACTIONS_ID_TOKEN_REQUEST_TOKEN=stand-in-request-token SSL_CERT_FILE={ca}")
    return host.run(f"{env} {uv} publish --trusted-publishing always --publish-url https://{server}{CUSTOMER_A} "
                    f"{shlex.quote(wheel)}")


def audit_lines(server_host):
    return [json.loads(line) for line in server_host.file(AUDIT_LOG).content_string.splitlines()]


def test_the_audience_is_served_and_nothing_else_of_oidc(host, server, curl):
    answer = json.loads(host.check_output(f"{curl} https://{server}/_/oidc/audience"))
    assert answer["audience"]
    assert status(host, curl, f"https://{server}/_/oidc/other") == 404
    assert status(host, curl, f"https://{server}/_/oidc/audience", extra=" -X POST") == 403


def test_uv_publishes_with_no_stored_secret(host, server_host, test_vars, server, ca, runner):
    wheel = client_wheel(host, "cheeseshop-published-widget", version())
    run = uv_publish(host, test_vars, server, ca, runner, wheel)
    assert run.rc == 0, run.stdout + run.stderr
    filename = os.path.basename(wheel)
    (stored,) = [line for line in audit_lines(server_host) if line.get("file") == filename]
    minted = stored["identity"][len("token:"):]
    assert stored["identity"].startswith("token:oidc-widgets-release-") and stored["result"] == "stored"
    (mint,) = [line for line in audit_lines(server_host) if line["identity"] == stored["identity"] and
               line["action"] == "mint"]
    assert mint["index"] == "customer-a" and "repository=acme/widgets" in mint["result"], mint
    assert minted in mint["identity"]


@pytest.mark.parametrize("query,refusal", [
    ("&repository=evil/widgets", "no publisher of this index matches"),
    ("&job_workflow_ref=acme/widgets/.github/workflows/ci.yml@refs/heads/main", "no publisher of this index matches"),
    ("&expired=1", "the token has expired"),
    ("&aud=pypi", "audience"),
    ("&sign=other", "signature does not verify"),
], ids=["other-repository", "other-workflow", "expired", "wrong-audience", "bad-signature"])
def test_a_bad_job_token_is_refused(host, server_host, test_vars, server, ca, runner, query, refusal):
    wheel = client_wheel(host, "cheeseshop-published-widget", version())
    run = uv_publish(host, test_vars, server, ca, runner, wheel, query)
    assert run.rc != 0 and "422" in run.stdout + run.stderr and refusal in run.stdout + run.stderr, \
        run.stdout + run.stderr
    assert not [line for line in audit_lines(server_host) if line.get("file") == os.path.basename(wheel)]


def mint(host, server, runner, curl):
    audience = json.loads(host.check_output(f"{curl} https://{server}/_/oidc/audience"))["audience"]
    job = json.loads(host.check_output(
        f"curl -s -H 'Authorization: bearer x' {shlex.quote(runner + '/token?audience=' + audience)}"))["value"]
    return json.loads(host.check_output(f"{curl} -X POST --data-binary {shlex.quote(json.dumps({'token': job}))} "
                                        f"https://{server}/_/oidc/mint-token"))


def test_a_minted_token_is_for_its_index_its_projects_and_minutes(host, server_host, test_vars, server, ca, curl,
                                                                  runner):
    minted = mint(host, server, runner, curl)
    assert minted["success"] is True and 295 <= minted["expires"] - time.time() <= 300, minted
    token = ("__token__", minted["token"])
    assert status(host, curl, f"https://{server}{CUSTOMER_A}simple/", token) == 200
    assert status(host, curl, f"https://{server}/private/customer-b/simple/", token) == 401
    # Owners: the publisher's projects only.
    owned = https_upload(host, test_vars, server, ca, client_wheel(host, "cheeseshop-owned-minted", version()), token,
                         CUSTOMER_A)
    assert owned.rc != 0 and twine_status(owned) == 403, owned.stdout + owned.stderr
    # Its expiry is in its name and signed with it: a name past its time is refused by nginx and
    # pypiserver alike, right secret or not (made here with the server's key, as no client can).
    key = server_host.check_output("cat /etc/pypi-users/customer-a-minted.key").strip().encode()
    name = f"oidc-widgets-release-{int(time.time()) - 1}-0badc0de"
    expired = ("__token__", f"cheeseshop_{name}.{hmac.new(key, name.encode(), hashlib.sha256).hexdigest()}")
    assert status(host, curl, f"https://{server}{CUSTOMER_A}simple/", expired) == 401
    run = https_upload(host, test_vars, server, ca, client_wheel(host, "cheeseshop-published-late", version()),
                       expired, CUSTOMER_A)
    assert run.rc != 0 and twine_status(run) == 401, run.stdout + run.stderr
    # Within its time, the same key makes a token that passes: the refusal above is the expiry's.
    name = f"oidc-widgets-release-{int(time.time()) + 60}-0badc0de"
    fresh = ("__token__", f"cheeseshop_{name}.{hmac.new(key, name.encode(), hashlib.sha256).hexdigest()}")
    assert status(host, curl, f"https://{server}{CUSTOMER_A}simple/", fresh) == 200
