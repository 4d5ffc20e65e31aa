"""DPoP proofs (RFC 9449) and nonce handling."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from appview.auth.oauth.dpop import DpopKey, NonceCache, error_code, htu, response_origin, wants_nonce

pytestmark = pytest.mark.unit


def header_of(token: str) -> dict[str, object]:
    part = token.split(".", maxsplit=1)[0]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def test_proof_claims_and_signature() -> None:
    key = DpopKey.generate()
    proof = key.proof("post", "https://pds.example.com/xrpc/x?a=1#frag", nonce="n1", access_token="tok", now=1000)
    header = header_of(proof)
    assert header["typ"] == "dpop+jwt" and header["alg"] == "ES256"
    assert header["jwk"] == key.public_jwk and "d" not in header["jwk"]  # type: ignore[operator]
    claims = jwt.decode(proof, ECKey.import_key(key.public_jwk), algorithms=["ES256"]).claims
    assert claims["htm"] == "POST"
    assert claims["htu"] == "https://pds.example.com/xrpc/x"
    assert claims["iat"] == 1000 and claims["nonce"] == "n1"
    expected_ath = base64.urlsafe_b64encode(hashlib.sha256(b"tok").digest()).rstrip(b"=").decode()
    assert claims["ath"] == expected_ath


def test_proofs_are_unique_and_omit_optional_claims() -> None:
    key = DpopKey.generate()
    a, b = key.proof("GET", "https://x.example/y"), key.proof("GET", "https://x.example/y")
    ca = jwt.decode(a, ECKey.import_key(key.public_jwk), algorithms=["ES256"]).claims
    cb = jwt.decode(b, ECKey.import_key(key.public_jwk), algorithms=["ES256"]).claims
    assert ca["jti"] != cb["jti"]
    assert "nonce" not in ca and "ath" not in ca


def test_key_round_trips_through_its_private_jwk() -> None:
    key = DpopKey.generate()
    again = DpopKey.from_jwk(key.to_jwk())
    assert again.thumbprint == key.thumbprint
    assert set(key.to_jwk()) == {"kty", "crv", "x", "y", "d"}


def test_only_p256_keys() -> None:
    with pytest.raises(ValueError):
        DpopKey(ECKey.generate_key("P-384"))


def test_htu_drops_query_and_fragment() -> None:
    assert htu("http://localhost:1234/xrpc/a.b?x=1") == "http://localhost:1234/xrpc/a.b"


def response(
    status: int,
    *,
    body: object = None,
    headers: dict[str, str] | None = None,
    url: str = "https://pds.example.com/xrpc/x",
) -> httpx.Response:
    request = httpx.Request("POST", url, headers={"Host": "pds.example.com"})
    return httpx.Response(status, json=body, headers=headers or {}, request=request)


def test_nonce_refusals_are_recognised() -> None:
    assert wants_nonce(response(400, body={"error": "use_dpop_nonce"}))
    challenge = 'DPoP error="use_dpop_nonce", error_description="x"'
    assert wants_nonce(response(401, headers={"WWW-Authenticate": challenge}))
    assert not wants_nonce(response(401, body={"error": "invalid_token"}))
    assert not wants_nonce(response(200, body={"error": "use_dpop_nonce"}))
    assert (
        error_code(
            response(401, headers={"WWW-Authenticate": 'DPoP error="invalid_token"'}, body={"error": "ExpiredToken"})
        )
        == "invalid_token"
    )
    assert error_code(response(500, body=["not", "an", "object"])) is None


def test_nonce_cache_keys_by_the_named_host_not_the_pinned_ip() -> None:
    cache = NonceCache(max_entries=2)
    # The SSRF guard pins the URL to an IP and keeps the Host header.
    resp = response(200, headers={"DPoP-Nonce": "abc"}, url="https://203.0.113.7/xrpc/x")
    assert response_origin(resp) == "https://pds.example.com"
    assert cache.remember(resp) == "abc"
    assert cache.get("https://pds.example.com/xrpc/other") == "abc"
    cache.put("https://a.example", "1")
    cache.put("https://b.example", "2")
    assert cache.get("https://pds.example.com/") is None  # evicted, bounded
