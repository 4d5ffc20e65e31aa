"""HMAC-signed, expiring URLs that the hold serves itself (the local-disk driver's presigning).

With S3 the hold hands out presigned S3 URLs and never sees the bytes. On local disk there is
no S3 to sign for us, so the hold signs its own URLs and serves them: a pull is still a
redirect to a short-lived URL, and a URL that was altered, points elsewhere or has expired is
refused. The signature covers the method (HEAD is signed as GET), the path and the expiry;
the key is derived from a random secret kept in the hold's data dir (mode 0600).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from urllib.parse import urlencode

from hold.errors import UrlSignatureInvalid

_CONTEXT = b"atcr-hold signed urls v1"


class UrlSigner:
    def __init__(self, secret: bytes, base_url: str, *, clock: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(secret, _CONTEXT, hashlib.sha256).digest()
        self._base = base_url.rstrip("/")
        self._clock = clock

    def _mac(self, method: str, path: str, expires: int) -> str:
        canonical = "GET" if method.upper() == "HEAD" else method.upper()
        msg = f"{canonical}\n{path}\n{expires}".encode()
        return base64.urlsafe_b64encode(hmac.new(self._key, msg, hashlib.sha256).digest()).rstrip(b"=").decode()

    def sign(self, method: str, path: str, *, expires_in: int) -> str:
        """An absolute URL for `method` on `path` (which must start with '/') valid `expires_in` s."""
        if not path.startswith("/"):
            raise ValueError("path must be absolute")
        expires = int(self._clock()) + int(expires_in)
        query = urlencode({"exp": expires, "sig": self._mac(method, path, expires)})
        return f"{self._base}{path}?{query}"

    def verify(self, method: str, path: str, exp: str | None, sig: str | None) -> None:
        """Raise `UrlSignatureInvalid` unless (method, path) was signed and has not expired."""
        if not exp or not sig or not exp.isascii() or not exp.isdigit() or len(exp) > 12:
            raise UrlSignatureInvalid("URL is not signed")
        expires = int(exp)
        if not hmac.compare_digest(self._mac(method, path, expires), sig):
            raise UrlSignatureInvalid("URL signature does not match")
        if self._clock() > expires:
            raise UrlSignatureInvalid("URL has expired")
