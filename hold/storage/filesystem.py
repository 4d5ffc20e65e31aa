"""Local-disk blob storage (the embedded default): the same contract as S3, on one filesystem.

Every part is fsynced before it is acknowledged: a part the hold has acknowledged survives a
crash, so a digest proven from the running hash is the digest of what is on disk. The bytes
are synced in the background while they arrive (`_EarlySync`), so that fsync waits for the
last few MiB only, not for the whole part while the client stalls. Parts that
extend the hash chain (the usual case: an AppView sends parts in order) are written straight
to their offset in one staging file, so assembly is a rename and each byte is written once;
other parts go to files of their own and assembly concatenates them in the kernel
(``copy_file_range``). `commit` renames the staged file to the content address: on one
filesystem a rename is atomic, so a blob is either absent or complete and verified, never
half there.

Pulls redirect to URLs the hold signs with HMAC and serves itself (hold/signed_urls.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TypeVar

from atcr.digest import Digest, InvalidDigest
from hold.errors import MissingParts, StorageError, UploadNotFound
from hold.signed_urls import UrlSigner
from hold.storage.base import (
    BlobInfo,
    ChunkSink,
    PartInfo,
    PresignedRequest,
    StagedUpload,
    normalize_etag,
    staging_created,
)

T = TypeVar("T")

READ_CHUNK = 1024 * 1024
BLOB_URL_PREFIX = "/_hold/blobs"
UPLOAD_URL_PREFIX = "/_hold/uploads"
IN_PLACE = "inplace"  # staging/inplace: parts that extend the hash chain, each at its offset
IN_PLACE_SUFFIX = ".at"
EARLY_SYNC_BYTES = 8 * 1024 * 1024
EARLY_SYNC_THREADS = 4
_SYNCS = ThreadPoolExecutor(max_workers=EARLY_SYNC_THREADS, thread_name_prefix="hold-early-sync")


def upload_id_of(staging: str) -> str:
    return staging.split("-", 1)[1]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_into(dst: IO[bytes], src_path: Path, offset: int = 0, length: int | None = None) -> int:
    """Append `length` bytes of a file from `offset` (default: all of it) to `dst`, in the kernel
    where possible; returns bytes copied."""
    total = 0
    with open(src_path, "rb") as src:
        size = os.fstat(src.fileno()).st_size - offset if length is None else length
        try:
            while total < size:
                n = os.copy_file_range(src.fileno(), dst.fileno(), size - total, offset + total)
                if n == 0:
                    break
                total += n
        except OSError:
            src.seek(offset + total)
            dst.seek(0, os.SEEK_END)
            while total < size and (chunk := src.read(min(READ_CHUNK, size - total))):
                dst.write(chunk)
                total += len(chunk)
    return total


def _parse_part(name: str) -> tuple[int, str, bool] | None:
    """`00003.<etag>` (a part file) or `00003.<etag>.at` (a part written in place): number, etag, in place."""
    number, _, etag = name.partition(".")
    if not number.isdigit() or not etag or etag.endswith(".tmp"):
        return None
    in_place = etag.endswith(IN_PLACE_SUFFIX)
    return int(number), etag.removesuffix(IN_PLACE_SUFFIX), in_place


def _in_place_range(marker: Path) -> tuple[int, int]:
    offset, size = marker.read_text().split()
    return int(offset), int(size)


class _EarlySync:
    """fdatasync in the background while a part's bytes still arrive.

    An fsync costs in proportion to what was written since the last one (~1.8 ms per MiB on a
    virtio disk, the host flushing its cache): one at the end of a 50 MB layer stalled the
    client ~90 ms while nothing was received. Syncing every `every` bytes on a side thread,
    at most one at a time, leaves the commit's own fsync, which is what makes a part durable
    before it is acknowledged, only the last few MiB. It never replaces that fsync.
    """

    def __init__(self, every: int = EARLY_SYNC_BYTES) -> None:
        self._every = every
        self._unsynced = 0
        self._flight: Future[None] | None = None

    def wrote(self, fd: int, n: int) -> None:
        self._unsynced += n
        if self._unsynced >= self._every and (self._flight is None or self._flight.done()):
            self._unsynced = 0
            self._flight = _SYNCS.submit(os.fdatasync, fd)

    def settle(self) -> None:
        """Wait for the sync in flight (before the fd is synced for good or closed); its
        failure does not matter here: the commit's fsync reports any I/O error itself. One
        still queued behind other uploads' syncs is dropped rather than waited for."""
        if self._flight is not None and not self._flight.cancel():
            with contextlib.suppress(OSError):
                self._flight.result()
        self._flight = None


