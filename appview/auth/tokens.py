"""Registry bearer tokens (Docker token spec): short-lived ES256 JWTs signed by the AppView.

Verification runs on every `/v2` request, so verified tokens are remembered in-process
until they expire: a client reuses one token for a whole push or pull, and the signature
check then costs one dict lookup instead of an ECDSA verify.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from appview.errors import Unauthorized

ACTIONS = frozenset({"pull", "push", "delete", "*"})


@dataclass(frozen=True)
class Access:
    """One granted scope: `repository:<name>:<actions>`."""

    type: str
    name: str
    actions: tuple[str, ...]

    def to_claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


@dataclass(frozen=True)
class TokenClaims:
    subject: str  # DID, or "" for anonymous
    access: tuple[Access, ...]
    expires_at: int
    auth_method: str

    def allows(self, name: str, action: str) -> bool:
        for a in self.access:
            if a.type == "repository" and a.name == name and (action in a.actions or "*" in a.actions):
                return True
        return False


def parse_scope(scope: str) -> Access | None:
    """Parse `repository:<name>:<a,b>`; names may contain ':' only in the DID identity part."""
    kind, sep, rest = scope.partition(":")
    if not sep or kind not in ("repository", "registry"):
        return None
    name, sep, actions = rest.rpartition(":")
    if not sep or not name:
        return None
    acts = tuple(sorted({a for a in actions.split(",") if a in ACTIONS}))
    return Access(kind, name, acts)


class TokenService:
    """Issues and verifies registry JWTs with one ES256 key (shared by all replicas)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, *, issuer: str, service: str, lifetime: int) -> None:
        self._key = ECKey.import_key(key)
        self.kid = self._key.thumbprint()
        self.issuer = issuer
        self.service = service
        self.lifetime = lifetime
        self._verified: OrderedDict[str, TokenClaims] = OrderedDict()
        self._max_cached = 50_000

    def jwks(self) -> dict[str, Any]:
        pub = self._key.as_dict(private=False)
        pub.update({"kid": self.kid, "use": "sig", "alg": "ES256"})
        return {"keys": [pub]}

    def issue(self, subject: str, access: list[Access], auth_method: str) -> tuple[str, int, int]:
        """Returns (token, expires_in, issued_at)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.lifetime,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": [a.to_claim() for a in access],
            "auth_method": auth_method,
        }
        token = jwt.encode({"alg": "ES256", "typ": "JWT", "kid": self.kid}, claims, self._key)
        return token, self.lifetime, now

    def verify(self, token: str) -> TokenClaims:
        now = time.time()
        hit = self._verified.get(token)
        if hit is not None:
            if hit.expires_at > now:
                return hit
            self._verified.pop(token, None)
        try:
            decoded = jwt.decode(token, self._key, algorithms=["ES256"])
        except (JoseError, ValueError):
            raise Unauthorized("invalid registry token") from None
        c = decoded.claims
        if c.get("iss") != self.issuer or c.get("aud") != self.service:
            raise Unauthorized("registry token not issued for this registry")
        exp = c.get("exp")
        nbf = c.get("nbf", 0)
        if not isinstance(exp, int) or exp <= now:
            raise Unauthorized("registry token expired")
        if not isinstance(nbf, int) or nbf > now + 30:
            raise Unauthorized("registry token not yet valid")
        access = []
        for item in c.get("access") or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                access.append(
                    Access(
                        str(item.get("type", "")),
                        item["name"],
                        tuple(str(x) for x in item.get("actions") or []),
                    )
                )
        claims = TokenClaims(
            subject=str(c.get("sub") or ""),
            access=tuple(access),
            expires_at=exp,
            auth_method=str(c.get("auth_method") or ""),
        )
        self._verified[token] = claims
        if len(self._verified) > self._max_cached:
            self._verified.popitem(last=False)
        return claims
