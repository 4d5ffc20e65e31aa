"""Upload capabilities (hold/capability.py): bound to one upload, tamper-evident, expiring."""

from __future__ import annotations

import pytest

from hold.capability import CapabilityInvalid, CapabilitySigner
from hold.xrpc import loggable_path

pytestmark = pytest.mark.unit

ARGS = {"did": "did:plc:alice", "repository": "app", "upload": "u" * 20, "max_size": 100, "blob_url": "https://a/v2/x/blobs/"}


def test_round_trip_and_binding() -> None:
    now = [1000.0]
    signer = CapabilitySigner(b"s" * 32, clock=lambda: now[0])
    token = signer.issue(**ARGS, ttl=60)  # type: ignore[arg-type]
    cap = signer.verify(token, "u" * 20)
    assert (cap.did, cap.repository, cap.max_size, cap.expires) == ("did:plc:alice", "app", 100, 1060)
    with pytest.raises(CapabilityInvalid):
        signer.verify(token, "v" * 20)  # another upload
    with pytest.raises(CapabilityInvalid):
        CapabilitySigner(b"t" * 32, clock=lambda: now[0]).verify(token, "u" * 20)  # another hold's key
    for bad in (None, "", "x", "a.b.c", token + "A", token.replace(".", ".A", 1), "!!!.???"):
        with pytest.raises(CapabilityInvalid):
            signer.verify(bad, "u" * 20)
    now[0] = 1061.0
    with pytest.raises(CapabilityInvalid, match="expired"):
        signer.verify(token, "u" * 20)


def test_logged_paths_leave_the_capability_out() -> None:
    assert loggable_path("/_hold/oci/uploads/abc/secret.mac") == "/_hold/oci/uploads/abc/<capability>"
    assert loggable_path("/xrpc/io.atcr.hold.initiateUpload") == "/xrpc/io.atcr.hold.initiateUpload"
