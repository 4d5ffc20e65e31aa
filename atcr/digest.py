"""OCI content digests: the one parser every component trusts with a digest from the wire.

A digest names a storage path (``blobs/sha256/ab/<hex>/data``), so anything looser than the
two algorithms we can verify, in canonical lower-case hex of the exact length, is refused:
no ``..``, no upper case that would alias a second path, no algorithm we cannot hash.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from atcr.errors import AtcrError

Algorithm = Literal["sha256", "sha512"]
ALGORITHMS: tuple[Algorithm, ...] = ("sha256", "sha512")

_HEX_LEN: dict[str, int] = {"sha256": 64, "sha512": 128}
_PATTERN = re.compile(r"(sha256|sha512):([0-9a-f]+)")


class InvalidDigest(AtcrError):
    """The string is not a canonical ``sha256:<64 hex>`` or ``sha512:<128 hex>`` digest."""


def check_algorithm(name: str) -> Algorithm:
    """`name` as an algorithm we can verify, or `InvalidDigest`."""
    if name == "sha256":
        return "sha256"
    if name == "sha512":
        return "sha512"
    raise InvalidDigest(f"unsupported digest algorithm {name[:20]!r}: expected sha256 or sha512")


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated OCI digest; only `Digest.parse`/`parse_digest` and `Digest.of` make one."""

    algorithm: Algorithm
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def blob_path(self) -> str:
        """Where the blob lives relative to a storage root, as distribution lays it out."""
        return f"blobs/{self.algorithm}/{self.hex[:2]}/{self.hex}/data"

    @classmethod
    def parse(cls, value: object) -> Digest:
        """Validate `value` as an OCI digest we can verify, or raise `InvalidDigest`."""
        if not isinstance(value, str):
            raise InvalidDigest("digest must be a string")
        match = _PATTERN.fullmatch(value)
        if match is None:
            shown = value if len(value) <= 80 else value[:77] + "..."
            raise InvalidDigest(f"{shown!r} is not a sha256:<64 hex> or sha512:<128 hex> digest")
        algorithm, hexpart = check_algorithm(match.group(1)), match.group(2)
        if len(hexpart) != _HEX_LEN[algorithm]:
            raise InvalidDigest(
                f"{algorithm} digest must have {_HEX_LEN[algorithm]} hex characters, got {len(hexpart)}"
            )
        return cls(algorithm, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of `data` (small payloads such as manifests; blobs are hashed as they stream)."""
        alg = check_algorithm(algorithm)
        return cls(alg, hashlib.new(alg, data).hexdigest())

    @classmethod
    def from_hex(cls, algorithm: str, hexdigest: str) -> Digest:
        return cls.parse(f"{algorithm}:{hexdigest}")


def parse_digest(value: object) -> Digest:
    """Function form of `Digest.parse`."""
    return Digest.parse(value)


def is_digest(value: object) -> bool:
    try:
        Digest.parse(value)
    except InvalidDigest:
        return False
    return True
