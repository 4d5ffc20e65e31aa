"""Upload sessions: parts in, one verified blob out (see docs/hold-integrity.md).

A session lives in Valkey so any hold process can take the next part. Besides the storage
handles it keeps a *hash chain*: the saved SHA-256/512 state after the longest run of parts
1..n whose bytes passed through the hold in order. Completion then proves the digest from
that state without reading anything back. When some bytes bypassed the hold (presigned S3
part URLs) or parts arrived out of order, completion assembles the staged object and reads
it back once instead. Either way the blob becomes visible at its digest only after the
proof, and a wrong digest aborts the upload, leaving nothing behind.

Rules that keep the chain honest, since S3 ETags (MD5) are not collision resistant:

* a part holds a lease while it is written, so one part number has one writer at a time,
  and completion cannot start while a lease is live;
* a part that is part of the chain is write-once: re-sending it is acknowledged only when it
  hashes to the same state (an idempotent retry), otherwise it is refused;
* handing out a URL that bypasses the hold marks the session ``direct`` first, and a direct
  session never trusts the chain.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from atcr import hashstate
from atcr.digest import Algorithm, Digest
from atcr.digest import InvalidDigest as DigestSyntaxError
from atcr.hashstate import ResumableHash
from atcr.valkey import atomic
from hold.errors import (
    BlobTooLarge,
    DigestMismatch,
    HoldError,
    InvalidDigest,
    InvalidPartNumber,
    InvalidRequest,
    MissingParts,
    PartTooLarge,
    PartTooSmall,
    SizeMismatch,
    StorageUnavailable,
    TooLarge,
    UploadBusy,
    UploadNotFound,
)
from hold.storage.base import (
    MAX_PART_NUMBER,
    BlobStore,
    PartInfo,
    PartWriter,
    PresignedRequest,
    StagedUpload,
    normalize_etag,
    staging_name,
)

log = logging.getLogger("hold.uploads")

# Called by `complete` once the blob's size is known and before it becomes visible (quotas).
Admit = Callable[[Digest, int], Awaitable[None]]

UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
FLUSH_BYTES = 1024 * 1024


class _Refused(Exception):
    """`admit` refused the blob: carries its error out past the "leave the upload open" rule."""

    def __init__(self, error: HoldError) -> None:
        super().__init__(error.message)
        self.error = error


class PartConflict(UploadBusy):
    """A part already in the verified chain was sent again with different bytes."""

    error, default_message = "PartAlreadyUploaded", "that part was already uploaded with different content"


@dataclass(frozen=True)
class UploadLimits:
    max_blob_size: int
    part_max_size: int = 64 * 1024 * 1024
    part_min_size: int = 5 * 1024 * 1024
    max_age: int = 24 * 3600
    url_expiry: int = 900
    part_lease: int = 900  # seconds one part write may hold its part number
    completion_lease: int = 1800
    done_ttl: int = 3600  # how long a finished upload answers a retried completion


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None


def _unb64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text else None


@dataclass(frozen=True)
class PartRecord:
    etag: str
    size: int
    before: bytes | None  # hash state before this part, when the part is in the chain
    after: bytes | None

    @property
    def chained(self) -> bool:
        return self.before is not None and self.after is not None

    def to_json(self) -> str:
        return json.dumps(
            {"etag": self.etag, "size": self.size, "before": _b64(self.before), "after": _b64(self.after)}
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> PartRecord:
        d = json.loads(raw)
        return cls(str(d["etag"]), int(d["size"]), _unb64(d.get("before")), _unb64(d.get("after")))


@dataclass(frozen=True)
class Session:
    id: str
    did: str
    upload: StagedUpload
    algorithm: Algorithm
    size: int | None
    created: int
    state: str
    direct: bool
    assembled: bool
    chain_n: int
    chain: bytes | None
    result: str

    @classmethod
    def from_hash(cls, upload_id: str, h: Mapping[bytes, bytes]) -> Session:
        def s(name: str, default: str = "") -> str:
            v = h.get(name.encode())
            return v.decode() if v is not None else default

        alg: Algorithm = "sha512" if s("alg") == "sha512" else "sha256"
        size = s("size")
        return cls(
            id=upload_id,
            did=s("did"),
            upload=StagedUpload(s("staging"), s("sid")),
            algorithm=alg,
            size=int(size) if size else None,
            created=int(s("created", "0")),
            state=s("state", "open"),
            direct=s("direct") == "1",
            assembled=s("assembled") == "1",
            chain_n=int(s("chain_n", "0")),
            chain=h.get(b"chain") or None,
            result=s("result"),
        )


# --- atomic steps (Lua: one round trip each, safe across processes) ------------------------------

_ACQUIRE_PART = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'gone' end
if state ~= 'open' then return 'closed' end
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held and tonumber(held) > tonumber(ARGV[2]) then return 'busy' end
redis.call('HSET', KEYS[2], ARGV[1], tonumber(ARGV[2]) + tonumber(ARGV[3]))
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 'ok'
"""