def _move_in(staged: Path, final: Path, staging: Path) -> None:
    """Make a verified, fsynced file visible at its content address (an atomic rename, made
    durable), then drop the upload's staging directory."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    _fsync_dir(final.parent)
    shutil.rmtree(staging, ignore_errors=True)


def _supersede(final: Path, number: int) -> None:
    """The last write of a part number wins, as on S3: drop the part's other files and markers."""
    for other in final.parent.glob(f"{number:05d}.*"):
        if other != final:
            other.unlink(missing_ok=True)


class _FsPartWriter:
    def __init__(self, parts_dir: Path, number: int) -> None:
        self._dir = parts_dir
        self._number = number
        self._tmp = parts_dir / f".{number:05d}.{secrets.token_hex(8)}.tmp"
        self._fh: IO[bytes] | None = None
        self._size = 0
        self._sync = _EarlySync()

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            if not self._dir.parent.is_dir():
                raise UploadNotFound("upload was aborted or expired")
            self._dir.mkdir(exist_ok=True)
            self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        return self._fh

    def write(self, data: bytes) -> None:
        fh = self._open()
        fh.write(data)
        self._size += len(data)
        self._sync.wrote(fh.fileno(), len(data))

    def commit(self) -> PartInfo:
        fh = self._open()
        fh.flush()
        self._sync.settle()
        os.fsync(fh.fileno())
        fh.close()
        etag = secrets.token_hex(16)
        final = self._dir / f"{self._number:05d}.{etag}"
        os.replace(self._tmp, final)
        _supersede(final, self._number)
        return PartInfo(self._number, etag, self._size)

    def abort(self) -> None:
        self._sync.settle()
        if self._fh is not None:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)


