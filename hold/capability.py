"""Upload capabilities: the signed, expiring part of a direct upload's URL.

A direct upload (docs/direct-uploads.md) lets an OCI client send layer bytes straight to the
hold, on a URL the AppView hands out. The client has no credential the hold would accept (its
registry token is the AppView's), so the URL itself carries the permission: who uploads
(the user's DID), into which repository, which upload, how many bytes at most, until when, and
where the finished blob is to be found (the AppView's blob URL). The hold issues it when the
AppView starts the upload over service auth and verifies it alone, keyed by a secret only the
hold knows: nothing the client sends besides the URL is trusted.

A token is ``base64url(JSON payload) "." base64url(HMAC-SHA256)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from hold.errors import Forbidden

_CONTEXT = b"atcr-hold upload capability v1"
MAX_TOKEN = 4096


class CapabilityInvalid(Forbidden):
    """The upload URL's capability was altered, is for another upload, or has expired."""

    error, default_message = "InvalidCapability", "upload URL is invalid or has expired"


@dataclass(frozen=True)
class UploadCapability:
    did: str  # who uploads; the blob is admitted against this user's quota
    repository: str  # the repository the upload belongs to
    upload: str  # the hold's upload id
    max_size: int  # bytes the blob may have at most
    expires: int  # unix seconds
    blob_url: str  # the AppView's blob URL prefix; the digest completes it


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CapabilitySigner:
    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(secret, _CONTEXT, hashlib.sha256).digest()
        self._clock = clock

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, *, did: str, repository: str, upload: str, max_size: int, blob_url: str, ttl: int) -> str:
        body = {
            "did": did,
            "repo": repository,
            "upload": upload,
            "max": max_size,
            "exp": int(self._clock()) + ttl,
            "ret": blob_url,
        }
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str | None, upload: str) -> UploadCapability:
        """The capability `token` grants for `upload`, or `CapabilityInvalid`."""
        if not token or len(token) > MAX_TOKEN or token.count(".") != 1:
            raise CapabilityInvalid("the upload URL carries no valid capability")
        raw_payload, raw_mac = token.split(".")
        try:
            payload, mac = _unb64(raw_payload), _unb64(raw_mac)
        except ValueError:
            raise CapabilityInvalid("the upload URL carries no valid capability") from None
        if not hmac.compare_digest(self._mac(payload), mac):
            raise CapabilityInvalid("the upload URL's capability does not match its signature")
        try:
            d = json.loads(payload)
            cap = UploadCapability(
                did=str(d["did"]), repository=str(d["repo"]), upload=str(d["upload"]),
                max_size=int(d["max"]), expires=int(d["exp"]), blob_url=str(d["ret"]),
            )
        except (ValueError, KeyError, TypeError):
            raise CapabilityInvalid("the upload URL's capability is malformed") from None
        if cap.upload != upload:
            raise CapabilityInvalid("the capability is for another upload")
        if self._clock() > cap.expires:
            raise CapabilityInvalid("the upload URL has expired; start the upload again")
        return cap
