"""Local-disk blob storage (the embedded default): the same contract as S3, on one filesystem.

Parts are written to temporary files and renamed into place, each fsynced: a part the hold
has acknowledged survives a crash, so a digest proven from the running hash is the digest of
what is on disk. Assembly concatenates the parts in the kernel (``copy_file_range``) into a
staged file, and `commit` renames it to the content address: on one filesystem a rename is
atomic, so a blob is either absent or complete and verified, never half there.

Pulls redirect to URLs the hold signs with HMAC and serves itself (hold/signed_urls.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TypeVar

from atcr.digest import Digest
from hold.errors import MissingParts, StorageError, UploadNotFound
from hold.signed_urls import UrlSigner
from hold.storage.base import ChunkSink, PartInfo, PresignedRequest, StagedUpload, normalize_etag, staging_created

T = TypeVar("T")

READ_CHUNK = 1024 * 1024
BLOB_URL_PREFIX = "/_hold/blobs"
UPLOAD_URL_PREFIX = "/_hold/uploads"


def upload_id_of(staging: str) -> str:
    return staging.split("-", 1)[1]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_into(dst: IO[bytes], src_path: Path) -> int:
    """Append a whole file to `dst` in the kernel where possible; returns bytes copied."""
    total = 0
    with open(src_path, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        try:
            while total < size:
                n = os.copy_file_range(src.fileno(), dst.fileno(), size - total)
                if n == 0:
                    break
                total += n
        except OSError:
            src.seek(total)
            dst.seek(0, os.SEEK_END)
            while chunk := src.read(READ_CHUNK):
                dst.write(chunk)
                total += len(chunk)
    return total


class _FsPartWriter:
    def __init__(self, parts_dir: Path, number: int) -> None:
        self._dir = parts_dir
        self._number = number
        self._tmp = parts_dir / f".{number:05d}.{secrets.token_hex(8)}.tmp"
        self._fh: IO[bytes] | None = None
        self._size = 0

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            if not self._dir.parent.is_dir():
                raise UploadNotFound("upload was aborted or expired")
            self._dir.mkdir(exist_ok=True)
            self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        return self._fh

    def write(self, data: bytes) -> None:
        self._open().write(data)
        self._size += len(data)

    def commit(self) -> PartInfo:
        fh = self._open()
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        etag = secrets.token_hex(16)
        final = self._dir / f"{self._number:05d}.{etag}"
        os.replace(self._tmp, final)
        for other in self._dir.glob(f"{self._number:05d}.*"):
            if other != final:  # the last write of a part number wins, as on S3
                other.unlink(missing_ok=True)
        return PartInfo(self._number, etag, self._size)

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)


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
            try:
                self.blob_file(digest).unlink()
            except FileNotFoundError:
                return False
            return True

        return await self.run(remove)

    async def start_upload(self, staging: str) -> StagedUpload:
        upload = StagedUpload(staging)
        path = self._staging_dir(upload)
        await self.run(lambda: (path / "parts").mkdir(parents=True, exist_ok=False))
        return upload

    def part_writer(self, upload: StagedUpload, number: int) -> _FsPartWriter:
        return _FsPartWriter(self._staging_dir(upload) / "parts", number)

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
            number, _, etag = entry.name.partition(".")
            if not number.isdigit() or not etag or etag.endswith(".tmp"):
                continue
            info = PartInfo(int(number), etag, entry.stat().st_size)
            out[info.number] = info
        return [out[n] for n in sorted(out)]

    async def list_parts(self, upload: StagedUpload) -> list[PartInfo]:
        return await self.run(lambda: self._list_parts_sync(upload))

    async def assemble(self, upload: StagedUpload, parts: Sequence[PartInfo]) -> int:
        staging = self._staging_dir(upload)

        def join() -> int:
            data = staging / "data"
            if data.exists():  # a retried completion: already assembled
                return data.stat().st_size
            files = []
            for part in parts:
                f = staging / "parts" / f"{part.number:05d}.{normalize_etag(part.etag)}"
                if not f.is_file():
                    raise MissingParts(f"part {part.number} with that ETag was not uploaded")
                files.append(f)
            tmp = staging / f".data.{secrets.token_hex(4)}.tmp"
            try:
                with open(tmp, "wb") as out:
                    for f in files:
                        _copy_into(out, f)
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

        def move() -> None:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / "data", final)
            _fsync_dir(final.parent)
            shutil.rmtree(staging, ignore_errors=True)

        await self.run(move)

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
