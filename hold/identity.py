"""The hold's own identity: a did:web from its public URL and a signing key kept on disk.

The key is secp256k1 (what atproto repos sign with), created on first start with mode 0600
and reused afterwards, so the DID document, the embedded repo's commits and anything else
the hold signs keep one identity across restarts. The document advertises the key as
`#atproto` and the hold's endpoint as both `#atproto_pds` (it runs an embedded PDS) and
`#atcr_hold` (ATCR's service id, which AppViews look up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from atcr.identity import did_web_for_url
from atcr.keys import load_or_create_ec_key
from atcr.serviceauth import multikey_of, sign_low_s

HOLD_SERVICE_ID = "atcr_hold"
HOLD_SERVICE_TYPE = "AtcrHoldService"
# Advertised when the hold takes OCI blob uploads directly (hold/oci_uploads.py): AppViews that
# find it send clients' layer bytes here instead of relaying them. ATCR's holds lack it.
DIRECT_UPLOAD_SERVICE_ID = "atcr_direct_upload"
DIRECT_UPLOAD_SERVICE_TYPE = "AtcrHoldDirectUpload"


@dataclass(frozen=True)
class HoldIdentity:
    did: str
    public_url: str
    key: ec.EllipticCurvePrivateKey
    direct_uploads: bool = False

    @classmethod
    def load(cls, public_url: str, key_path: Path, *, direct_uploads: bool = False) -> HoldIdentity:
        """The hold's identity, creating its key on first start."""
        key = load_or_create_ec_key(key_path, ec.SECP256K1())
        return cls(
            did=did_web_for_url(public_url), public_url=public_url.rstrip("/"), key=key, direct_uploads=direct_uploads
        )

    @property
    def multikey(self) -> str:
        return multikey_of(self.key)

    @property
    def handle(self) -> str:
        return urlsplit(self.public_url).hostname or ""

    def sign(self, message: bytes) -> bytes:
        """ECDSA-SHA256, raw r||s with low S (what atproto expects of commits and JWTs)."""
        return sign_low_s(self.key, message)

    def did_document(self) -> dict[str, Any]:
        services = [
            {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": self.public_url},
            {"id": f"#{HOLD_SERVICE_ID}", "type": HOLD_SERVICE_TYPE, "serviceEndpoint": self.public_url},
        ]
        if self.direct_uploads:
            services.append(
                {
                    "id": f"#{DIRECT_UPLOAD_SERVICE_ID}",
                    "type": DIRECT_UPLOAD_SERVICE_TYPE,
                    "serviceEndpoint": self.public_url,
                }
            )
        return {
            "@context": [
                "https://www.w3.org/ns/did/v1",
                "https://w3id.org/security/multikey/v1",
                "https://w3id.org/security/suites/secp256k1-2019/v1",
            ],
            "id": self.did,
            "alsoKnownAs": [f"at://{self.handle}"],
            "verificationMethod": [
                {
                    "id": f"{self.did}#atproto",
                    "type": "Multikey",
                    "controller": self.did,
                    "publicKeyMultibase": self.multikey,
                }
            ],
            "service": services,
        }
