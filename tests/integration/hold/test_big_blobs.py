"""A 200 MB blob through each driver: parts in, presigned URL out, identical bytes, ranges."""

from __future__ import annotations

import hashlib
import os
import time

import httpx
import pytest

from tests.integration.hold.conftest import MakeHold

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MiB = 1024 * 1024
SIZE = 200 * 1000 * 1000  # 200 MB, deliberately not a multiple of the part size
PART = 32 * MiB


@pytest.fixture(scope="module")
def blob() -> tuple[bytes, str]:
    data = os.urandom(SIZE)
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


async def test_200mb_upload_then_presigned_download(make_hold: MakeHold, driver: str, blob: tuple[bytes, str]) -> None:
    data, digest = blob
    async with make_hold(driver) as hold:
        started = time.monotonic()
        r = await hold.push(data, digest, PART)
        upload_s = time.monotonic() - started
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "completed", "digest": digest}

        url = (await hold.get_blob(digest)).json()["url"]
        started = time.monotonic()
        sha = hashlib.sha256()
        size = 0
        async with httpx.AsyncClient(timeout=120) as plain, plain.stream("GET", url) as resp:
            assert resp.status_code == 200
            async for chunk in resp.aiter_bytes(1024 * 1024):
                sha.update(chunk)
                size += len(chunk)
        download_s = time.monotonic() - started
        assert size == SIZE and "sha256:" + sha.hexdigest() == digest

        start, end = 123_456_789, 123_456_789 + 5 * MiB - 1
        async with httpx.AsyncClient(timeout=60) as plain:
            part = await plain.get(url, headers={"Range": f"bytes={start}-{end}"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
        assert part.content == data[start : end + 1]
        print(f"\n{driver}: upload {SIZE / upload_s / 1e6:.0f} MB/s, download {SIZE / download_s / 1e6:.0f} MB/s")