_RECORD_PART = """
redis.call('HDEL', KEYS[3], ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'gone' end
if state ~= 'open' then return 'closed' end
local record = ARGV[2]
local outcome = 'recorded'
if ARGV[3] == '1' then
  local n = tonumber(redis.call('HGET', KEYS[1], 'chain_n') or '0')
  if n == tonumber(ARGV[5]) then
    redis.call('HSET', KEYS[1], 'chain_n', ARGV[1], 'chain', ARGV[4])
    outcome = 'chained'
  else
    record = ARGV[6]
  end
end
redis.call('HSET', KEYS[2], ARGV[1], record)
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return outcome
"""

_MARK_DIRECT = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'gone' end
if state ~= 'open' then return 'closed' end
redis.call('HSET', KEYS[1], 'direct', '1')
return 'ok'
"""

# ARGV: now_ms, lease_ms, new state ('closing' or 'aborting')
_BEGIN_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'gone' end
if state == 'done' then return 'done' end
if state ~= 'open' then
  local until_ms = tonumber(redis.call('HGET', KEYS[1], 'lease') or '0')
  if until_ms > tonumber(ARGV[1]) then return 'busy' end
end
local locks = redis.call('HGETALL', KEYS[2])
for i = 2, #locks, 2 do
  if tonumber(locks[i]) > tonumber(ARGV[1]) then return 'busy' end
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'lease', tonumber(ARGV[1]) + tonumber(ARGV[2]))
return 'ok'
"""


