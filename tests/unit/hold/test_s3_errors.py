"""S3 failures: throttling is retried with bounded, jittered backoff; the rest become clear errors."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from atcr.digest import Digest
from hold.errors import BlobNotFound, MissingParts, PartTooSmall, StorageError, StorageUnavailable, UploadNotFound
from hold.storage.base import PartInfo, StagedUpload
from hold.storage.s3 import S3BlobStore, S3Options

pytestmark = pytest.mark.unit

DIGEST = Digest.of(b"layer")


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def client() -> Iterator[object]:
    c = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(retries={"total_max_attempts": 1}),
    )
    yield c


def store(client: object, sleeps: Sleeps, attempts: int = 4) -> S3BlobStore:
    return S3BlobStore(
        S3Options(bucket="b", max_attempts=attempts, retry_base_delay=0.1, retry_max_delay=0.25),
        client=client,
        sleep=sleeps,
    )


async def test_slowdown_is_retried_with_jittered_backoff_then_succeeds(client: object) -> None:
    sleeps = Sleeps()
    s = store(client, sleeps)
    with Stubber(client) as stub:  # type: ignore[arg-type]
        for _ in range(2):
            stub.add_client_error("head_object", service_error_code="SlowDown", http_status_code=503)
        stub.add_response("head_object", {"ContentLength": 42}, {"Bucket": "b", "Key": s.blob_key(DIGEST)})
        assert await s.stat(DIGEST) == 42
        stub.assert_no_pending_responses()
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.1 and 0 <= sleeps[1] <= 0.2  # full jitter under a growing ceiling


async def test_throttling_that_never_ends_is_storage_unavailable(client: object) -> None:
    sleeps = Sleeps()
    s = store(client, sleeps, attempts=4)
    with Stubber(client) as stub:  # type: ignore[arg-type]
        for _ in range(4):
            stub.add_client_error("head_object", service_error_code="SlowDown", http_status_code=503)
        with pytest.raises(StorageUnavailable) as exc:
            await s.stat(DIGEST)
    assert exc.value.status == 503 and exc.value.headers["Retry-After"]
    assert len(sleeps) == 3 and max(sleeps) <= 0.25  # bounded attempts, capped delay


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("AccessDenied", 403, StorageError),
        ("NoSuchBucket", 404, StorageError),
        ("InvalidAccessKeyId", 403, StorageError),
        ("NoSuchUpload", 404, UploadNotFound),
    ],
)
async def test_other_errors_are_not_retried_and_are_named(
    client: object, code: str, status: int, error: type[Exception]
) -> None:
    sleeps = Sleeps()
    s = store(client, sleeps)
    with Stubber(client) as stub:  # type: ignore[arg-type]
        stub.add_client_error("create_multipart_upload", service_error_code=code, http_status_code=status)
        with pytest.raises(error) as exc:
            await s.start_upload("1700000000-abcdefghijklmnop")
    assert sleeps == []
    if error is StorageError:
        assert code in str(exc.value)


async def test_completion_errors_map_to_upload_errors(client: object) -> None:
    s = store(client, Sleeps())
    upload = StagedUpload("1700000000-abcdefghijklmnop", "mpu-1")
    parts = [PartInfo(1, '"e1"', 10), PartInfo(2, "e2", 10)]
    for code, error in (("EntityTooSmall", PartTooSmall), ("InvalidPart", MissingParts)):
        with Stubber(client) as stub:  # type: ignore[arg-type]
            stub.add_client_error("complete_multipart_upload", service_error_code=code, http_status_code=400)
            with pytest.raises(error):
                await s.assemble(upload, parts)


async def test_missing_blob_is_none_not_an_error(client: object) -> None:
    s = store(client, Sleeps())
    with Stubber(client) as stub:  # type: ignore[arg-type]
        stub.add_client_error("head_object", service_error_code="404", http_status_code=404)
        assert await s.stat(DIGEST) is None


def test_connection_failures_are_retried_then_unavailable(client: object) -> None:
    sleeps = Sleeps()
    s = store(client, sleeps, attempts=3)
    calls = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3")
        return 7

    assert s.call("HeadObject", flaky) == 7
    with pytest.raises(StorageUnavailable):
        s.call("HeadObject", lambda: (_ for _ in ()).throw(botocore.exceptions.ReadTimeoutError(endpoint_url="x")))
    with pytest.raises(BlobNotFound):
        s.call(
            "GetObject",
            lambda: (_ for _ in ()).throw(
                botocore.exceptions.ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
            ),
        )


def test_missing_credentials_are_a_clear_storage_error(client: object) -> None:
    s = store(client, Sleeps())

    def no_creds() -> None:
        raise botocore.exceptions.NoCredentialsError()

    with pytest.raises(StorageError, match="credential"):
        s.call("HeadObject", no_creds)
    with pytest.raises(StorageError, match="ParamValidationError"):
        s.call("HeadObject", lambda: (_ for _ in ()).throw(botocore.exceptions.ParamValidationError(report="x")))
