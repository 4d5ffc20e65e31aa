"""Helpers shared by the hold repository tests (unit and integration)."""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from hold.repo import EcKeySigner

HOLD_DID = "did:web:hold.example.com"
OWNER_DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
LAYER = "io.atcr.hold.layer"
CREW = "io.atcr.hold.crew"


def make_signer(curve: str = "k256") -> EcKeySigner:
    """A throwaway signing key (secp256k1 like the reference PDS, or P-256)."""
    return EcKeySigner(ec.generate_private_key(ec.SECP256K1() if curve == "k256" else ec.SECP256R1()))


def layer_record(n: int, user: str = OWNER_DID) -> dict[str, Any]:
    """A valid io.atcr.hold.layer record, distinct per `n`."""
    digest = hashlib.sha256(str(n).encode()).hexdigest()
    return {
        "$type": LAYER,
        "digest": f"sha256:{digest}",
        "size": 1000 + n,
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "manifest": f"at://{user}/io.atcr.manifest/{digest}",
        "userDid": user,
        "createdAt": "2025-01-02T03:04:05.000Z",
    }
