"""Unit tests of the minting service (roles/trusted_publishing/files/cheeseshop-oidc): what a job's
token must be to mint, over its real HTTP handler on a unix socket, with keys given inline as a
closed network gives them. The wire test (molecule/resources/tests/test_trusted_publishing.py)
has uv fetch them from a stand-in issuer."""
import hashlib
import hmac
import http.client
import json
import socket
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import load_program

# The page service's client the role installs beside it.
oidc = load_program("trusted_publishing", "cheeseshop-oidc")

ISSUER = "https://ci.example.test"
AUDIENCE = "pypi.example.test"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWK = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key())), "kid": "k1", "alg": "RS256", "use": "sig"}
CLAIMS = {"repository": "acme/widgets", "job_workflow_ref": "acme/widgets/.github/workflows/release.yml@refs/tags/v1",
          "ref": "refs/tags/v1"}


def job_token(key=KEY, **changes):
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300, "jti": f"j{time.time_ns()}",
              **CLAIMS, **changes}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="RS256",
                      headers={"kid": "k1"})


@pytest.fixture
def served(tmp_path, pages_socket):
    """The service on a unix socket, as systemd and nginx run it; records the audit lines."""
    key = tmp_path / "main.key"
    key.write_text("ab" * 32 + "\n")
    audit_socket, lines = pages_socket
    config = {"socket": str(tmp_path / "oidc.sock"), "audience": AUDIENCE, "pages_socket": str(audit_socket),
              "publishers": [{"name": "widgets", "index": "main", "issuer": ISSUER, "minutes": 5,
                              "claims": {"repository": "acme/widgets",
                                         "job_workflow_ref": "acme/widgets/.github/workflows/release.yml@refs/tags/*"}}],
              "issuers": [{"issuer": ISSUER, "jwks": {"keys": [JWK]}}],
              "indexes": [{"name": "main", "key_file": str(key)}]}
    server = oidc.Server(config["socket"], oidc.Handler)
    server.minter = oidc.Minter(config)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield config, lines
    server.shutdown()


def request(config, method, path, body=None):
    class Connection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(config["socket"])
    connection = Connection("localhost")
    connection.request(method, path, body=body, headers={"X-Real-IP": "192.0.2.9"})
    answer = connection.getresponse()
    return answer.status, json.loads(answer.read())


def test_the_audience_is_the_server_s_own(served):
    assert request(served[0], "GET", "/_/oidc/audience") == (200, {"audience": AUDIENCE})


def test_a_matching_job_gets_a_token_of_minutes_for_its_index_and_an_audit_line(served):
    config, lines = served
    status, body = request(config, "POST", "/_/oidc/mint-token", json.dumps({"token": job_token()}))
    assert status == 200 and body["success"] is True, body
    name, secret = body["token"][len("cheeseshop_"):].rsplit(".", 1)
    assert hmac.compare_digest(secret, hmac.new(b"ab" * 32, name.encode(), hashlib.sha256).hexdigest())
    publisher, expires, nonce = name[len("oidc-"):].rsplit("-", 2)
    assert publisher == "widgets" and int(expires) == body["expires"]
    assert 290 <= body["expires"] - time.time() <= 300 and len(nonce) == 8
    (line,) = lines
    assert line.startswith("audit main ")
    fields = json.loads(line[len("audit main "):])
    assert fields["identity"] == f"token:{name}" and fields["action"] == "mint" and fields["address"] == "192.0.2.9"
    assert "repository=acme/widgets" in fields["result"] and secret not in line


@pytest.mark.parametrize("token,code,description", [
    (lambda: job_token(repository="evil/widgets"), "invalid-publisher", "no publisher of this index matches"),
    (lambda: job_token(job_workflow_ref="acme/widgets/.github/workflows/other.yml@refs/tags/v1"),
     "invalid-publisher", "no publisher"),
    (lambda: job_token(exp=int(time.time()) - 120, iat=int(time.time()) - 600, nbf=None), "invalid-token", "expired"),
    (lambda: job_token(aud="pypi"), "invalid-token", "audience"),
    (lambda: job_token(key=OTHER_KEY), "invalid-token", "signature"),
    (lambda: job_token(iss="https://elsewhere.example"), "invalid-publisher", "no publisher trusts the issuer"),
    (lambda: "not.a.jwt", "invalid-token", "not a JWT"),
], ids=["other-repository", "other-workflow", "expired", "wrong-audience", "bad-signature", "other-issuer", "junk"])
def test_each_bad_job_token_is_refused_with_pypi_s_error_shape(served, token, code, description):
    config, lines = served
    status, body = request(config, "POST", "/_/oidc/mint-token", json.dumps({"token": token()}))
    assert status == 422, body
    (error,) = body["errors"]
    assert error["code"] == code and description in error["description"], body
    assert lines == []


def test_a_job_token_mints_once(served):
    token = job_token()
    assert request(served[0], "POST", "/_/oidc/mint-token", json.dumps({"token": token}))[0] == 200
    status, body = request(served[0], "POST", "/_/oidc/mint-token", json.dumps({"token": token}))
    assert status == 422 and "used before" in body["errors"][0]["description"]


def test_an_unsigned_token_is_refused():
    """alg none (or HS256 with the public key as its secret) never passes."""
    config = {"audience": AUDIENCE, "publishers": [], "issuers": [{"issuer": ISSUER, "jwks": {"keys": [JWK]}}],
              "indexes": []}
    minter = oidc.Minter(config)
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60, "iat": int(time.time())},
                          None, algorithm="none")
    with pytest.raises(oidc.Refused, match="algorithm"):
        minter.verify(unsigned)
    forged = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60, "iat": int(time.time())},
                        "s" * 32, algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(oidc.Refused, match="algorithm"):
        minter.verify(forged)


def test_a_bad_body_is_refused(served):
    config, _ = served
    assert request(config, "POST", "/_/oidc/mint-token", "{}")[0] == 422
    assert request(config, "POST", "/_/oidc/mint-token", "x" * 20000)[0] == 400
    assert request(config, "GET", "/_/oidc/other")[0] == 404
