"""The storage contract the hold's upload and download logic is written against.

Two kinds of method:

* ``async`` methods are safe to await on the event loop: every blocking call behind them
  (boto3, file I/O) runs on the store's own thread pool, sized for slow transfers so they
  cannot starve the loop's default executor.
* `PartWriter` methods are plain blocking calls, to be run through `BlobStore.run` on that
  same pool. The upload manager hashes each buffer and writes it in one pool call, so the
  bytes are touched once and the GIL is released for both (OpenSSL hashing, socket/file I/O).

Staging: every upload lives under ``uploads/<staging>/`` until it is verified; only
`commit` makes bytes visible at the content address ``blobs/<alg>/<2 hex>/<hex>/data``.
The staging name starts with the upload's creation time (``<unix seconds>-<id>``) so the
sweeper can age uploads without trusting a backend's own timestamps.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from atcr.digest import Digest

T = TypeVar("T")

MAX_PART_NUMBER = 10_000
_STAGING = re.compile(r"([0-9]{1,12})-[A-Za-z0-9_-]{8,64}")


def staging_name(created: int, upload_id: str) -> str:
    return f"{created}-{upload_id}"


def staging_created(name: str) -> int | None:
    """Creation time encoded in a staging name, or None for names we did not make."""
    match = _STAGING.fullmatch(name)
    return int(match.group(1)) if match else None


def normalize_etag(etag: str) -> str:
    """S3 answers ETags quoted; clients echo them with or without the quotes."""
    return etag.strip().strip('"')


@dataclass(frozen=True)
class StagedUpload:
    """Where an upload's parts live: the staging name and the backend's own upload id (S3)."""

    staging: str
    storage_id: str = ""


@dataclass(frozen=True)
class PartInfo:
    number: int
    etag: str
    size: int


@dataclass(frozen=True)
class BlobInfo:
    """A stored blob as a listing sees it (the garbage collector's input)."""

    digest: Digest
    size: int
    modified: float  # unix time the bytes were committed (storage's own clock)


def blob_list_key(digest: Digest) -> str:
    """The order `BlobStore.list_blobs` pages in: ``<alg>/<hex>`` (storage key order)."""
    return f"{digest.algorithm}/{digest.hex}"


@dataclass(frozen=True)
class PresignedRequest:
    """A request the client makes itself, straight to storage (or to the hold's signed URL)."""

    url: str
    method: str = "PUT"
    headers: Mapping[str, str] = field(default_factory=dict)
    #: True when the bytes bypass the hold (so it cannot hash them as they pass).
    bypasses_hold: bool = True


class ChunkSink(Protocol):
    """Consumes a stream that may restart from the beginning (after a retried read)."""

    def reset(self) -> None: ...

    def update(self, data: bytes) -> None: ...


class PartWriter(Protocol):
    """Receives one part's bytes. Blocking: call only through `BlobStore.run`."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> PartInfo:
        """Make the part durable and addressable by its ETag; returns what the client echoes back."""
        ...

    def abort(self) -> None:
        """Drop what was written; safe to call after a failed write or commit."""
        ...


class BlobStore(Protocol):
    """Content-addressed blob storage with staged multipart uploads."""

    kind: str

    async def run(self, fn: Callable[[], T]) -> T:
        """Run a blocking callable on the store's thread pool."""
        ...

    async def stat(self, digest: Digest) -> int | None:
        """Size of the blob, or None when absent."""
        ...

    async def presign_get(self, digest: Digest, *, expires_in: int) -> str:
        """A URL anyone holding it may GET (with Range) until it expires."""
        ...

    async def delete(self, digest: Digest) -> bool: ...

    async def delete_many(self, digests: Sequence[Digest]) -> list[Digest]:
        """Delete the blobs (absent ones count as deleted); returns those that could not be."""
        ...

    async def list_blobs(self, *, after: str = "", limit: int = 1000) -> list[BlobInfo]:
        """Up to `limit` stored blobs whose `blob_list_key` sorts after `after`, in that order
        (an empty page: the end). Objects that are not blobs at a content address are skipped."""
        ...

    async def start_upload(self, staging: str) -> StagedUpload: ...

    def part_writer(self, upload: StagedUpload, number: int, *, offset: int | None = None) -> PartWriter:
        """A writer for part `number`. `offset` is where the part starts in the blob when the
        caller knows it (parts 1..number-1 are final); storage may use it to avoid a copy."""
        ...

    async def presign_part(self, upload: StagedUpload, number: int, *, expires_in: int) -> PresignedRequest: ...

    async def list_parts(self, upload: StagedUpload) -> list[PartInfo]:
        """The parts storage holds now (the truth to check a completion against)."""
        ...

    async def assemble(self, upload: StagedUpload, parts: Sequence[PartInfo]) -> int:
        """Join `parts` (ascending) into the staged object; returns its size. Idempotent once done."""
        ...

    async def read_staged(self, upload: StagedUpload, sink: ChunkSink) -> int:
        """Stream the staged object once into `sink` (on the pool thread); returns its size."""
        ...

    async def commit(self, upload: StagedUpload, digest: Digest) -> None:
        """Make the staged object visible under `digest` (atomically), then drop the staging."""
        ...

    async def put_whole(self, upload: StagedUpload, digest: Digest, data: bytes) -> None:
        """Store a small blob the caller holds whole and has verified under `digest` (atomically:
        absent or complete), then drop the upload's staging: one write instead of parts."""
        ...

    async def abort(self, upload: StagedUpload) -> None:
        """Drop the upload's parts and staged object, whatever state it is in."""
        ...

    async def sweep(self, older_than: float) -> int:
        """Drop uploads created before `older_than` (unix time); returns how many."""
        ...

    async def aclose(self) -> None: ...


def check_part_numbers(numbers: Sequence[int]) -> None:
    """Raise ValueError unless the numbers are in 1..10000, ascending, without duplicates."""
    previous = 0
    for n in numbers:
        if not 1 <= n <= MAX_PART_NUMBER:
            raise ValueError(f"part number {n} out of range 1..{MAX_PART_NUMBER}")
        if n <= previous:
            raise ValueError("part numbers must be ascending and unique")
        previous = n
