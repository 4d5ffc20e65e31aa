"""Consecutive parts reach different hold processes: the hash chain travels through Valkey,
so the digest is still proven without reading the blob back."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.integration.hold.harness import KeyDirectory, running_hold, s3_env

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


async def test_parts_across_replicas(
    tmp_path: Path, valkey_url: str, driver: str, request: pytest.FixtureRequest
) -> None:
    s3 = None
    if driver == "s3":
        s3 = s3_env(request.getfixturevalue("s3_endpoint").url, request.getfixturevalue("s3_bucket"))
    # Two replicas behind one public URL: same DID, same storage, same Valkey, nothing else shared.
    # (Each keeps its own data dir: the embedded repo is one writer's database.)
    shared = {
        "HOLD_PUBLIC_URL": "http://hold.example:8443",
        "HOLD_UPLOAD_PART_MIN_SIZE": str(5 * MiB),
        "HOLD_KEY_PATH": str(tmp_path / "signing.key"),
        "STORAGE_ROOT_DIR": str(tmp_path / "blobs"),
    }
    keys = KeyDirectory()
    replica_a = running_hold(tmp_path / "a", valkey_url, driver=driver, s3=s3, env=shared, keys=keys)
    replica_b = running_hold(tmp_path / "b", valkey_url, driver=driver, s3=s3, env=shared, keys=keys)
    async with replica_a as a, replica_b as b:
        assert a.did == b.did and a.url != b.url
        reads: list[str] = []
        for name, hold in (("a", a), ("b", b)):
            store: Any = hold.services.store
            original = store.read_staged

            async def counted(*args: Any, _o: Any = original, _n: str = name, **kw: Any) -> int:
                reads.append(_n)
                return int(await _o(*args, **kw))

            store.read_staged = counted

        data = os.urandom(16 * MiB + 99)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        uid = await a.upload_id(digest=digest)
        parts = []
        for i, off in enumerate(range(0, len(data), 5 * MiB), 1):
            replica = a if i % 2 else b  # alternate: part 1 on a, part 2 on b, ...
            r = await replica.put_part(uid, i, data[off : off + 5 * MiB])
            assert r.status_code == 200, r.text
            parts.append({"partNumber": i, "etag": r.json()["etag"]})
        r = await b.complete(uid, digest, parts)
        assert r.status_code == 200, r.text
        assert reads == []  # proven from the chain that both replicas extended
        url = (await a.get_blob(digest)).json()["url"]
        if driver == "filesystem":
            url = url.replace("http://hold.example:8443", a.url)  # the public name is not resolvable here
        got = await a.client.get(url)
        assert got.content == data
