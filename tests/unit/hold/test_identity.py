"""The hold's did:web, its key (made once, kept with mode 0600) and its DID document."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from atcr.identity import parse_did_document
from atcr.serviceauth import public_key_from_multikey, verify_raw
from hold.identity import HoldIdentity

pytestmark = pytest.mark.unit


def test_key_is_created_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing.key"
    first = HoldIdentity.load("http://127.0.0.1:8080", path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert isinstance(first.key.curve, ec.SECP256K1)
    again = HoldIdentity.load("http://127.0.0.1:8080", path)
    assert again.multikey == first.multikey


@pytest.mark.parametrize(
    ("url", "did"),
    [
        ("http://127.0.0.1:8080", "did:web:127.0.0.1%3A8080"),
        ("https://hold01.atcr.io", "did:web:hold01.atcr.io"),
        ("https://hold01.atcr.io/", "did:web:hold01.atcr.io"),
        ("http://localhost:5001", "did:web:localhost%3A5001"),
    ],
)
def test_did_web_from_public_url(tmp_path: Path, url: str, did: str) -> None:
    assert HoldIdentity.load(url, tmp_path / "k").did == did


def test_did_document_names_key_and_services(tmp_path: Path) -> None:
    ident = HoldIdentity.load("https://hold01.atcr.io", tmp_path / "k")
    doc = ident.did_document()
    parsed = parse_did_document(ident.did, doc)
    assert parsed.signing_key == ident.multikey
    assert parsed.service("atcr_hold") == "https://hold01.atcr.io"
    assert parsed.pds_endpoint == "https://hold01.atcr.io"
    assert parsed.handle == "hold01.atcr.io"
    assert {s["type"] for s in doc["service"]} == {"AtprotoPersonalDataServer", "AtcrHoldService"}
    alg, public = public_key_from_multikey(ident.multikey)
    assert alg == "ES256K" and verify_raw(public, b"commit", ident.sign(b"commit"))
