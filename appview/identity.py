"""The AppView's own `did:web` identity (ATCR: `did:web:<base URL host>`).

Holds authenticate calls the AppView makes on its own behalf (pull counts, which carry no
user) with service tokens signed by this key; they verify them through the DID document
served at `/.well-known/did.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from atcr.identity import did_web_for_url
from atcr.serviceauth import mint_service_token, multikey_of


@dataclass(frozen=True)
class AppViewIdentity:
    base_url: str
    key: ec.EllipticCurvePrivateKey

    @property
    def did(self) -> str:
        return did_web_for_url(self.base_url)

    def mint(self, aud: str, lxm: str) -> str:
        return mint_service_token(self.key, iss=self.did, aud=aud, lxm=lxm, ttl=60)

    def did_document(self) -> dict[str, Any]:
        return {
            "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
            "id": self.did,
            "verificationMethod": [
                {
                    "id": f"{self.did}#atproto",
                    "type": "Multikey",
                    "controller": self.did,
                    "publicKeyMultibase": multikey_of(self.key),
                }
            ],
            "service": [{"id": "#atcr_appview", "type": "AtcrAppView", "serviceEndpoint": self.base_url}],
        }
