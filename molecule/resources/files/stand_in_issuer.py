#!/usr/bin/env python3
"""TEST TOOLING: a stand-in for a CI system's OIDC issuer (GitHub Actions' token service), for the
trusted publishing tests (test_trusted_publishing.py). Nothing here is part of the product.

Over HTTPS on PORT, with the client's test certificate (the one pebble's listener uses, which
the servers trust), what the index's minting service fetches:
  GET /.well-known/openid-configuration    {"issuer", "jwks_uri"}
  GET /.well-known/jwks                    the signing key's public half
Over plain HTTP on PORT + 1, what a job's runner asks (GitHub's is another host than the issuer;
uv refuses pebble's self-signed certificate as a server's, so the job side stays plain here):
  GET /token?audience=A[&claim=value...]   {"value": <job token>}: what uv asks
                                           ACTIONS_ID_TOKEN_REQUEST_URL for, with a bearer token
The job token's claims are GitHub's for acme/widgets' release workflow on a tag, unless the
query overrides one: repository=, job_workflow_ref=, ref=, aud= (instead of the audience
asked for), expired=1 (expired ten minutes ago), sign=other (a key the key set does not have).

  stand_in_issuer.py PORT CERT KEY ISSUER-URL
"""
import hashlib
import http.server
import json
import ssl
import sys
import threading
import time
import urllib.parse
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

PORT, CERT, KEY, ISSUER = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
SIGNING = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(SIGNING.public_key()))
# A new key at every start, with a key id of its own, as an issuer rotates: the index fetches the
# key set again for a key id it has not seen.
KID = hashlib.sha256(PUBLIC["n"].encode()).hexdigest()[:16]
JWK = {**PUBLIC, "kid": KID, "alg": "RS256", "use": "sig"}


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/.well-known/openid-configuration":
            return self.reply({"issuer": ISSUER, "jwks_uri": ISSUER + "/.well-known/jwks"})
        if url.path == "/.well-known/jwks":
            return self.reply({"keys": [JWK]})
        if url.path != "/token" or not self.headers.get("Authorization", "").lower().startswith("bearer "):
            return self.reply({"message": "not found"}, 404)
        query = dict(urllib.parse.parse_qsl(url.query))
        now = int(time.time()) - (600 if query.get("expired") else 0)
        claims = {"iss": ISSUER, "aud": query.get("aud") or query.get("audience"), "iat": now, "nbf": now,
                  "exp": now + 300, "jti": str(uuid.uuid4()), "sub": "repo:acme/widgets:ref:refs/tags/v1",
                  "repository": "acme/widgets", "repository_owner": "acme",
                  "job_workflow_ref": "acme/widgets/.github/workflows/release.yml@refs/tags/v1",
                  "ref": "refs/tags/v1", "event_name": "push"}
        claims.update({k: v for k, v in query.items() if k in ("repository", "job_workflow_ref", "ref")})
        key = OTHER if query.get("sign") == "other" else SIGNING
        return self.reply({"value": jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})})

    def log_message(self, format, *args):  # noqa: A002
        sys.stderr.write("stand-in issuer: " + format % args + "\n")


runner = http.server.ThreadingHTTPServer(("", PORT + 1), Handler)
threading.Thread(target=runner.serve_forever, daemon=True).start()
server = http.server.ThreadingHTTPServer(("", PORT), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
