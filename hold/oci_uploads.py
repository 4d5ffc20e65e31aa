"""Direct uploads: the OCI blob-upload protocol, spoken by the hold itself.

The AppView starts the upload here (``io.atcr.hold.initiateDirectUpload``, service auth) and
hands the client a capability URL (hold/capability.py); the client's PATCH, status GET, PUT
and DELETE then reach the hold without passing through the AppView. Underneath, the bytes go
into the same multipart upload session (hold/uploads.py) as the proxied path's parts, and the
upload completes through the same admission (GC lease, quota reservation), so a manifest
pushed afterwards sees a directly uploaded blob exactly as it sees a proxied one.

OCI chunks have any size; storage parts must be at least the minimum part size (S3: 5 MiB)
except the last. So a part opens once that many bytes are buffered and streams on up to
`PART_SIZE`; a body that ends with fewer bytes over keeps them as a *tail* in Valkey, to open
the next chunk's first part or to become the last part. Valkey always holds what storage
acknowledged: the parts and the tail, saved together after each part; a request cut midway
loses only its unfinished part, and the status GET tells the client where to resume.

Before bytes are accepted, the hold bounds the blob by the capability's size limit and by
the user's remaining quota: a declared length that does not fit is refused before reading,
and a streamed body is cut off where it stops fitting.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from atcr.digest import Digest
from atcr.valkey import atomic, compare_and_delete
from hold.errors import BlobTooLarge, HoldError, InvalidRequest, UploadBusy, UploadNotFound
from hold.gc.guard import GcGuard
from hold.quota import QuotaExceeded, QuotaService
from hold.uploads import Admit, UploadManager

PART_SIZE = 16 * 1024 * 1024  # a part streams on to this size (plus a remainder under the minimum)
LOCK_MS = 600_000
Completion = Callable[[Admit], Awaitable[Digest]]  # completes an upload, calling `admit` before it is visible


class RangeMismatch(HoldError):
    """A chunk's Content-Range does not start where the upload ends (OCI: 416)."""

    error, status, default_message = "InvalidRange", 416, "chunk does not start at the upload's offset"

    def __init__(self, offset: int) -> None:
        super().__init__(f"the upload has {offset} bytes; the next chunk must start there")
        self.offset = offset


class TooManyUploads(HoldError):
    """The user has as many direct uploads open as the hold allows (HOLD_MAX_OPEN_UPLOADS)."""

    error, status, default_message = "TooManyUploads", 429, "too many open uploads: finish or cancel some first"


class SizeInvalid(InvalidRequest):
    error, default_message = "SizeInvalid", "body length does not match Content-Length"


@dataclass
class DirectSession:
    id: str
    did: str
    repository: str
    parts: list[dict[str, Any]] = field(default_factory=list)  # {partNumber, etag, size}
    tail: bytes = b""

    @property
    def offset(self) -> int:
        return sum(int(p["size"]) for p in self.parts) + len(self.tail)


async def admitted_completion(
    manager: UploadManager,
    did: str,
    upload_id: str,
    digest: str,
    parts: Any,
    *,
    quota: QuotaService | None,
    guard: GcGuard | None,
) -> Digest:
    """Complete an upload as every path does: under a GC lease, admitted against the quota."""
    return await admitted(
        did, lambda admit: manager.complete(did, upload_id, digest, parts, admit=admit), quota=quota, guard=guard
    )


async def admitted(
    did: str,
    complete: Completion,
    *,
    quota: QuotaService | None,
    guard: GcGuard | None,
) -> Digest:
    """Run `complete(admit)`, where `admit(blob, size)` takes a GC lease on the blob and
    reserves its size in the user's quota before anything becomes visible."""
    lease: tuple[str, str] | None = None

    async def admit(blob: Digest, size: int) -> None:
        nonlocal lease
        if guard is not None and lease is None:
            # Before the blob is committed (or found stored): a sweep deleting it finishes first,
            # and one that has not decided yet keeps it (hold/gc/guard.py).
            token, _ = await guard.acquire([str(blob)])
            lease = (token, str(blob))
        if quota is not None:
            await quota.admit_blob(did, str(blob), size)

    try:
        return await complete(admit)
    finally:
        if guard is not None and lease is not None:
            await guard.release(lease[0], [lease[1]])


class _Body:
    """A request body read with look-ahead and a byte bound."""

    def __init__(self, body: AsyncIterator[bytes], head: bytes, limit: int, over: Callable[[], HoldError]) -> None:
        self._it = body.__aiter__()
        self._buf = bytearray(head)
        self._limit = limit  # bytes the buffer and what follows may still add up to
        self._over = over
        self.received = 0
        self.eof = False

    def __len__(self) -> int:
        return len(self._buf)

    async def _next(self) -> bytes | None:
        while not self.eof:
            try:
                chunk = await self._it.__anext__()
            except StopAsyncIteration:
                self.eof = True
                return None
            if chunk:
                self.received += len(chunk)
                if self.received > self._limit:
                    raise self._over()
                return chunk
        return None

    async def fill(self, n: int) -> int:
        while len(self._buf) < n and (chunk := await self._next()) is not None:
            self._buf += chunk
        return len(self._buf)

    def take(self, n: int | None = None) -> bytes:
        n = len(self._buf) if n is None else min(n, len(self._buf))
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def read(self, n: int) -> bytes | None:
        if self._buf:
            return self.take(n)
        chunk = await self._next()
        if chunk is not None and len(chunk) > n:
            self._buf += chunk[n:]
            return chunk[:n]
        return chunk