class _FsInPlaceWriter:
    """Writes a part at its final offset in the staging file, so assembly is a rename.

    Used for parts that extend the hash chain: the parts before them are write-once, so the
    offset cannot change. The marker `parts/<n>.<etag>.at` (offset and size) is renamed into
    place only after the bytes are fsynced: a marker always names durable bytes. Bytes past
    the marked parts (an aborted writer's) are never read, and assembly cuts them off.
    """

    def __init__(self, staging: Path, number: int, offset: int) -> None:
        self._staging = staging
        self._number = number
        self._offset = offset
        self._fd: int | None = None
        self._size = 0
        self._sync = _EarlySync()

    def _open(self) -> int:
        if self._fd is None:
            if not (self._staging / "parts").is_dir():
                raise UploadNotFound("upload was aborted or expired")
            self._fd = os.open(self._staging / IN_PLACE, os.O_WRONLY | os.O_CREAT, 0o644)
        return self._fd

    def write(self, data: bytes) -> None:
        fd = self._open()
        view, pos = memoryview(data), self._offset + self._size
        while view:
            n = os.pwrite(fd, view, pos)
            view, pos = view[n:], pos + n
        self._size += len(data)
        self._sync.wrote(fd, len(data))

    def commit(self) -> PartInfo:
        fd = self._open()
        self._sync.settle()
        os.fsync(fd)
        os.close(fd)
        self._fd = None
        parts = self._staging / "parts"
        etag = secrets.token_hex(16)
        tmp = parts / f".{self._number:05d}.{etag}.tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{self._offset} {self._size}")
            fh.flush()
            os.fsync(fh.fileno())
        final = parts / f"{self._number:05d}.{etag}{IN_PLACE_SUFFIX}"
        os.replace(tmp, final)
        _supersede(final, self._number)
        return PartInfo(self._number, etag, self._size)

    def abort(self) -> None:
        self._sync.settle()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FilesystemBlobStore:
    kind = "filesystem"

    def __init__(self, root: Path, signer: UrlSigner, *, threads: int = 16) -> None:
        self.root = root
        self._signer = signer
        self._blobs = root / "blobs"
        self._uploads = root / "uploads"
        for d in (self._blobs, self._uploads):
            d.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hold-fs")

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def blob_file(self, digest: Digest) -> Path:
        return self.root / digest.blob_path

    def _staging_dir(self, upload: StagedUpload) -> Path:
        if staging_created(upload.staging) is None:
            raise UploadNotFound("invalid staging name")
        return self._uploads / upload.staging

    async def stat(self, digest: Digest) -> int | None:
        def probe() -> int | None:
            try:
                return self.blob_file(digest).stat().st_size
            except FileNotFoundError:
                return None

        return await self.run(probe)

    async def presign_get(self, digest: Digest, *, expires_in: int) -> str:
        return self._signer.sign("GET", f"{BLOB_URL_PREFIX}/{digest.algorithm}/{digest.hex}", expires_in=expires_in)

    async def delete(self, digest: Digest) -> bool:
        def remove() -> bool:
            path = self.blob_file(digest)
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # the empty <hex> directory, so listings skip it
            return True

        return await self.run(remove)

    async def delete_many(self, digests: Sequence[Digest]) -> list[Digest]:
        def remove_all() -> list[Digest]:
            failed = []
            for digest in digests:
                path = self.blob_file(digest)
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError:
                    failed.append(digest)
                    continue
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
            return failed

        return await self.run(remove_all)

    async def list_blobs(self, *, after: str = "", limit: int = 1000) -> list[BlobInfo]:
        def walk() -> list[BlobInfo]:
            out: list[BlobInfo] = []
            after_alg, _, after_hex = after.partition("/")
            for alg_dir in sorted(p for p in self._blobs.iterdir() if p.is_dir()):
                alg = alg_dir.name
                if alg < after_alg:
                    continue
                for prefix_dir in sorted(p for p in alg_dir.iterdir() if p.is_dir()):
                    if alg == after_alg and prefix_dir.name < after_hex[:2]:
                        continue
                    for hex_dir in sorted(prefix_dir.iterdir()):
                        if alg == after_alg and hex_dir.name <= after_hex:
                            continue
                        try:
                            digest = Digest.parse(f"{alg}:{hex_dir.name}")
                            st = (hex_dir / "data").stat()
                        except (InvalidDigest, OSError):
                            continue  # not a blob we wrote, or deleted meanwhile
                        out.append(BlobInfo(digest, st.st_size, st.st_mtime))
                        if len(out) >= limit:
                            return out
            return out

        return await self.run(walk)

    async def start_upload(self, staging: str) -> StagedUpload:
        upload = StagedUpload(staging)
        path = self._staging_dir(upload)
        await self.run(lambda: (path / "parts").mkdir(parents=True, exist_ok=False))
        return upload

    def part_writer(
        self, upload: StagedUpload, number: int, *, offset: int | None = None
    ) -> _FsPartWriter | _FsInPlaceWriter:
        staging = self._staging_dir(upload)
        if offset is not None:
            return _FsInPlaceWriter(staging, number, offset)
        return _FsPartWriter(staging / "parts", number)

    async def presign_part(self, upload: StagedUpload, number: int, *, expires_in: int) -> PresignedRequest:
        path = f"{UPLOAD_URL_PREFIX}/{upload_id_of(upload.staging)}/{number}"
        url = self._signer.sign("PUT", path, expires_in=expires_in)
        return PresignedRequest(url=url, method="PUT", headers={}, bypasses_hold=False)

    def _list_parts_sync(self, upload: StagedUpload) -> list[PartInfo]:
        parts_dir = self._staging_dir(upload) / "parts"
        if not parts_dir.is_dir():
            raise UploadNotFound("upload was aborted or expired")
        out: dict[int, PartInfo] = {}
        for entry in parts_dir.iterdir():
            parsed = _parse_part(entry.name)
            if parsed is None:
                continue
            number, etag, in_place = parsed
            size = _in_place_range(entry)[1] if in_place else entry.stat().st_size
            out[number] = PartInfo(number, etag, size)
        return [out[n] for n in sorted(out)]

    async def list_parts(self, upload: StagedUpload) -> list[PartInfo]:
        return await self.run(lambda: self._list_parts_sync(upload))

    async def assemble(self, upload: StagedUpload, parts: Sequence[PartInfo]) -> int:
        staging = self._staging_dir(upload)

        def join() -> int:
            data = staging / "data"
            if data.exists():  # a retried completion: already assembled
                return data.stat().st_size
            # Each part as (file, offset, length): a part file whole, or a range of the in-place file.
            pieces: list[tuple[Path, int, int | None]] = []
            for part in parts:
                base = staging / "parts" / f"{part.number:05d}.{normalize_etag(part.etag)}"
                marker = base.with_name(base.name + IN_PLACE_SUFFIX)
                if marker.is_file():
                    at, size = _in_place_range(marker)
                    pieces.append((staging / IN_PLACE, at, size))
                elif base.is_file():
                    pieces.append((base, 0, None))
                else:
                    raise MissingParts(f"part {part.number} with that ETag was not uploaded")
            tmp = staging / f".data.{secrets.token_hex(4)}.tmp"
            try:
                end = 0
                for path, start, length in pieces:
                    if path.name != IN_PLACE or start != end or length is None:
                        break
                    end += length
                else:
                    # Every part is in place, back to back from 0: cut off any aborted writer's
                    # bytes and rename. No byte is copied.
                    with open(staging / IN_PLACE, "r+b") as fh:
                        fh.truncate(end)
                        os.fsync(fh.fileno())
                    os.replace(staging / IN_PLACE, data)
                    shutil.rmtree(staging / "parts", ignore_errors=True)
                    return end
                with open(tmp, "wb") as out:
                    for path, start, length in pieces:
                        _copy_into(out, path, start, length)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, data)
            except OSError as exc:
                raise StorageError(f"could not assemble the upload: {exc.strerror}") from None
            finally:
                tmp.unlink(missing_ok=True)
            shutil.rmtree(staging / "parts", ignore_errors=True)
            return data.stat().st_size

        return await self.run(join)

    async def read_staged(self, upload: StagedUpload, sink: ChunkSink) -> int:
        data = self._staging_dir(upload) / "data"

        def read() -> int:
            total = 0
            sink.reset()
            with open(data, "rb") as fh:
                while chunk := fh.read(READ_CHUNK):
                    sink.update(chunk)
                    total += len(chunk)
            return total

        return await self.run(read)

    async def commit(self, upload: StagedUpload, digest: Digest) -> None:
        staging = self._staging_dir(upload)
        final = self.blob_file(digest)

        await self.run(lambda: _move_in(staging / "data", final, staging))

    async def put_whole(self, upload: StagedUpload, digest: Digest, data: bytes) -> None:
        staging = self._staging_dir(upload)
        final = self.blob_file(digest)

        def write() -> None:
            if not staging.is_dir():
                raise UploadNotFound("upload was aborted or expired")
            tmp = staging / f".whole.{secrets.token_hex(4)}.tmp"
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                _move_in(tmp, final, staging)
            except OSError as exc:
                raise StorageError(f"could not store the blob: {exc.strerror}") from None
            finally:
                tmp.unlink(missing_ok=True)

        await self.run(write)

    async def abort(self, upload: StagedUpload) -> None:
        staging = self._staging_dir(upload)
        await self.run(lambda: shutil.rmtree(staging, ignore_errors=True))

    async def sweep(self, older_than: float) -> int:
        def sweep_sync() -> int:
            removed = 0
            for entry in self._uploads.iterdir():
                created = staging_created(entry.name)
                if created is not None and created < older_than:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
            return removed

        return await self.run(sweep_sync)

    async def aclose(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._pool.shutdown(wait=False, cancel_futures=True)
