"""CSRF protection for every state-changing form and JSON call made with the session cookie.

Tokens are HMACs bound to the browser: to the web session when signed in, else to a random
`atcr_csrf` cookie. A signed-in token cannot be minted by an attacker (they would need the
victim's session id), and a pre-login token is only good with its own cookie. On top, a
request whose `Origin` (or `Referer`) names another site is refused outright: browsers send
one of them on cross-site POSTs, and the cookie is SameSite=Lax anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

CSRF_COOKIE = "atcr_csrf"
FORM_FIELD = "csrf_token"
HEADER = "x-csrf-token"


def new_binding() -> str:
    return secrets.token_urlsafe(24)


class CsrfGuard:
    def __init__(self, secret: bytes, *, allowed_origins: tuple[str, ...]) -> None:
        self._key = hashlib.sha256(b"atcr csrf v1" + secret).digest()
        self._origins = {o.rstrip("/").lower() for o in allowed_origins}

    def token(self, binding: str) -> str:
        mac = hmac.new(self._key, binding.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def valid_token(self, binding: str | None, token: str | None) -> bool:
        if not binding or not token or len(token) > 100:
            return False
        return hmac.compare_digest(self.token(binding), token)

    def same_origin(self, origin: str | None, referer: str | None) -> bool:
        """False only when the browser says the request came from elsewhere."""
        if origin and origin != "null":
            return origin.rstrip("/").lower() in self._origins
        if origin == "null":
            return False
        if referer:
            parts = urlsplit(referer)
            return f"{parts.scheme}://{parts.netloc}".lower() in self._origins
        return True  # neither header: rely on the token alone

    def check(self, *, binding: str | None, token: str | None, origin: str | None, referer: str | None) -> bool:
        return self.same_origin(origin, referer) and self.valid_token(binding, token)
