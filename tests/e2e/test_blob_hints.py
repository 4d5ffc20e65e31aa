"""The owner's HEAD before an upload, answered from the account's blob hints (docs/cache.md).

A blob a manifest of the account names, on the push hold, is reported present without asking
the hold. What keeps that honest is checked here against the real stack: a hint the hold
contradicts costs one refused manifest PUT with nothing written, after which the hint is gone
and the client's retry uploads the blob; an old hint is not trusted; deleting the manifest
drops the hints of its blobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import httpx
import pytest

from atcr.readmodel import keys
from tests.support.fixtures_stack import Pusher, RegistryStack, token_for

pytestmark = [pytest.mark.e2e]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"hints":1}'


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest(layer: bytes) -> bytes:
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(CONFIG),
                   "size": len(CONFIG)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(layer),
                    "size": len(layer)}],
    }).encode()


class Client:
    def __init__(self, stack: RegistryStack, pusher: Pusher, repo: str) -> None:
        self.base = f"{stack.url}/v2/{pusher.handle}/{repo}"
        token = token_for(stack, pusher, f"repository:{pusher.handle}/{repo}:pull,push,delete")
        self.http = httpx.Client(timeout=60, headers={"Authorization": f"Bearer {token}"})

    def head(self, data: bytes) -> int:
        return self.http.head(f"{self.base}/blobs/{digest_of(data)}").status_code

    def upload(self, data: bytes) -> None:
        r = self.http.post(f"{self.base}/blobs/uploads/", params={"digest": digest_of(data)}, content=data,
                           headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text

    def put(self, tag: str, raw: bytes) -> httpx.Response:
        return self.http.put(f"{self.base}/manifests/{tag}", content=raw, headers={"Content-Type": OCI_MANIFEST})


@pytest.fixture
def client(registry_stack: RegistryStack, pusher: Pusher) -> Any:
    c = Client(registry_stack, pusher, "hinted")
    if c.head(CONFIG) != 200:
        c.upload(CONFIG)
    yield c
    c.http.close()


async def _hint(valkey: Any, did: str, data: bytes, hold: str, age_ms: int = 0) -> None:
    stamp = int(time.time() * 1000) - age_ms
    await valkey.hset(keys.blob_hints(did), digest_of(data), f"{hold}|{len(data)}|{stamp}")


async def test_a_hint_the_hold_contradicts_costs_one_refused_push_then_the_retry_uploads(
    client: Client, registry_stack: RegistryStack, pusher: Pusher, valkey: Any
) -> None:
    layer = os.urandom(2048)  # never uploaded anywhere
    await _hint(valkey, pusher.did, layer, registry_stack.hold_did)  # as if a manifest had named it
    assert client.head(layer) == 200  # trusted: the client would skip the upload
    refused = client.put("1", manifest(layer))
    assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert await valkey.hget(keys.blob_hints(pusher.did), digest_of(layer)) is None  # dropped
    assert client.head(layer) == 404  # the retry asks the hold
    client.upload(layer)
    assert client.put("1", manifest(layer)).status_code == 201


async def test_an_old_hint_is_not_trusted(
    client: Client, registry_stack: RegistryStack, pusher: Pusher, valkey: Any
) -> None:
    layer = os.urandom(2048)
    await _hint(valkey, pusher.did, layer, registry_stack.hold_did, age_ms=2 * 3600 * 1000)
    assert client.head(layer) == 404
    await _hint(valkey, pusher.did, layer, "did:web:another-hold.example")  # not the push hold
    assert client.head(layer) == 404


async def test_a_push_hints_its_blobs_and_deleting_the_manifest_drops_them(
    client: Client, registry_stack: RegistryStack, pusher: Pusher, valkey: Any
) -> None:
    layer = os.urandom(2048)
    client.upload(layer)
    raw = manifest(layer)
    assert client.put("2", raw).status_code == 201
    hint = await valkey.hget(keys.blob_hints(pusher.did), digest_of(layer))
    assert hint is not None and hint.decode().startswith(f"{registry_stack.hold_did}|{len(layer)}|")
    assert client.head(layer) == 200
    assert client.http.delete(f"{client.base}/manifests/{digest_of(raw)}").status_code == 202
    assert await valkey.hget(keys.blob_hints(pusher.did), digest_of(layer)) is None
    assert client.head(layer) == 200  # still on the hold (the GC keeps it for HOLD_GC_GRACE): asked there
