"""Real Valkey and real S3 API round trips: the harness itself, proven."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.support.services import S3Endpoint

pytestmark = pytest.mark.integration


async def test_valkey_round_trip(valkey) -> None:  # type: ignore[no-untyped-def]
    await valkey.set("k", b"v", ex=60)
    assert await valkey.get("k") == b"v"
    async with valkey.pipeline(transaction=False) as pipe:
        for i in range(100):
            pipe.incr("counter")
        results = await pipe.execute()
    assert results[-1] == 100
    info = await valkey.info("server")
    assert str(info.get("valkey_version") or info.get("redis_version")).split(".")[0].isdigit()


def test_s3_put_get_multipart_and_presigned_range(s3_endpoint: S3Endpoint, s3_bucket: str) -> None:
    s3 = s3_endpoint.client()
    s3.put_object(Bucket=s3_bucket, Key="small", Body=b"hello")
    assert s3.get_object(Bucket=s3_bucket, Key="small")["Body"].read() == b"hello"

    part1 = os.urandom(5 * 1024 * 1024)
    part2 = os.urandom(1234)
    up = s3.create_multipart_upload(Bucket=s3_bucket, Key="big")
    etags = []
    for n, data in enumerate((part1, part2), start=1):
        r = s3.upload_part(Bucket=s3_bucket, Key="big", UploadId=up["UploadId"], PartNumber=n, Body=data)
        etags.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(
        Bucket=s3_bucket, Key="big", UploadId=up["UploadId"], MultipartUpload={"Parts": etags}
    )
    url = s3.generate_presigned_url("get_object", Params={"Bucket": s3_bucket, "Key": "big"}, ExpiresIn=60)
    assert url.startswith("http://127.0.0.1:")
    whole = httpx.get(url, timeout=30)
    assert whole.status_code == 200
    assert whole.content == part1 + part2
    ranged = httpx.get(url, headers={"Range": "bytes=10-19"}, timeout=30)
    assert ranged.status_code == 206
    assert ranged.content == (part1 + part2)[10:20]
