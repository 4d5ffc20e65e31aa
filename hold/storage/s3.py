"""S3 blob storage (AWS, R2, MinIO, moto ...) through boto3, off the event loop.

Every boto3 call runs on the store's own thread pool (`run`), never on the event loop, and
goes through `_call`, the single place where backend errors become hold errors:

* throttling and transient failures (503 SlowDown, 500/502/504, connection resets, timeouts)
  are retried a bounded number of times with exponential backoff and full jitter; botocore's
  own retries are switched off so the two do not multiply;
* what is left becomes a precise `HoldError`: `StorageUnavailable` (503, retry later),
  `UploadNotFound`, `MissingParts`, `PartTooSmall`, or `StorageError` naming the S3 code,
  so an XRPC caller sees a clear error and never a traceback.

Uploads are S3 multipart uploads on a staging key (``uploads/<staging>/data``); `commit`
copies the verified object to its content address server-side and deletes the staging key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from atcr.digest import Digest, InvalidDigest
from hold.errors import (
    BlobNotFound,
    HoldError,
    MissingParts,
    PartTooSmall,
    StorageError,
    StorageUnavailable,
    UploadNotFound,
)
from hold.storage.base import (
    BlobInfo,
    ChunkSink,
    PartInfo,
    PresignedRequest,
    StagedUpload,
    normalize_etag,
    staging_created,
)

# Jitter only (not security): a private generator, so the global one (which tests and
# libraries seed or watch) is never touched from background threads.
_jitter = random.Random()  # noqa: S311

T = TypeVar("T")
log = logging.getLogger("hold.storage.s3")

READ_CHUNK = 1024 * 1024
SPOOL_IN_MEMORY = 8 * 1024 * 1024
_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
    }
)
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class S3Options:
    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    path_style: bool = False
    prefix: str = ""
    max_attempts: int = 5
    retry_base_delay: float = 0.2
    retry_max_delay: float = 5.0
    threads: int = 32
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    spool_dir: Path | None = None


def _error_code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    err = exc.response.get("Error") or {}
    meta = exc.response.get("ResponseMetadata") or {}
    return str(err.get("Code") or ""), int(meta.get("HTTPStatusCode") or 0)


class _S3PartWriter:
    """Spools one part (memory up to 8 MiB, then disk) so S3 gets a sized, rewindable body."""

    def __init__(self, store: S3BlobStore, upload: StagedUpload, number: int) -> None:
        self._store = store
        self._upload = upload
        self._number = number
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed in commit/abort
            max_size=SPOOL_IN_MEMORY, dir=str(store.options.spool_dir) if store.options.spool_dir else None
        )
        self._size = 0

    def write(self, data: bytes) -> None:
        self._spool.write(data)
        self._size += len(data)

    def commit(self) -> PartInfo:
        try:
            key = self._store.staging_key(self._upload.staging)

            def put() -> Any:
                self._spool.seek(0)
                return self._store.client.upload_part(
                    Bucket=self._store.options.bucket,
                    Key=key,
                    UploadId=self._upload.storage_id,
                    PartNumber=self._number,
                    Body=self._spool,
                    ContentLength=self._size,
                )

            resp = self._store.call("UploadPart", put)
            return PartInfo(self._number, str(resp["ETag"]), self._size)
        finally:
            self._spool.close()

    def abort(self) -> None:
        self._spool.close()


class S3BlobStore:
    kind = "s3"

    def __init__(self, options: S3Options, *, client: Any = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.options = options
        self._prefix = options.prefix.strip("/") + "/" if options.prefix.strip("/") else ""
        self._sleep = sleep
        self._pool = ThreadPoolExecutor(max_workers=options.threads, thread_name_prefix="hold-s3")
        if client is None:
            config = Config(
                signature_version="s3v4",
                region_name=options.region,
                s3={"addressing_style": "path" if options.path_style else "auto"},
                retries={"mode": "standard", "total_max_attempts": 1},  # we retry, with jitter, in `call`
                max_pool_connections=max(10, options.threads),
                connect_timeout=options.connect_timeout,
                read_timeout=options.read_timeout,
                # Integrity is proven end to end by the blob's sha256/sha512; per-request CRCs
                # would add a pass over every byte for nothing.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            # Credentials come from boto3's usual chain (env, shared files, instance roles).
            client = boto3.session.Session().client(
                "s3", endpoint_url=options.endpoint_url or None, region_name=options.region, config=config
            )
        self.client = client
        self._transfer = TransferConfig(
            multipart_threshold=2 * 1024**3, multipart_chunksize=256 * 1024**2, max_concurrency=8
        )

    # --- plumbing --------------------------------------------------------------------------

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def staging_key(self, staging: str) -> str:
        return f"{self._prefix}uploads/{staging}/data"

    def blob_key(self, digest: Digest) -> str:
        return self._prefix + digest.blob_path

    def _delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
        ceiling = min(self.options.retry_max_delay, self.options.retry_base_delay * (2**attempt))
        return _jitter.uniform(0, ceiling)

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        """Run one S3 operation (blocking; pool threads only) with bounded retries and error mapping."""
        attempts = max(1, self.options.max_attempts)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                return fn()
            except botocore.exceptions.ClientError as exc:
                code, status = _error_code(exc)
                if (code in _RETRYABLE_CODES or status in _RETRYABLE_STATUS) and not last:
                    self._sleep(self._delay(attempt))
                    continue
                raise self._translate(operation, code, status) from None
            except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
                if not last:
                    self._sleep(self._delay(attempt))
                    continue
                raise StorageUnavailable(f"storage unreachable during {operation}: {type(exc).__name__}") from None
            except botocore.exceptions.NoCredentialsError:
                raise StorageError(f"no storage credentials for {operation} (see boto3's credential chain)") from None
            except botocore.exceptions.BotoCoreError as exc:
                log.warning("S3 %s failed: %s", operation, exc)
                raise StorageError(f"storage client error during {operation}: {type(exc).__name__}") from None
        raise AssertionError("unreachable")

    def _translate(self, operation: str, code: str, status: int) -> HoldError:
        if code in _RETRYABLE_CODES or status in _RETRYABLE_STATUS:
            log.warning(
                "S3 %s still failing after %d attempts: %s %s", operation, self.options.max_attempts, status, code
            )
            return StorageUnavailable(f"storage is throttling or unavailable ({code or status}) during {operation}")
        if code == "NoSuchUpload":
            return UploadNotFound("the storage upload no longer exists (aborted or expired)")
        if code == "EntityTooSmall":
            return PartTooSmall("every part but the last must be at least 5 MiB (S3 EntityTooSmall)")
        if code in ("InvalidPart", "InvalidPartOrder"):
            return MissingParts(f"storage refused the part list ({code})")
        if code in ("NoSuchKey", "404", "NotFound"):
            return BlobNotFound()
        log.warning("S3 %s failed: %s %s", operation, status, code)
        return StorageError(f"storage refused {operation}: {code or status}")

    # --- blobs -----------------------------------------------------------------------------

    async def stat(self, digest: Digest) -> int | None:
        key = self.blob_key(digest)

        def head() -> int | None:
            try:
                resp = self.call("HeadObject", lambda: self.client.head_object(Bucket=self.options.bucket, Key=key))
            except BlobNotFound:
                return None
            return int(resp["ContentLength"])

        return await self.run(head)

    async def presign_get(self, digest: Digest, *, expires_in: int) -> str:
        key = self.blob_key(digest)
        url: str = await self.run(
            lambda: self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.options.bucket, "Key": key}, ExpiresIn=expires_in
            )
        )
        return url

    async def delete(self, digest: Digest) -> bool:
        key = self.blob_key(digest)
        bucket = self.options.bucket
        await self.run(lambda: self.call("DeleteObject", lambda: self.client.delete_object(Bucket=bucket, Key=key)))
        return True

    async def delete_many(self, digests: Sequence[Digest]) -> list[Digest]:
        bucket = self.options.bucket
        by_key = {self.blob_key(d): d for d in digests}

        def remove_all() -> list[Digest]:
            failed: list[Digest] = []
            keys = list(by_key)
            for start in range(0, len(keys), 1000):  # DeleteObjects takes 1000 keys
                chunk = [{"Key": k} for k in keys[start : start + 1000]]
                resp = self.call(
                    "DeleteObjects",
                    lambda c=chunk: self.client.delete_objects(  # type: ignore[misc]
                        Bucket=bucket, Delete={"Objects": c, "Quiet": True}
                    ),
                )
                failed += [by_key[str(e["Key"])] for e in resp.get("Errors") or [] if str(e.get("Key")) in by_key]
            return failed

        return await self.run(remove_all)

    async def list_blobs(self, *, after: str = "", limit: int = 1000) -> list[BlobInfo]:
        bucket = self.options.bucket
        prefix = f"{self._prefix}blobs/"

        def start_key() -> str:
            alg, _, hexpart = after.partition("/")
            return f"{prefix}{alg}/{hexpart[:2]}/{hexpart}/data" if hexpart else (f"{prefix}{alg}/" if alg else "")

        def page() -> list[BlobInfo]:
            out: list[BlobInfo] = []
            start = start_key()
            token: str | None = None
            while len(out) < limit:
                kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": min(1000, limit - len(out))}
                if token:
                    kwargs["ContinuationToken"] = token
                elif start:
                    kwargs["StartAfter"] = start
                resp = self.call("ListObjectsV2", lambda kw=kwargs: self.client.list_objects_v2(**kw))  # type: ignore[misc]
                for obj in resp.get("Contents") or []:
                    parts = str(obj["Key"])[len(prefix) :].split("/")
                    if len(parts) != 4 or parts[3] != "data":
                        continue
                    try:
                        digest = Digest.parse(f"{parts[0]}:{parts[2]}")
                    except InvalidDigest:
                        continue
                    modified = obj.get("LastModified")
                    stamp = modified.timestamp() if hasattr(modified, "timestamp") else 0.0
                    out.append(BlobInfo(digest, int(obj.get("Size") or 0), stamp))
                if not resp.get("IsTruncated"):
                    break
                token = str(resp["NextContinuationToken"])
            return out[:limit]

        return await self.run(page)

    # --- uploads ---------------------------------------------------------------------------

    async def start_upload(self, staging: str) -> StagedUpload:
        key = self.staging_key(staging)
        resp = await self.run(
            lambda: self.call(
                "CreateMultipartUpload",
                lambda: self.client.create_multipart_upload(
                    Bucket=self.options.bucket, Key=key, ContentType="application/octet-stream"
                ),
            )
        )
        return StagedUpload(staging, str(resp["UploadId"]))

    def part_writer(self, upload: StagedUpload, number: int, *, offset: int | None = None) -> _S3PartWriter:
        return _S3PartWriter(self, upload, number)  # S3 assembles server-side: the offset is not needed

    async def presign_part(self, upload: StagedUpload, number: int, *, expires_in: int) -> PresignedRequest:
        key = self.staging_key(upload.staging)
        url: str = await self.run(
            lambda: self.client.generate_presigned_url(
                "upload_part",
                Params={"Bucket": self.options.bucket, "Key": key, "UploadId": upload.storage_id, "PartNumber": number},
                ExpiresIn=expires_in,
            )
        )
        return PresignedRequest(url=url, method="PUT", headers={}, bypasses_hold=True)

    def _list_parts_sync(self, upload: StagedUpload) -> list[PartInfo]:
        key = self.staging_key(upload.staging)
        out: list[PartInfo] = []
        marker = 0
        while True:
            resp = self.call(
                "ListParts",
                lambda m=marker: self.client.list_parts(  # type: ignore[misc]
                    Bucket=self.options.bucket, Key=key, UploadId=upload.storage_id, PartNumberMarker=m, MaxParts=1000
                ),
            )
            for p in resp.get("Parts") or []:
                out.append(PartInfo(int(p["PartNumber"]), str(p["ETag"]), int(p["Size"])))
            if not resp.get("IsTruncated"):
                return out
            marker = int(resp["NextPartNumberMarker"])

    async def list_parts(self, upload: StagedUpload) -> list[PartInfo]:
        return await self.run(lambda: self._list_parts_sync(upload))

    async def assemble(self, upload: StagedUpload, parts: Sequence[PartInfo]) -> int:
        key = self.staging_key(upload.staging)
        bucket = self.options.bucket

        def complete() -> int:
            # UploadNotFound: a retried completion; the multipart upload already became the object.
            with contextlib.suppress(UploadNotFound):
                self.call(
                    "CompleteMultipartUpload",
                    lambda: self.client.complete_multipart_upload(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload.storage_id,
                        MultipartUpload={
                            "Parts": [{"PartNumber": p.number, "ETag": f'"{normalize_etag(p.etag)}"'} for p in parts]
                        },
                    ),
                )
            try:
                head = self.call("HeadObject", lambda: self.client.head_object(Bucket=bucket, Key=key))
            except BlobNotFound:
                raise UploadNotFound("the upload no longer exists") from None
            return int(head["ContentLength"])

        return await self.run(complete)

    async def read_staged(self, upload: StagedUpload, sink: ChunkSink) -> int:
        key = self.staging_key(upload.staging)

        def read() -> int:
            def attempt() -> int:
                sink.reset()  # a retried read starts over from the first byte
                resp = self.client.get_object(Bucket=self.options.bucket, Key=key)
                total = 0
                for chunk in resp["Body"].iter_chunks(READ_CHUNK):
                    sink.update(chunk)
                    total += len(chunk)
                return total

            return self.call("GetObject", attempt)

        return await self.run(read)

    async def commit(self, upload: StagedUpload, digest: Digest) -> None:
        src = self.staging_key(upload.staging)
        dst = self.blob_key(digest)
        bucket = self.options.bucket

        def copy_then_delete() -> None:
            # Server-side copy: no bytes pass through the hold. The object appears at `dst`
            # only when the copy is complete.
            self.call(
                "CopyObject",
                lambda: self.client.copy(
                    {"Bucket": bucket, "Key": src}, bucket, dst, Config=self._transfer
                ),
            )
            self.call("DeleteObject", lambda: self.client.delete_object(Bucket=bucket, Key=src))

        await self.run(copy_then_delete)

    async def put_whole(self, upload: StagedUpload, digest: Digest, data: bytes) -> None:
        dst = self.blob_key(digest)
        bucket = self.options.bucket

        def put() -> None:
            # One PutObject at the content address (the object appears only once complete):
            # no multipart completion and no server-side copy for a blob held whole.
            self.call(
                "PutObject",
                lambda: self.client.put_object(
                    Bucket=bucket, Key=dst, Body=data, ContentType="application/octet-stream"
                ),
            )

        await self.run(put)
        try:
            await self.abort(upload)
        except HoldError as exc:  # the blob is stored; the hold's sweep drops what is left
            log.warning("upload %s: its multipart upload could not be dropped: %s", upload.staging, exc)

    async def abort(self, upload: StagedUpload) -> None:
        key = self.staging_key(upload.staging)
        bucket = self.options.bucket

        def drop() -> None:
            if upload.storage_id:
                with contextlib.suppress(UploadNotFound):
                    self.call(
                        "AbortMultipartUpload",
                        lambda: self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload.storage_id),
                    )
            with contextlib.suppress(BlobNotFound):
                self.call("DeleteObject", lambda: self.client.delete_object(Bucket=bucket, Key=key))

        await self.run(drop)

    async def sweep(self, older_than: float) -> int:
        bucket = self.options.bucket
        prefix = f"{self._prefix}uploads/"

        def staging_of(key: str) -> str | None:
            rest = key[len(prefix) :]
            name, _, tail = rest.partition("/")
            return name if tail == "data" else None

        def sweep_sync() -> int:
            removed = 0
            key_marker, id_marker = "", ""
            while True:
                resp = self.call(
                    "ListMultipartUploads",
                    lambda k=key_marker, u=id_marker: self.client.list_multipart_uploads(  # type: ignore[misc]
                        Bucket=bucket, Prefix=prefix, KeyMarker=k, UploadIdMarker=u
                    ),
                )
                for up in resp.get("Uploads") or []:
                    name = staging_of(str(up["Key"]))
                    created = staging_created(name) if name else None
                    if created is not None and created < older_than:
                        with contextlib.suppress(UploadNotFound):
                            self.call(
                                "AbortMultipartUpload",
                                lambda u=up: self.client.abort_multipart_upload(  # type: ignore[misc]
                                    Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]
                                ),
                            )
                        removed += 1
                if not resp.get("IsTruncated"):
                    break
                key_marker = str(resp.get("NextKeyMarker") or "")
                id_marker = str(resp.get("NextUploadIdMarker") or "")
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
                if token:
                    kwargs["ContinuationToken"] = token
                page = self.call("ListObjectsV2", lambda kw=kwargs: self.client.list_objects_v2(**kw))  # type: ignore[misc]
                stale = []
                for obj in page.get("Contents") or []:
                    name = staging_of(str(obj["Key"]))
                    created = staging_created(name) if name else None
                    if created is not None and created < older_than:
                        stale.append({"Key": obj["Key"]})
                if stale:
                    self.call(
                        "DeleteObjects",
                        lambda s=stale: self.client.delete_objects(Bucket=bucket, Delete={"Objects": s, "Quiet": True}),  # type: ignore[misc]
                    )
                    removed += len(stale)
                if not page.get("IsTruncated"):
                    break
                token = str(page["NextContinuationToken"])
            return removed

        return await self.run(sweep_sync)

    async def aclose(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._pool.shutdown(wait=False, cancel_futures=True)
