"""Avatars and repository icons, served from our origin through a small caching proxy.

The images are blobs in their owners' PDSes (`com.atproto.sync.getBlob`). Linking the PDS URL
directly would tell every PDS who views which page and would need the page's CSP to allow
any host; proxying keeps `img-src 'self'`. The fetch goes through the SSRF-guarded client
to the PDS named by the DID document (never a URL from the request), is size-capped, and the
bytes are served only when their magic bytes say PNG, JPEG, WebP or GIF (never as HTML or
SVG, which could carry script). Blobs are content-addressed by CID, so a cached copy never
goes stale: Valkey keeps it a day, browsers a week.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final

import valkey.asyncio as avalkey

from appview.cache.loader import Loader
from atcr import errors
from atcr.http import SafeHttpClient
from atcr.readmodel import keys
from atcr.syntax import is_did
from atcr.xrpc import XrpcClient

log = logging.getLogger("appview.web.blobs")

MAX_BYTES: Final = 3_000_000
TTL: Final = 24 * 3600
MISSING_TTL: Final = 300
_CID: Final = re.compile(r"^b[a-z2-7]{20,120}$")
_MISSING: Final = b"-"


def image_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True)
class Image:
    mime: str
    data: bytes


class BlobProxy:
    def __init__(self, valkey: avalkey.Valkey, http: SafeHttpClient, loader: Loader) -> None:
        self._v = valkey
        self._http = http
        self._loader = loader

    @staticmethod
    def valid(did: str, cid: str) -> bool:
        return is_did(did) and bool(_CID.match(cid))

    @staticmethod
    def _key(did: str, cid: str) -> str:
        return f"{keys.did_prefix(did)}img:{cid}"

    async def get(self, did: str, cid: str) -> Image | None:
        """The image, or None when it does not exist or is not an image we serve."""
        if not self.valid(did, cid):
            return None
        key = self._key(did, cid)
        cached: bytes | None = await self._v.get(key)
        if cached is not None:
            if cached == _MISSING:
                return None
            mime = image_type(cached)
            return Image(mime, cached) if mime else None
        try:
            ident = await self._loader.identity(did)
            data = await XrpcClient(self._http, ident.pds_endpoint).get_blob(did, cid, max_bytes=MAX_BYTES)
        except (errors.XrpcError, errors.IdentityError, errors.ResponseTooLarge):
            await self._v.set(key, _MISSING, ex=MISSING_TTL)
            return None
        except errors.NetworkError as exc:
            log.info("blob %s of %s unavailable: %s", cid, did, type(exc).__name__)
            return None  # not cached: try again on the next view
        mime = image_type(data)
        await self._v.set(key, data if mime else _MISSING, ex=TTL if mime else MISSING_TTL)
        return Image(mime, data) if mime else None


__all__ = ["BlobProxy", "Image", "image_type"]