async def _empty() -> AsyncIterator[bytes]:
    nothing: tuple[bytes, ...] = ()
    for chunk in nothing:
        yield chunk


class DirectUploads:
    def __init__(
        self,
        manager: UploadManager,
        valkey: Any,
        *,
        quota: QuotaService | None = None,
        guard: GcGuard | None = None,
        part_size: int = PART_SIZE,
        max_open: int = 0,
    ) -> None:
        self.manager = manager
        self._v = valkey
        self.quota = quota
        self.guard = guard
        self.min_part = manager.limits.part_min_size
        # Parts stay within the hold's part limit even with a remainder under the minimum.
        self.part_size = max(self.min_part, min(part_size, manager.limits.part_max_size - self.min_part))
        self.ttl = manager.limits.max_age
        # Open uploads per user (0: no cap): each holds a storage upload and up to a part's
        # minimum of tail in Valkey until it finishes or expires.
        self.max_open = max_open

    @staticmethod
    def _key(upload_id: str) -> str:
        return f"hold:oci:{upload_id}"

    @staticmethod
    def _open_key(did: str) -> str:
        return f"hold:oci-open:{did}"

    async def create(self, did: str, repository: str) -> str:
        upload_id = await self.manager.initiate(did, None, None)
        await self._save(DirectSession(upload_id, did, repository))
        if self.max_open > 0:
            await self._admit(did, upload_id)
        return upload_id

    async def _admit(self, did: str, upload_id: str) -> None:
        """Count the upload against its user's cap (one transaction: never more than the cap),
        or take it back and refuse."""
        key, now = self._open_key(did), time.time()
        out = await atomic(
            self._v,
            ("ZREMRANGEBYSCORE", key, "-inf", now),
            ("ZADD", key, now + self.ttl, upload_id),
            ("ZCARD", key),
            ("EXPIRE", key, int(self.ttl)),
        )
        count = int(out[2])
        if count <= self.max_open:
            return
        await self._v.zrem(key, upload_id)
        await self._v.delete(self._key(upload_id))
        with contextlib.suppress(HoldError):
            await self.manager.abort(did, upload_id)
        raise TooManyUploads(f"at most {self.max_open} open uploads per user: finish or cancel some first")

    async def _close(self, did: str, upload_id: str) -> None:
        async with self._v.pipeline(transaction=False) as pipe:
            pipe.delete(self._key(upload_id))
            pipe.zrem(self._open_key(did), upload_id)
            await pipe.execute()

    async def _save(self, session: DirectSession) -> None:
        async with self._v.pipeline(transaction=False) as pipe:
            pipe.hset(
                self._key(session.id),
                mapping={
                    "did": session.did, "repo": session.repository,
                    "parts": json.dumps(session.parts), "tail": session.tail,
                },
            )
            pipe.expire(self._key(session.id), self.ttl)
            await pipe.execute()

    async def get(self, upload_id: str, did: str, repository: str) -> DirectSession:
        """The session, if it is `did`'s upload into `repository`; otherwise it is unknown."""
        raw = await self._v.hgetall(self._key(upload_id))
        if not raw:
            raise UploadNotFound()
        session = DirectSession(
            id=upload_id,
            did=raw[b"did"].decode(),
            repository=raw[b"repo"].decode(),
            parts=list(json.loads(raw[b"parts"])),
            tail=raw.get(b"tail") or b"",
        )
        if session.did != did or session.repository != repository:
            raise UploadNotFound()
        return session

    @contextlib.asynccontextmanager
    async def _locked(self, upload_id: str) -> AsyncIterator[None]:
        key, token = f"{self._key(upload_id)}:lock", secrets.token_hex(8)
        if not await self._v.set(key, token, nx=True, px=LOCK_MS):
            raise UploadBusy("another request is writing to this upload")
        try:
            yield
        finally:
            await compare_and_delete(self._v, key, token)

    async def _bound(
        self, session: DirectSession, max_size: int, length: int | None
    ) -> tuple[int, Callable[[], HoldError]]:
        """How many more bytes this upload may take, and the error for one byte more."""
        offset = session.offset
        room = await self.quota.room(session.did) if self.quota is not None else None
        if room is not None and room < max_size:
            limit = room

            def over() -> HoldError:
                return QuotaExceeded(
                    f"{session.did} has {room} bytes of quota left on this hold; this blob would exceed it"
                )
        else:
            limit = max_size

            def over() -> HoldError:
                return BlobTooLarge(f"the blob may have at most {max_size} bytes")

        if length is not None and offset + length > limit:
            raise over()
        return limit - offset, over

    async def append(
        self,
        upload_id: str,
        did: str,
        repository: str,
        body: AsyncIterator[bytes],
        *,
        start: int | None,
        length: int | None,
        max_size: int,
    ) -> DirectSession:
        """Take one chunk (`start`: its Content-Range start)."""
        async with self._locked(upload_id):
            session, reader = await self._open(upload_id, did, repository, body, start=start, length=length,
                                               max_size=max_size)
            return await self._take(session, reader, length=length, final=False)

    async def _open(
        self,
        upload_id: str,
        did: str,
        repository: str,
        body: AsyncIterator[bytes],
        *,
        start: int | None,
        length: int | None,
        max_size: int,
    ) -> tuple[DirectSession, _Body]:
        """The session and a reader of its tail then `body`, bounded by size limit and quota
        (the caller holds the upload's lock)."""
        session = await self.get(upload_id, did, repository)
        if start is not None and start != session.offset:
            raise RangeMismatch(session.offset)
        bound, over = await self._bound(session, max_size, length)
        return session, _Body(body, session.tail, bound + len(session.tail), over)

    async def _take(self, session: DirectSession, reader: _Body, *, length: int | None, final: bool) -> DirectSession:
        """Store what `reader` yields as parts; `final` also stores the tail as the last part."""
        while True:
            buffered = await reader.fill(self.min_part)
            if buffered < self.min_part:  # the body ended
                if final and (buffered or not session.parts):
                    await self._write_part(session, self._whole(reader))
                    session.tail = b""
                else:
                    session.tail = reader.take()
                break
            await self._write_part(session, self._streamed(reader))
            session.tail = b""
            await self._save(session)  # the tail went into this part
        if length is not None and reader.received != length:
            await self._save(session)
            raise SizeInvalid(f"body of {reader.received} bytes, but Content-Length said {length}")
        await self._save(session)
        return session

    @staticmethod
    async def _whole(reader: _Body) -> AsyncIterator[bytes]:
        yield reader.take()

    async def _streamed(self, reader: _Body) -> AsyncIterator[bytes]:
        """One part: the buffered minimum, then the body up to the part size; a remainder
        under the minimum rides along so that no request leaves a tail behind it."""
        sent = len(reader)
        yield reader.take()
        while sent < self.part_size:
            chunk = await reader.read(self.part_size - sent)
            if chunk is None:
                return
            sent += len(chunk)
            yield chunk
        if await reader.fill(self.min_part) < self.min_part:
            rest = reader.take()
            if rest:
                yield rest

    async def _write_part(self, session: DirectSession, data: AsyncIterator[bytes]) -> None:
        number = len(session.parts) + 1
        info = await self.manager.write_part(session.did, session.id, number, data)
        session.parts.append({"partNumber": number, "etag": info.etag, "size": info.size})

    async def finish(
        self,
        upload_id: str,
        did: str,
        repository: str,
        digest: str,
        body: AsyncIterator[bytes] | None,
        *,
        start: int | None,
        length: int | None,
        max_size: int,
    ) -> Digest:
        """The closing PUT: its body (if any) is the last chunk; then verify and admit the blob.

        A blob that is whole in this request (no part stored, under a part's minimum with
        the tail: a config, a small layer, any monolithic push of one) is hashed in memory and
        written once at its address, without the part machinery: a third of the closing PUT's
        Valkey round trips, and one fsync instead of four.
        """

        async with self._locked(upload_id):  # one lock from the last chunk to the blob's admission
            session, reader = await self._open(
                upload_id, did, repository, body or _empty(), start=start, length=length, max_size=max_size
            )
            complete: Completion
            if not session.parts and await reader.fill(self.min_part) < self.min_part:
                data = reader.take()
                if length is not None and reader.received != length:
                    raise SizeInvalid(f"body of {reader.received} bytes, but Content-Length said {length}")

                def complete(admit: Admit) -> Awaitable[Digest]:
                    return self.manager.complete_whole(did, upload_id, digest, data, admit=admit)
            else:
                session = await self._take(session, reader, length=length, final=True)
                parts = [{"partNumber": p["partNumber"], "etag": p["etag"]} for p in session.parts]

                def complete(admit: Admit) -> Awaitable[Digest]:
                    return self.manager.complete(did, upload_id, digest, parts, admit=admit)
            try:
                done = await admitted(did, complete, quota=self.quota, guard=self.guard)
            except HoldError as exc:
                if exc.status < 500 and exc.status != 409:
                    # Refused for good (wrong digest, over quota): nothing of it may stay behind.
                    with contextlib.suppress(HoldError):
                        await self.manager.abort(did, upload_id)
                    await self._close(did, upload_id)
                raise
            await self._close(did, upload_id)
            return done

    async def cancel(self, upload_id: str, did: str, repository: str) -> None:
        async with self._locked(upload_id):
            await self.get(upload_id, did, repository)
            with contextlib.suppress(UploadNotFound):
                await self.manager.abort(did, upload_id)
            await self._close(did, upload_id)

