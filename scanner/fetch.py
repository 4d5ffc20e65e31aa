"""Layers from a hold to a file on disk, streamed and checked against their digest.

The hold's `getBlob` answers a presigned URL (its own signed URL, or S3's); the bytes are
streamed from there to a file in chunks, hashed on the way, and a layer whose bytes do not
hash to its digest or run past its declared size is refused, so a scan never runs on
something other than what was pushed. Both requests go through the SSRF-guarded client.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx

from atcr.errors import AtcrError
from atcr.http import SafeHttpClient
from scanner.errors import LayerFetchError

CHUNK = 1024 * 1024


async def fetch_layer(
    http: SafeHttpClient,
    hold_url: str,
    hold_did: str,
    layer: dict[str, Any],
    target: Path,
    *,
    secret: str,
    timeout: float,
) -> int:
    """Download `layer` ({digest, size}) into `target`; returns its size."""
    digest, size = str(layer["digest"]), int(layer["size"])
    algorithm, _, want = digest.partition(":")
    if algorithm != "sha256" or len(want) != 64:
        raise LayerFetchError(f"layer {digest[:80]}: only sha256 digests are scanned")
    try:
        async with asyncio.timeout(timeout):
            resp = await http.get(
                f"{hold_url.rstrip('/')}/xrpc/com.atproto.sync.getBlob",
                params={"did": hold_did, "cid": digest},
                headers={"X-Scanner-Secret": secret},
            )
            if resp.status_code != 200:
                raise LayerFetchError(f"layer {digest}: the hold answered {resp.status_code}")
            url = resp.json().get("url")
            if not isinstance(url, str):
                raise LayerFetchError(f"layer {digest}: the hold gave no download URL")
            h = hashlib.sha256()
            got = 0
            async with http.raw.stream("GET", url) as stream:
                if stream.status_code != 200:
                    raise LayerFetchError(f"layer {digest}: storage answered {stream.status_code}")
                with target.open("wb") as out:
                    async for chunk in stream.aiter_bytes(CHUNK):
                        got += len(chunk)
                        if got > size:
                            raise LayerFetchError(f"layer {digest}: more than its declared {size} bytes")
                        h.update(chunk)
                        await asyncio.to_thread(out.write, chunk)
    except TimeoutError:
        raise LayerFetchError(f"layer {digest}: not downloaded within {timeout:.0f} s") from None
    except (httpx.HTTPError, AtcrError, ValueError) as exc:
        raise LayerFetchError(f"layer {digest}: {type(exc).__name__}: {str(exc)[:200]}") from None
    if got != size or h.hexdigest() != want:
        raise LayerFetchError(f"layer {digest}: the downloaded bytes do not match the digest and size")
    return got
