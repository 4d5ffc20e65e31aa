"""`atcr`'s own resolver and XRPC client against the real local PLC + PDS."""

from __future__ import annotations

import hashlib
import os

import pytest

from atcr.errors import HandleNotFound, RecordNotFound, RecordValidationError
from atcr.http import SafeHttpClient, SsrfPolicy
from atcr.identity import build_resolver
from atcr.xrpc import BearerAuth, XrpcClient

pytestmark = pytest.mark.integration

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{}}'


@pytest.fixture
async def http():  # type: ignore[no-untyped-def]
    client = SafeHttpClient(policy=SsrfPolicy(allow_private=True), timeout=10)
    yield client
    await client.aclose()


async def test_resolve_handle_and_did(http, pds_network, pds_account) -> None:  # type: ignore[no-untyped-def]
    resolver = build_resolver(
        http, plc_url=pds_network.plc_url, handle_resolver_url=pds_network.pds_url, allow_private=True
    )
    assert await resolver.resolve_handle(pds_account.handle) == pds_account.did
    ident = await resolver.resolve(pds_account.handle)
    assert ident.did == pds_account.did
    assert ident.handle == pds_account.handle
    assert ident.pds_endpoint == pds_network.pds_url.rstrip("/")
    assert ident.signing_key and ident.signing_key.startswith("z")
    by_did = await resolver.resolve(pds_account.did)
    assert by_did.handle == pds_account.handle
    with pytest.raises(HandleNotFound):
        await resolver.resolve_handle("nobody-here.test")


async def test_write_valid_manifest_record_and_read_back(http, pds_account) -> None:  # type: ignore[no-untyped-def]
    client = XrpcClient(http, pds_account.pds_url, auth=BearerAuth(pds_account.access_jwt))
    blob = await client.upload_blob(MANIFEST, "application/vnd.oci.image.manifest.v1+json")
    digest = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    record = {
        "repository": "app",
        "digest": digest,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "schemaVersion": 2,
        "holdDid": "did:web:127.0.0.1%3A8080",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": digest},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": 10, "digest": digest}],
        "manifestBlob": blob,
        "createdAt": "2026-11-21T12:00:00.000Z",
    }
    out = await client.put_record(pds_account.did, "io.atcr.manifest", digest[7:], record)
    assert out["uri"] == f"at://{pds_account.did}/io.atcr.manifest/{digest[7:]}"
    got = await client.get_record(pds_account.did, "io.atcr.manifest", digest[7:])
    assert got["value"]["digest"] == digest
    assert got["value"]["layers"][0]["size"] == 10
    assert got["cid"] == out["cid"]
    raw = await client.get_blob(pds_account.did, blob["ref"]["$link"])
    assert raw == MANIFEST


async def test_invalid_record_refused_before_any_write(http, pds_account) -> None:  # type: ignore[no-untyped-def]
    client = XrpcClient(http, pds_account.pds_url, auth=BearerAuth(pds_account.access_jwt))
    rkey = os.urandom(8).hex()
    bad = {
        "repository": "app",
        "digest": "sha256:" + "0" * 64,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "schemaVersion": 2,
        "layers": [{"mediaType": "x", "size": "ten", "digest": "sha256:" + "0" * 64}],
        "createdAt": "2026-11-21T12:00:00.000Z",
    }
    with pytest.raises(RecordValidationError) as info:
        await client.put_record(pds_account.did, "io.atcr.manifest", rkey, bad)
    assert info.value.path == "layers[0].size"
    assert "layers[0].size" in str(info.value)
    with pytest.raises(RecordNotFound):
        await client.get_record(pds_account.did, "io.atcr.manifest", rkey)
    missing = {k: v for k, v in bad.items() if k != "repository"}
    missing["layers"] = []
    with pytest.raises(RecordValidationError, match="repository"):
        await client.put_record(pds_account.did, "io.atcr.manifest", rkey, missing)
