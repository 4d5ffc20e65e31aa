"""DPoP (RFC 9449) proofs, built on joserfc because authlib has none.

Every ATProto OAuth session binds its tokens to one ES256 key made for that session alone,
so a leaked access or refresh token is useless without the key, and a leaked key exposes one
session only. Servers hand out nonces (`DPoP-Nonce`) that proofs must echo; they rotate, so
the last one seen per server is remembered and a `use_dpop_nonce` refusal is retried once.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

ALG = "ES256"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def htu(url: str) -> str:
    """The `htu` claim: the request URL without query and fragment (RFC 9449 §4.2)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def access_token_hash(token: str) -> str:
    """The `ath` claim that ties a proof to one access token."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


class DpopKey:
    """One session's DPoP key; serialised as a private JWK so it can be sealed with the session."""

    def __init__(self, key: ECKey) -> None:
        if key.as_dict(private=False).get("crv") != "P-256":
            raise ValueError("DPoP keys must be P-256 (ES256)")
        self._key = key
        public = key.as_dict(private=False)
        self.public_jwk: dict[str, Any] = {k: public[k] for k in ("kty", "crv", "x", "y")}
        self.thumbprint: str = key.thumbprint()

    @classmethod
    def generate(cls) -> DpopKey:
        return cls(ECKey.generate_key("P-256"))

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any]) -> DpopKey:
        return cls(ECKey.import_key(jwk))

    def to_jwk(self) -> dict[str, Any]:
        """The private JWK: only ever stored sealed (see `appview.auth.sessions.SessionCipher`)."""
        private = self._key.as_dict(private=True)
        return {k: private[k] for k in ("kty", "crv", "x", "y", "d")}

    def proof(
        self,
        method: str,
        url: str,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
        now: float | None = None,
    ) -> str:
        """A fresh proof JWT for one request; `jti` is random so a proof is never reusable."""
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": htu(url),
            "iat": int(time.time() if now is None else now),
        }
        if nonce:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        header = {"typ": "dpop+jwt", "alg": ALG, "jwk": self.public_jwk}
        return jwt.encode(header, claims, self._key, algorithms=[ALG])


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def response_origin(response: httpx.Response) -> str:
    """The origin a response came from, as the caller named it.

    The SSRF guard pins requests to an IP but keeps the `Host` header, so the header (not
    the pinned URL) says which server this was.
    """
    request = response.request
    host = request.headers.get("host") or request.url.netloc.decode("ascii")
    return f"{request.url.scheme}://{host}".lower()


class NonceCache:
    """The last `DPoP-Nonce` each server sent; bounded, in-process (nonces are not secret).

    Sharing nonces between sessions of one process is safe (servers issue them per server,
    not per key) and saves every new session the round trip that fetches its first nonce.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._nonces: OrderedDict[str, str] = OrderedDict()
        self._max = max_entries

    def get(self, url: str) -> str | None:
        return self._nonces.get(origin_of(url)) or None

    def known(self, url: str) -> bool:
        """Whether this server was heard from (a server that wants no nonce is stored as "")."""
        return origin_of(url) in self._nonces

    def put(self, origin: str, nonce: str) -> None:
        self._nonces[origin] = nonce
        self._nonces.move_to_end(origin)
        while len(self._nonces) > self._max:
            self._nonces.popitem(last=False)

    def remember(self, response: httpx.Response) -> str | None:
        nonce: str | None = response.headers.get("dpop-nonce")
        if nonce:
            self.put(response_origin(response), nonce)
        return nonce


def _www_authenticate_error(response: httpx.Response) -> str | None:
    header = response.headers.get("www-authenticate", "")
    if not header.lower().startswith("dpop"):
        return None
    for part in header[4:].split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "error":
            return str(value.strip().strip('"'))
    return None


def _json_error(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict):
        error = body.get("error")
        return str(error) if isinstance(error, str) else None
    return None


def error_code(response: httpx.Response) -> str | None:
    """The OAuth/DPoP error a response carries, from `WWW-Authenticate` or the JSON body."""
    if response.status_code < 400:
        return None
    return _www_authenticate_error(response) or _json_error(response)


def wants_nonce(response: httpx.Response) -> bool:
    """True when the server refused the proof only for a missing or stale nonce."""
    return response.status_code in (400, 401) and error_code(response) == "use_dpop_nonce"


__all__ = [
    "DpopKey",
    "NonceCache",
    "access_token_hash",
    "b64url",
    "error_code",
    "htu",
    "origin_of",
    "response_origin",
    "wants_nonce",
]
