"""What the repository needs from the hold's signing key, and nothing more.

The key itself (file, curve, rotation, the DID document that publishes it) belongs to the
hold's identity; the repository only signs commits with it and names it in proofs. Keeping
that contract this small lets tests use throwaway keys and lets the identity code change
how the key is stored without touching the repository.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from atcr.serviceauth import did_key_of, sign_low_s


class RepoSigner(Protocol):
    """Signs commits: ECDSA-SHA256 over the bytes, raw 64-byte `r||s`, low-S (atproto rules)."""

    @property
    def did_key(self) -> str:
        """The public key as `did:key:z...`, the form verifiers (and DID documents) use."""
        ...

    def sign(self, data: bytes) -> bytes: ...


class EcKeySigner:
    """A `RepoSigner` over an in-memory P-256 or secp256k1 private key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self._did_key = did_key_of(key)

    @property
    def did_key(self) -> str:
        return self._did_key

    def sign(self, data: bytes) -> bytes:
        return sign_low_s(self._key, data)
