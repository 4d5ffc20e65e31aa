"""Blob upload sessions that any AppView replica can continue.

Docker and OCI clients send a blob as one body or as PATCH chunks of any size. Holds store
blobs as multipart uploads whose parts must be at least 5 MiB (S3's minimum) except the last.
The session therefore keeps (in Valkey) the hold's upload id, the parts sent so far, the byte
offset, and the *tail*: bytes received that were too few to open a
part (appview/oci/parts.py). The tail is flushed as the last part when the client finishes.
A per-session lock keeps two replicas from appending at once.

Each user may have at most `max_open` sessions open (`ATCR_MAX_OPEN_UPLOADS`): every session
holds a hold-side multipart upload and up to 5 MiB in Valkey for a day, so an unbounded
number of them is a cheap way to fill both. Open sessions are counted in a sorted set per
user (`av:uploads-open:<did>`, score = expiry); finished and aborted ones are pruned from it
lazily, by checking their session keys, only when the cap is reached.

What Valkey holds is always true of what the hold acknowledged: after each part the session is
saved with `offset` = the bytes in parts and an empty tail, atomically. A request that fails
halfway therefore leaves an offset at a part boundary, which the client reads back (upload
status) and resumes from; bytes received after that boundary are dropped, never doubled.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import valkey.asyncio as avalkey

from appview.errors import BlobUploadInvalid, BlobUploadUnknown, TooManyRequests
from atcr.valkey import atomic

SESSION_TTL = 24 * 3600


@dataclass
class UploadSession:
    id: str
    did: str
    repository: str
    hold_did: str
    started_at: float
    offset: int = 0
    hold_upload_id: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "id": self.id,
                "did": self.did,
                "repository": self.repository,
                "hold": self.hold_did,
                "started": self.started_at,
                "offset": self.offset,
                "holdUpload": self.hold_upload_id,
                "parts": self.parts,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> UploadSession:
        d = json.loads(raw)
        return cls(
            id=d["id"],
            did=d["did"],
            repository=d["repository"],
            hold_did=d["hold"],
            started_at=d["started"],
            offset=d["offset"],
            hold_upload_id=d.get("holdUpload"),
            parts=list(d.get("parts") or []),
        )


class UploadStore:
    def __init__(self, valkey: avalkey.Valkey, *, max_open: int = 0) -> None:
        self._v = valkey
        self.max_open = max_open  # open sessions per user; 0: no cap

    @staticmethod
    def _key(upload_id: str) -> str:
        return f"av:upload:{{{upload_id}}}"  # hash tag: the session, its tail and lock share a slot

    @staticmethod
    def _tail_key(upload_id: str) -> str:
        return f"av:upload:{{{upload_id}}}:tail"

    @staticmethod
    def valid_id(upload_id: str) -> bool:
        return 16 <= len(upload_id) <= 64 and all(c.isalnum() or c in "-_" for c in upload_id)

    async def create(self, did: str, repository: str, hold_did: str) -> UploadSession:
        session = UploadSession(
            id=secrets.token_urlsafe(24), did=did, repository=repository, hold_did=hold_did,
            started_at=time.time(),
        )
        await self._v.set(self._key(session.id), session.to_json(), ex=SESSION_TTL)
        if self.max_open > 0:
            await self._admit(session)
        return session

    async def _admit(self, session: UploadSession) -> None:
        """Count the new session against its user's cap, or remove it and answer 429.

        The session key is written first, so pruning (which drops members whose key is gone)
        never drops a session being created concurrently; ZADD and ZCARD share a transaction,
        so at most `max_open` sessions are ever admitted.
        """
        key = f"av:uploads-open:{session.did}"
        now = time.time()
        results = await atomic(
            self._v,
            ("ZREMRANGEBYSCORE", key, "-inf", now),
            ("ZADD", key, now + SESSION_TTL, session.id),
            ("ZCARD", key),
            ("EXPIRE", key, SESSION_TTL),
        )
        count = int(results[2])
        if count <= self.max_open:
            return
        members = [m.decode() if isinstance(m, bytes) else str(m) for m in await self._v.zrange(key, 0, -1)]
        others = [m for m in members if m != session.id]
        async with self._v.pipeline(transaction=False) as pipe:
            for member in others:
                pipe.exists(self._key(member))
            alive = await pipe.execute()
        gone = [m for m, live in zip(others, alive, strict=True) if not live]
        if gone:
            await self._v.zrem(key, *gone)
        if int(await self._v.zcard(key)) <= self.max_open:
            return
        await self._v.zrem(key, session.id)
        await self._v.delete(self._key(session.id))
        raise TooManyRequests(
            f"too many open uploads (at most {self.max_open} per user): finish or cancel some first",
            headers={"Retry-After": "60"},
        )

    async def get(self, upload_id: str, did: str | None = None, repository: str | None = None) -> UploadSession:
        if not self.valid_id(upload_id):
            raise BlobUploadUnknown()
        raw = await self._v.get(self._key(upload_id))
        if raw is None:
            raise BlobUploadUnknown()
        session = UploadSession.from_json(raw)
        if (did is not None and session.did != did) or (repository is not None and session.repository != repository):
            raise BlobUploadUnknown()
        return session

    async def save(self, session: UploadSession, tail: bytes) -> None:
        await atomic(
            self._v,
            ("SET", self._key(session.id), session.to_json(), "EX", SESSION_TTL),
            ("SET", self._tail_key(session.id), tail, "EX", SESSION_TTL),
        )

    async def save_progress(self, session: UploadSession) -> None:
        """Record the hold's upload id without touching the buffered tail."""
        await self._v.set(self._key(session.id), session.to_json(), ex=SESSION_TTL)

    async def tail(self, session: UploadSession) -> bytes:
        raw = await self._v.get(self._tail_key(session.id))
        return raw or b""

    async def delete(self, upload_id: str) -> None:
        await self._v.delete(self._key(upload_id), self._tail_key(upload_id))

    async def lock(self, upload_id: str) -> str:
        """Take the session's append lock or fail: chunks of one upload must not interleave."""
        token = secrets.token_hex(8)
        if not await self._v.set(f"av:upload:{{{upload_id}}}:lock", token, nx=True, px=600_000):
            raise BlobUploadInvalid("another request is writing to this upload")
        return token

    async def unlock(self, upload_id: str, token: str) -> None:
        key = f"av:upload:{{{upload_id}}}:lock"
        if await self._v.get(key) == token.encode():
            await self._v.delete(key)
