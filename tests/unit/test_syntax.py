from __future__ import annotations

import pytest

from atcr.errors import InvalidDidDocument
from atcr.identity import did_web_for_url, did_web_url, parse_did_document
from atcr.syntax import is_did, is_handle, is_oci_repository, is_oci_tag

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("value", ["did:plc:abc123", "did:web:example.com", "did:web:127.0.0.1%3A8080"])
def test_valid_dids(value: str) -> None:
    assert is_did(value)


@pytest.mark.parametrize("value", ["did:plc:", "DID:plc:x", "did:plc:x:", "plc:abc", "did:web:a%", ""])
def test_invalid_dids(value: str) -> None:
    assert not is_did(value)


def test_handles() -> None:
    assert is_handle("alice.bsky.social")
    assert is_handle("alice-1.test")
    assert not is_handle("alice")
    assert not is_handle("alice.local")
    assert is_handle("alice.local", allow_reserved_tlds=True)
    assert not is_handle("-alice.com")


def test_oci_names() -> None:
    assert is_oci_repository("app")
    assert is_oci_repository("team/app-1.x")
    assert not is_oci_repository("App")
    assert not is_oci_repository("../etc")
    assert not is_oci_repository("a//b")
    assert is_oci_tag("v1.0_rc-1")
    assert not is_oci_tag(".hidden")
    assert not is_oci_tag("x" * 129)


def test_did_web_round_trip() -> None:
    did = did_web_for_url("http://127.0.0.1:8080")
    assert did == "did:web:127.0.0.1%3A8080"
    assert did_web_url(did, allow_http_loopback=True) == "http://127.0.0.1:8080/.well-known/did.json"
    assert did_web_url(did, allow_http_loopback=False).startswith("https://")
    assert did_web_for_url("https://hold01.atcr.io") == "did:web:hold01.atcr.io"


def test_parse_did_document_relative_and_absolute_ids() -> None:
    did = "did:plc:abc"
    doc = {
        "id": did,
        "alsoKnownAs": ["at://Alice.Test"],
        "verificationMethod": [
            {"id": f"{did}#atproto", "type": "Multikey", "controller": did, "publicKeyMultibase": "zQ3sh"}
        ],
        "service": [
            {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "http://pds/"},
            {"id": f"{did}#atcr_hold", "type": "AtcrHoldService", "serviceEndpoint": "http://hold"},
        ],
    }
    parsed = parse_did_document(did, doc)
    assert parsed.handle == "alice.test"
    assert parsed.pds_endpoint == "http://pds"
    assert parsed.signing_key == "zQ3sh"
    assert parsed.service("atcr_hold") == "http://hold"
    with pytest.raises(InvalidDidDocument):
        parse_did_document("did:plc:other", doc)
