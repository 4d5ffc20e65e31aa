"""The platform (``linux/amd64``) of a single-platform image, read from its config blob.

An index names each child's platform, but a plain image manifest does not: its os and
architecture live only in the image config blob. The repository and manifest pages fetch
that blob the way a client would (the hold's `getBlob` answers with a redirect to the
bytes), through the SSRF-guarded client, at most `MAX_CONFIG_BYTES`, and check its digest
before trusting it. Blobs are content addressed, so the answer is kept in Valkey for a long
time (`av:ui:cfgplat:<digest>`); a failure (hold down, private hold, odd config) is kept a few
minutes only and shows as "—". Concurrent views share one fetch per config.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from typing import Any, Final, Protocol

from atcr.errors import AtcrError
from atcr.http import SafeHttpClient

log = logging.getLogger("appview.web.configinfo")

MAX_CONFIG_BYTES: Final = 1024 * 1024
KNOWN_TTL: Final = 30 * 86400
UNKNOWN_TTL: Final = 300
NONE: Final = b"-"  # cached "no platform could be read"


class BlobUrls(Protocol):
    async def blob_url(self, hold_did: str, digest: str, *, user_did: str | None = None) -> str | None: ...


def platform_of(config: Any) -> str | None:
    """``os/architecture[/variant]`` of an OCI/Docker image config document, or None."""
    if not isinstance(config, dict):
        return None
    os_name, arch, variant = config.get("os"), config.get("architecture"), config.get("variant")
    if not isinstance(os_name, str) or not isinstance(arch, str) or not os_name or not arch:
        return None
    parts = [os_name, arch] + ([variant] if isinstance(variant, str) and variant else [])
    text = "/".join(parts)
    if len(text) > 100 or text == "unknown/unknown":
        return None
    return text


def _matches(digest: str, data: bytes) -> bool:
    algo, _, want = digest.partition(":")
    if algo not in ("sha256", "sha512"):
        return False
    return hashlib.new(algo, data).hexdigest() == want


class ConfigPlatforms:
    def __init__(self, valkey: Any, http: SafeHttpClient, holds: BlobUrls, *, timeout: float = 3.0) -> None:
        self._v = valkey
        self._http = http
        self._holds = holds
        self._timeout = timeout
        self._inflight: dict[str, asyncio.Future[str | None]] = {}

    @staticmethod
    def key(digest: str) -> str:
        return f"av:ui:cfgplat:{digest}"

    async def platform(self, hold_did: str | None, digest: str) -> str | None:
        """The platform of the image whose config blob is `digest` (stored on `hold_did`)."""
        try:
            cached = await self._v.get(self.key(digest))
        except Exception:  # a page still renders without Valkey's memory
            cached = None
        if cached is not None:
            return None if cached == NONE else cached.decode()
        if not hold_did:
            return None
        running = self._inflight.get(digest)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            found = await self._fetch(hold_did, digest)
            future.set_result(found)
            with contextlib.suppress(Exception):  # not remembered: read again next time
                await self._v.set(self.key(digest), found.encode() if found else NONE,
                                  ex=KNOWN_TTL if found else UNKNOWN_TTL)
            return found
        finally:
            self._inflight.pop(digest, None)
            if not future.done():
                future.cancel()

    async def _fetch(self, hold_did: str, digest: str) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                url = await self._holds.blob_url(hold_did, digest)
                if url is None:
                    return None
                resp = await self._http.request("GET", url, max_bytes=MAX_CONFIG_BYTES, timeout=self._timeout)
        except (TimeoutError, AtcrError) as exc:
            log.info("config %s on %s: not read (%s)", digest[:19], hold_did, type(exc).__name__)
            return None
        if resp.status_code != 200 or not _matches(digest, resp.content):
            log.info("config %s on %s: answer %d, not the blob", digest[:19], hold_did, resp.status_code)
            return None
        try:
            return platform_of(json.loads(resp.content))
        except ValueError:
            return None


__all__ = ["ConfigPlatforms", "platform_of"]
