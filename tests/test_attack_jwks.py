"""Issue 9, finding 3: JWKS mode answered 500s (and two tracebacks) to anyone with an algorithm/key mismatch,
and those failures were never charged to the rate limit.

A real JWKS on 127.0.0.1 serves an RSA, a P-256 and an Ed25519 key; tokens are signed with real keys whose
header names another key's ``kid``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi.testclient import TestClient

from gocare_voice.settings import Settings
from gocare_voice.token_service.app import create_app
from gocare_voice.token_service.auth import algorithms_for_key

KEYS = {
    "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "p256": ec.generate_private_key(ec.SECP256R1()),
    "p384": ec.generate_private_key(ec.SECP384R1()),
    "ed": ed25519.Ed25519PrivateKey.generate(),
}


def _jwk(name: str) -> dict[str, object]:
    public = KEYS[name].public_key()
    algorithm = {"rsa": jwt.algorithms.RSAAlgorithm, "p256": jwt.algorithms.ECAlgorithm,
                 "ed": jwt.algorithms.OKPAlgorithm}[name]
    return {**json.loads(algorithm.to_jwk(public)), "kid": name, "use": "sig"}


class _Jwks:
    def __init__(self, body: bytes) -> None:
        self.body = body
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def jwks() -> Iterator[_Jwks]:
    served = _Jwks(json.dumps({"keys": [_jwk("rsa"), _jwk("p256"), _jwk("ed")]}).encode())
    yield served
    served.server.shutdown()


def token(*, signer: str, alg: str, kid: str, sub: str = "user-1") -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, KEYS[signer], algorithm=alg, headers={"kid": kid})


MISMATCHES = [
    ("p256", "ES256", "rsa"),  # ES256 on an RSA key's kid
    ("rsa", "RS256", "p256"),  # RS256 on an EC key
    ("ed", "EdDSA", "rsa"),  # EdDSA on RSA
    ("p384", "ES384", "p256"),  # ES384 on P-256
    ("rsa", "PS256", "ed"),  # PS256 on Ed25519
    ("p256", "ES256", "ed"),
]


@pytest.mark.parametrize(("signer", "alg", "kid"), MISMATCHES)
def test_algorithm_key_mismatch_is_401_without_traceback(jwks, caplog, signer: str, alg: str, kid: str) -> None:
    with TestClient(create_app(Settings(auth_mode="jwt", auth_jwks_url=jwks.url, rate_limit="off"))) as c:
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            r = c.post("/getToken", json={}, headers={"Authorization": f"Bearer {token(signer=signer, alg=alg, kid=kid)}"})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"
    assert not [rec for rec in caplog.records if rec.exc_info], "no traceback in the log"
    assert sum(len(rec.getMessage()) for rec in caplog.records) < 2000


@pytest.mark.parametrize(("signer", "alg", "kid"), [("rsa", "RS256", "rsa"), ("rsa", "PS384", "rsa"),
                                                     ("p256", "ES256", "p256"), ("ed", "EdDSA", "ed")])
def test_matching_algorithms_still_work(jwks, signer: str, alg: str, kid: str) -> None:
    with TestClient(create_app(Settings(auth_mode="jwt", auth_jwks_url=jwks.url, rate_limit="off"))) as c:
        r = c.post("/getToken", json={}, headers={"Authorization": f"Bearer {token(signer=signer, alg=alg, kid=kid)}"})
    assert r.status_code == 200, r.text


def test_only_algorithms_of_the_keys_family_are_tried() -> None:
    assert algorithms_for_key(_jwk("rsa")) == ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    assert algorithms_for_key(_jwk("p256")) == ("ES256",)
    assert algorithms_for_key(_jwk("ed")) == ("EdDSA",)
    assert algorithms_for_key({**_jwk("rsa"), "alg": "RS512"}) == ("RS512",)
    assert algorithms_for_key({**_jwk("rsa"), "alg": "ES256"}) == ()  # a JWK pinning a foreign alg: nothing
    assert algorithms_for_key({"kty": "oct", "k": "c2VjcmV0"}) == ()  # no shared secrets through a JWKS
    assert algorithms_for_key({"kty": ["RSA"], "crv": {}}) == ()


@pytest.mark.parametrize("bad", [
    "Bearer x.y.z", "Bearer " + "a" * 5000, "Bearer eyJhbGciOlsiUlMyNTYiXSwia2lkIjoicnNhIn0.e30.c2ln",  # alg: list
    "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6WzFdfQ.e30.c2ln",  # kid: [1]
])
def test_malformed_tokens_are_401(jwks, bad: str) -> None:
    with TestClient(create_app(Settings(auth_mode="jwt", auth_jwks_url=jwks.url, rate_limit="off"))) as c:
        r = c.post("/getToken", json={}, headers={"Authorization": bad})
    assert r.status_code == 401, r.text


def test_every_failure_is_charged_to_the_rate_limit(jwks) -> None:
    settings = Settings(auth_mode="jwt", auth_jwks_url=jwks.url, rate_limit="3/minute")
    bad = token(signer="p256", alg="ES256", kid="rsa")
    with TestClient(create_app(settings)) as c:
        codes = [c.post("/getToken", json={}, headers={"Authorization": f"Bearer {bad}"}).status_code
                 for _ in range(4)]
    assert codes == [401, 401, 401, 429]


def test_jwks_down_is_503_auth_unavailable_and_charged() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(auth_mode="jwt", auth_jwks_url=f"http://127.0.0.1:{port}/jwks.json", rate_limit="2/minute")
    with TestClient(create_app(settings)) as c:
        answers = [c.post("/getToken", json={}, headers={"Authorization": f"Bearer {token(signer='rsa', alg='RS256', kid='rsa')}"})
                   for _ in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 429]
    assert answers[0].json()["error"] == "auth_unavailable"


def test_jwks_answering_garbage_is_503() -> None:
    served = _Jwks(b"[1, 2, 3]")
    try:
        with TestClient(create_app(Settings(auth_mode="jwt", auth_jwks_url=served.url, rate_limit="off"))) as c:
            r = c.post("/getToken", json={}, headers={"Authorization": f"Bearer {token(signer='rsa', alg='RS256', kid='rsa')}"})
        assert r.status_code == 503 and r.json()["error"] == "auth_unavailable"
    finally:
        served.server.shutdown()
