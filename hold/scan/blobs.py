"""Blobs of the hold's own repo (the SBOM and report a scan record points at), on local disk.

They are not layer blobs: keeping them out of the blob store keeps them out of quotas and of
the garbage collector, which deletes what no layer record references. A blob is named by its
raw CIDv1 (sha2-256), so its `sha256:` OCI digest is the same hash: the AppView serves it as
a referrer blob by that digest (docs/scanning-service.md). Written atomically (temp file + rename).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from atcr.dagcbor import RAW, SHA2_256, Cid

MAX_BLOB = 64 * 1024 * 1024


def cid_of(data: bytes) -> str:
    return str(Cid.for_block(data, RAW))


def cid_to_digest(cid: str) -> str | None:
    """``sha256:<hex>`` of a raw sha2-256 CID, or None when `cid` is something else."""
    try:
        parsed = Cid.parse(cid)
    except ValueError:
        return None
    raw = parsed.raw
    if raw[1] != RAW or raw[2:4] != bytes((SHA2_256, 32)) or len(raw) != 36:
        return None
    return "sha256:" + raw[4:].hex()


def digest_to_cid(digest: str) -> str:
    return str(Cid(bytes((1, RAW, SHA2_256, 32)) + bytes.fromhex(digest.removeprefix("sha256:"))))


class RepoBlobs:
    """`AtprotoBlobs` for hold/routes_blob.py, plus `put`."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, cid: str) -> Path:
        return self._root / cid

    async def put(self, data: bytes, mime: str) -> dict[str, Any]:
        """Store `data`; returns the record's blob object (`{$type: blob, ref, mimeType, size}`)."""
        cid = cid_of(data)

        def write() -> None:
            self._root.mkdir(parents=True, exist_ok=True)
            for name, content in ((cid, data), (cid + ".type", mime.encode())):
                fd, tmp = tempfile.mkstemp(dir=self._root, prefix=".tmp-")
                try:
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(content)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, self._path(name))
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise

        await asyncio.to_thread(write)
        return {"$type": "blob", "ref": {"$link": cid}, "mimeType": mime, "size": len(data)}

    async def get_blob(self, cid: str) -> tuple[bytes, str] | None:
        if cid_to_digest(cid) is None:
            return None

        def read() -> tuple[bytes, str] | None:
            try:
                data = self._path(cid).read_bytes()
                mime = self._path(cid + ".type").read_text().strip()
            except FileNotFoundError:
                return None
            return data, mime or "application/octet-stream"

        return await asyncio.to_thread(read)