class _HashSink:
    """Hashes a read-back stream; restarts cleanly when a retried read begins again."""

    def __init__(self, algorithm: Algorithm) -> None:
        self._algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self.size = 0

    def reset(self) -> None:
        self._hash = hashlib.new(self._algorithm)
        self.size = 0

    def update(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _wanted(digest: str) -> Digest:
    try:
        return Digest.parse(digest)
    except DigestSyntaxError as exc:
        raise InvalidDigest(str(exc)) from None


def _keys(upload_id: str) -> tuple[str, str, str]:
    # One hash tag per upload: every key of a session lands in one cluster slot (Lua needs that).
    base = f"hold:upload:{{{upload_id}}}"
    return base, base + ":parts", base + ":locks"


class UploadManager:
    """Upload sessions for one hold: initiate, parts (through the hold or presigned), complete, abort."""

    def __init__(
        self,
        store: BlobStore,
        valkey: Any,
        limits: UploadLimits,
        *,
        clock: Callable[[], float] = time.time,
        resumable: bool | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self._valkey = valkey
        self._clock = clock
        self._resumable = hashstate.available() if resumable is None else resumable
        self._acquire = valkey.register_script(_ACQUIRE_PART)
        self._record = valkey.register_script(_RECORD_PART)
        self._mark_direct = valkey.register_script(_MARK_DIRECT)
        self._begin_finish = valkey.register_script(_BEGIN_FINISH)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # --- sessions ----------------------------------------------------------------------------

    async def _load(self, upload_id: str, caller: str | None) -> Session:
        """The session, if it exists and `caller` started it (None: a hold-signed URL vouches)."""
        if not isinstance(upload_id, str) or not UPLOAD_ID.fullmatch(upload_id):
            raise UploadNotFound()
        raw = await self._valkey.hgetall(_keys(upload_id)[0])
        if not raw:
            raise UploadNotFound()
        session = Session.from_hash(upload_id, raw)
        if caller is not None and session.did != caller:
            raise UploadNotFound()  # someone else's upload looks exactly like an unknown one
        return session

    async def _records(self, upload_id: str) -> dict[int, PartRecord]:
        raw = await self._valkey.hgetall(_keys(upload_id)[1])
        return {int(k): PartRecord.from_json(v) for k, v in raw.items()}

    async def _set_state(self, upload_id: str, state: str, **extra: str) -> None:
        await self._valkey.hset(_keys(upload_id)[0], mapping={"state": state, "lease": "0", **extra})

    async def _forget(self, upload_id: str) -> None:
        await self._valkey.delete(*_keys(upload_id))

    # --- initiate ----------------------------------------------------------------------------

    async def initiate(self, caller: str, digest_hint: str | None = None, size: int | None = None) -> str:
        """Start an upload for `caller`; the optional digest only picks the hash algorithm early."""
        algorithm: Algorithm = "sha256"
        if digest_hint:
            try:
                algorithm = Digest.parse(digest_hint).algorithm
            except DigestSyntaxError as exc:
                raise InvalidDigest(str(exc)) from None
        if size is not None:
            if size < 0:
                raise InvalidRequest("size must not be negative")
            if size > self.limits.max_blob_size:
                raise BlobTooLarge(f"blob of {size} bytes exceeds this hold's limit of {self.limits.max_blob_size}")
        upload_id = secrets.token_urlsafe(24)
        created = int(self._clock())
        upload = await self.store.start_upload(staging_name(created, upload_id))
        key = _keys(upload_id)[0]
        fields = {
            "did": caller,
            "staging": upload.staging,
            "sid": upload.storage_id,
            "alg": algorithm,
            "size": "" if size is None else str(size),
            "created": str(created),
            "state": "open",
            "direct": "0",
            "chain_n": "0",
        }
        await atomic(
            self._valkey,
            ("HSET", key, *[x for kv in fields.items() for x in kv]),
            ("EXPIRE", key, self.limits.max_age),
        )
        return upload_id

    # --- parts -------------------------------------------------------------------------------

    @staticmethod
    def _check_part_number(number: int) -> None:
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= MAX_PART_NUMBER:
            raise InvalidPartNumber(f"part number must be between 1 and {MAX_PART_NUMBER}")

    async def part_url(self, caller: str, upload_id: str, number: int) -> PresignedRequest:
        """Where the client may PUT part `number` itself (S3 presigned, or the hold's signed URL)."""
        self._check_part_number(number)
        session = await self._load(upload_id, caller)
        if session.state != "open":
            raise UploadBusy()
        request = await self.store.presign_part(session.upload, number, expires_in=self.limits.url_expiry)
        if request.bypasses_hold:
            # Mark before the URL leaves: a session that handed out a direct URL never trusts its chain.
            outcome = await self._mark_direct(keys=[_keys(upload_id)[0]], args=[])
            self._raise_for_outcome(outcome)
        return request

    @staticmethod
    def _raise_for_outcome(outcome: bytes | str) -> None:
        text = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        if text == "gone":
            raise UploadNotFound()
        if text in ("closed", "busy"):
            raise UploadBusy()

    async def write_part(
        self,
        caller: str | None,
        upload_id: str,
        number: int,
        body: AsyncIterator[bytes],
        *,
        content_length: int | None = None,
    ) -> PartInfo:
        """Stream one part into storage, hashing it into the chain when it is the next in order."""
        self._check_part_number(number)
        session = await self._load(upload_id, caller)
        if session.state != "open":
            raise UploadBusy() if session.state != "done" else UploadNotFound()
        if content_length is not None and content_length > self.limits.part_max_size:
            raise PartTooLarge(f"part of {content_length} bytes exceeds {self.limits.part_max_size} bytes")

        keys = _keys(upload_id)
        outcome = await self._acquire(
            keys=[keys[0], keys[2]], args=[number, self._now_ms(), self.limits.part_lease * 1000]
        )
        if outcome in (b"busy", "busy"):
            raise UploadBusy(f"part {number} is being uploaded by another request")
        self._raise_for_outcome(outcome)

        writer: PartWriter | None = None
        committed = False
        lock_held = True
        try:
            # Read the chain only now that this part number is ours: a writer that finished
            # between our first look and the lease must be seen.
            session = await self._load(upload_id, caller)
            records = await self._records(upload_id)
            others = sum(r.size for n, r in records.items() if n != number)
            limit = self.limits.part_max_size
            too_large: type[TooLarge] = PartTooLarge
            cap = (session.size if session.size is not None else self.limits.max_blob_size) - others
            if cap < limit:
                limit, too_large = max(0, cap), BlobTooLarge
            if content_length is not None and content_length > limit:
                raise too_large(f"part of {content_length} bytes exceeds the {limit} bytes still allowed")

            existing = records.get(number)
            hasher: ResumableHash | None = None
            mode = "plain"
            if self._resumable:
                if existing is not None and existing.chained and existing.before is not None:
                    mode, hasher = "verify", ResumableHash.restore(existing.before)
                elif number == session.chain_n + 1:
                    mode = "chain"
                    hasher = (
                        ResumableHash.restore(session.chain)
                        if session.chain_n and session.chain
                        else ResumableHash(session.algorithm)
                    )
            before = hasher.save() if hasher is not None else None
            if mode != "verify":
                # A part that extends the chain starts where the chained parts end (they are
                # write-once): storage may write it in place and skip the copy at assembly.
                offset = sum(r.size for n, r in records.items() if n < number) if mode == "chain" else None
                writer = self.store.part_writer(session.upload, number, offset=offset)
            total = await self._pump(body, hasher, writer, limit, too_large)
            if content_length is not None and total != content_length:
                raise InvalidRequest(f"body ended after {total} of {content_length} bytes")

            if mode == "verify":
                assert hasher is not None and existing is not None
                if hasher.save() == existing.after and total == existing.size:
                    return PartInfo(number, existing.etag, total)  # an idempotent retry
                raise PartConflict(f"part {number} is already uploaded with different content")

            assert writer is not None
            info = await self.store.run(writer.commit)
            committed = True
            after = hasher.save() if hasher is not None else None
            plain = PartRecord(info.etag, info.size, None, None).to_json()
            chained = PartRecord(info.etag, info.size, before, after).to_json()
            lock_held = False  # the script releases it, whatever else it finds
            outcome = await self._record(
                keys=list(keys),
                args=[number, chained if mode == "chain" else plain, "1" if mode == "chain" else "0",
                      after or b"", number - 1, plain],
            )
            self._raise_for_outcome(outcome)
            return info
        finally:
            if writer is not None and not committed:
                with contextlib.suppress(Exception):
                    await self.store.run(writer.abort)
            if lock_held:
                with contextlib.suppress(Exception):
                    await self._valkey.hdel(keys[2], number)

    async def _pump(
        self,
        body: AsyncIterator[bytes],
        hasher: ResumableHash | None,
        writer: PartWriter | None,
        limit: int,
        too_large: type[TooLarge],
    ) -> int:
        """Move the body to storage in ~1 MiB steps, each hashed and written on the pool thread.

        One step runs while the next buffer fills, so receiving, hashing and writing overlap;
        hashing and writing stay strictly in order.
        """

        def step(data: bytes) -> None:
            if hasher is not None:
                hasher.update(data)
            if writer is not None:
                writer.write(data)

        total = 0
        buf: list[bytes] = []
        buffered = 0
        pending: asyncio.Future[None] | None = None
        try:
            async for chunk in body:
                if not chunk:
                    continue
                total += len(chunk)
                if total > limit:
                    raise too_large(f"body exceeds the {limit} bytes allowed for this part")
                buf.append(chunk)
                buffered += len(chunk)
                if buffered >= FLUSH_BYTES:
                    data = b"".join(buf)
                    buf, buffered = [], 0
                    if pending is not None:
                        await pending
                    pending = asyncio.ensure_future(self.store.run(partial(step, data)))
            if pending is not None:
                await pending
                pending = None
            if buf:
                await self.store.run(partial(step, b"".join(buf)))
            return total
        finally:
            if pending is not None and not pending.done():
                with contextlib.suppress(BaseException):
                    await pending

    # --- complete / abort -------------------------------------------------------------------

    @staticmethod
    def _parse_parts(parts: Any) -> list[tuple[int, str]]:
        if not isinstance(parts, list) or not parts:
            raise InvalidRequest("parts must be a non-empty list")
        if len(parts) > MAX_PART_NUMBER:
            raise InvalidRequest(f"at most {MAX_PART_NUMBER} parts")
        out: dict[int, str] = {}
        for p in parts:
            if not isinstance(p, dict):
                raise InvalidRequest("each part must be an object {partNumber, etag}")
            number, etag = p.get("partNumber"), p.get("etag")
            if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= MAX_PART_NUMBER:
                raise InvalidPartNumber(f"part number must be between 1 and {MAX_PART_NUMBER}")
            if not isinstance(etag, str) or not etag or len(etag) > 256:
                raise InvalidRequest(f"part {number}: etag must be a non-empty string")
            if number in out:
                raise InvalidRequest(f"part {number} is listed twice")
            out[number] = etag
        return sorted(out.items())

    async def _begin(self, upload_id: str, state: str) -> str:
        keys = _keys(upload_id)
        outcome = await self._begin_finish(
            keys=[keys[0], keys[2]], args=[self._now_ms(), self.limits.completion_lease * 1000, state]
        )
        return outcome.decode() if isinstance(outcome, bytes) else str(outcome)

    async def complete(
        self, caller: str, upload_id: str, digest: str, parts: Any, *, admit: Admit | None = None
    ) -> Digest:
        """Verify the parts against `digest` and make the blob visible, or refuse and clean up.

        `admit(digest, size)` runs when the size is known, before anything becomes visible; a
        refusal (a 4xx `HoldError`, e.g. over quota) discards the upload like a wrong digest.
        """
        wanted = _wanted(digest)
        listed = self._parse_parts(parts)
        return await self._completing(
            caller, upload_id, wanted, lambda session: self._finish(session, wanted, listed, admit)
        )

    async def complete_whole(
        self, caller: str, upload_id: str, digest: str, data: bytes, *, admit: Admit | None = None
    ) -> Digest:
        """`complete` for an upload with no part stored whose bytes the caller holds whole (a
        small blob in one request): hashed here, admitted, written once at its address."""
        wanted = _wanted(digest)
        return await self._completing(
            caller, upload_id, wanted, lambda session: self._finish_whole(session, wanted, data, admit)
        )

    async def _completing(
        self, caller: str, upload_id: str, wanted: Digest, finish: Callable[[Session], Awaitable[None]]
    ) -> Digest:
        """Run `finish` as the session's one completion, and mark the upload done after it."""
        session = await self._load(upload_id, caller)
        if session.state != "done":
            began = await self._begin(upload_id, "closing")
            if began == "gone":
                raise UploadNotFound()
            if began == "busy":
                raise UploadBusy("the upload is still receiving parts or being completed")
            if began != "done":
                await self._finished(session, wanted, finish)
                return wanted
            session = await self._load(upload_id, caller)  # another request completed it meanwhile
        if session.result == str(wanted):
            return wanted  # a retried completion whose first answer was lost
        raise UploadNotFound()

    async def _finished(self, session: Session, wanted: Digest, finish: Callable[[Session], Awaitable[None]]) -> None:
        upload_id = session.id
        try:
            await finish(session)
        except DigestMismatch:
            await self._discard(session)
            raise
        except _Refused as refused:
            await self._discard(session)
            raise refused.error from None
        except BaseException:
            # Nothing was made visible; let the client fix what it sent and try again.
            with contextlib.suppress(Exception):
                await self._set_state(upload_id, "open")
            raise
        done = {"state": "done", "result": str(wanted)}
        keys = _keys(upload_id)
        await atomic(
            self._valkey,
            ("HSET", keys[0], *[x for kv in {**done, "chain": b"", "lease": "0"}.items() for x in kv]),
            ("EXPIRE", keys[0], self.limits.done_ttl),
            ("DEL", keys[1]),
            ("DEL", keys[2]),
        )

    async def _finish_whole(self, session: Session, wanted: Digest, data: bytes, admit: Admit | None) -> None:
        size = len(data)
        if size > self.limits.max_blob_size or (session.size is not None and size > session.size):
            raise BlobTooLarge(f"the blob has {size} bytes, more than declared or allowed")
        if session.size is not None and size != session.size:
            raise SizeMismatch(f"the blob has {size} bytes, but {session.size} were declared")
        if hashlib.new(wanted.algorithm, data).hexdigest() != wanted.hex:
            raise DigestMismatch(f"the uploaded content does not hash to {wanted}")
        await self._admit(admit, wanted, size)
        if await self.store.stat(wanted) is not None:
            await self.store.abort(session.upload)  # already stored: nothing to write
            return
        await self.store.put_whole(session.upload, wanted, data)

    @staticmethod
    async def _admit(admit: Admit | None, wanted: Digest, size: int) -> None:
        if admit is None:
            return
        try:
            await admit(wanted, size)
        except HoldError as exc:
            if exc.status >= 500:
                raise
            raise _Refused(exc) from None

    async def _finish(
        self, session: Session, wanted: Digest, listed: Sequence[tuple[int, str]], admit: Admit | None = None
    ) -> None:
        upload = session.upload
        if session.assembled:
            await self._verify_staged_and_commit(session, wanted, admit)
            return
        stored = {p.number: p for p in await self.store.list_parts(upload)}
        chosen: list[PartInfo] = []
        for number, etag in listed:
            part = stored.get(number)
            if part is None or normalize_etag(part.etag) != normalize_etag(etag):
                raise MissingParts(f"part {number} with ETag {etag[:80]!r} was not uploaded")
            chosen.append(part)
        for part in chosen[:-1]:
            if part.size < self.limits.part_min_size:
                raise PartTooSmall(
                    f"part {part.number} is {part.size} bytes; every part but the last must be at least "
                    f"{self.limits.part_min_size} bytes"
                )
        total = sum(p.size for p in chosen)
        if total > self.limits.max_blob_size or (session.size is not None and total > session.size):
            raise BlobTooLarge(f"the parts add up to {total} bytes, more than declared or allowed")
        if session.size is not None and total != session.size:
            raise SizeMismatch(f"the parts add up to {total} bytes, but {session.size} were declared")
        await self._admit(admit, wanted, total)

        records = await self._records(session.id)
        numbers = [n for n, _ in listed]
        chain_ok = (
            self._resumable
            and not session.direct
            and session.algorithm == wanted.algorithm
            and session.chain is not None
            and session.chain_n == len(listed)
            and numbers == list(range(1, len(listed) + 1))
            and all(
                (rec := records.get(n)) is not None
                and rec.chained
                and normalize_etag(rec.etag) == normalize_etag(part.etag)
                and rec.size == part.size
                for n, part in zip(numbers, chosen, strict=True)
            )
        )
        if chain_ok:
            assert session.chain is not None
            proven = ResumableHash.restore(session.chain)
            if proven.length != total or proven.hexdigest() != wanted.hex:
                raise DigestMismatch(f"the uploaded content does not hash to {wanted}")
            log.debug("upload %s verified from its hash chain", session.id)
            if await self.store.stat(wanted) is not None:
                await self.store.abort(upload)  # already stored: nothing to assemble
                return
            await self.store.assemble(upload, chosen)
            await self._valkey.hset(_keys(session.id)[0], "assembled", "1")
            await self.store.commit(upload, wanted)
            return
        await self.store.assemble(upload, chosen)
        await self._valkey.hset(_keys(session.id)[0], "assembled", "1")
        await self._verify_staged_and_commit(session, wanted)

    async def _verify_staged_and_commit(self, session: Session, wanted: Digest, admit: Admit | None = None) -> None:
        """The one read-back pass, for bytes the hold did not see in order."""
        sink = _HashSink(wanted.algorithm)
        await self.store.read_staged(session.upload, sink)
        if sink.hexdigest() != wanted.hex:
            raise DigestMismatch(f"the uploaded content does not hash to {wanted}")
        if session.assembled:  # a retried completion: `_finish` did not see the size this time
            await self._admit(admit, wanted, sink.size)
        if await self.store.stat(wanted) is not None:
            await self.store.abort(session.upload)
            return
        await self.store.commit(session.upload, wanted)

    async def _discard(self, session: Session) -> None:
        try:
            await self.store.abort(session.upload)
        finally:
            await self._forget(session.id)

    async def abort(self, caller: str, upload_id: str) -> None:
        session = await self._load(upload_id, caller)
        if session.state == "done":
            raise UploadNotFound()
        began = await self._begin(upload_id, "aborting")
        if began in ("gone", "done"):
            raise UploadNotFound()
        if began == "busy":
            raise UploadBusy("the upload is receiving a part or being completed")
        try:
            await self.store.abort(session.upload)
        except StorageUnavailable:
            await self._set_state(upload_id, "open")
            raise
        await self._forget(upload_id)

    async def sweep(self) -> int:
        """Drop storage of uploads older than the maximum age (their sessions have expired)."""
        return await self.store.sweep(self._clock() - self.limits.max_age)

