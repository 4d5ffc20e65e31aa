"""Fixtures for the read-model tests: a loader wired to the real PDS through a counting proxy."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from appview.cache import Loader
from atcr.http import SafeHttpClient, SsrfPolicy
from atcr.identity import DidDocument, IdentityResolver, XrpcHandleResolver
from atcr.readmodel import tag_rkey
from atcr.xrpc import BearerAuth, XrpcClient
from tests.support.counting_proxy import CountingProxy
from tests.support.pdsnet import Account, TestNetwork

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class ProxiedResolver(IdentityResolver):
    """Resolves like production, but sends the PDS's traffic through the counting proxy."""

    def __init__(self, http: SafeHttpClient, net: TestNetwork, proxy_url: str) -> None:
        super().__init__(
            http, plc_url=net.plc_url, handle_resolver=XrpcHandleResolver(http, proxy_url), allow_http_loopback=True
        )
        self._pds = net.pds_url.rstrip("/")
        self._proxy = proxy_url

    async def resolve_did(self, did: str) -> DidDocument:
        doc = await super().resolve_did(did)
        if doc.pds_endpoint == self._pds:
            return dataclasses.replace(doc, pds_endpoint=self._proxy)
        return doc


@pytest.fixture
async def http() -> AsyncIterator[SafeHttpClient]:
    client = SafeHttpClient(policy=SsrfPolicy(allow_private=True), timeout=10)
    yield client
    await client.aclose()


@pytest.fixture
async def proxy(pds_network: TestNetwork) -> AsyncIterator[CountingProxy]:
    async with CountingProxy(pds_network.pds_url) as p:
        yield p


@pytest.fixture
async def make_loader(
    valkey: Any, pds_network: TestNetwork, proxy: CountingProxy
) -> AsyncIterator[Callable[..., Loader]]:
    """Loaders as separate replicas would have them: own HTTP client, resolver, single-flight."""
    made: list[tuple[Loader, SafeHttpClient]] = []

    def make(**overrides: Any) -> Loader:
        http = SafeHttpClient(policy=SsrfPolicy(allow_private=True), timeout=10)
        loader = Loader(valkey, http, ProxiedResolver(http, pds_network, proxy.url), **overrides)
        made.append((loader, http))
        return loader

    yield make
    for loader, http in made:
        await loader.aclose()
        await http.aclose()


def manifest_bytes(seed: str | None = None, *, subject: str | None = None, artifact_type: str | None = None) -> bytes:
    seed = seed or os.urandom(8).hex()
    layer = hashlib.sha256(seed.encode()).hexdigest()
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + layer, "size": 7},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + layer, "size": 9}
        ],
    }
    if subject:
        doc["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 100}
    if artifact_type:
        doc["artifactType"] = artifact_type
        doc["config"] = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:" + layer, "size": 2}
    # Odd spacing on purpose: the bytes, not a re-serialization, must come back.
    return json.dumps(doc, indent=3).encode()


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def push(
    http: SafeHttpClient,
    acct: Account,
    repository: str,
    tag: str | None,
    raw: bytes,
    *,
    hold: str = "did:web:hold.example",
    legacy_hold_url: str | None = None,
    legacy_tag_rkey: str | None = None,
) -> str:
    """Write a manifest (+ tag) the way an ATCR AppView does; legacy shapes on request."""
    client = XrpcClient(http, acct.pds_url, BearerAuth(acct.access_jwt))
    blob = await client.upload_blob(raw, OCI_MANIFEST)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    doc = json.loads(raw)
    record: dict[str, Any] = {
        "repository": repository,
        "digest": digest,
        "mediaType": OCI_MANIFEST,
        "schemaVersion": 2,
        "config": doc["config"],
        "layers": doc["layers"],
        "manifestBlob": blob,
        "createdAt": now(),
    }
    if "subject" in doc:
        record["subject"] = doc["subject"]
    if legacy_hold_url:
        record["holdEndpoint"] = legacy_hold_url
    else:
        record["holdDid"] = hold
    await client.put_record(acct.did, "io.atcr.manifest", digest[7:], record)
    if tag is not None:
        if legacy_tag_rkey:
            tag_record = {"repository": repository, "tag": tag, "manifestDigest": digest, "createdAt": now()}
            await client.put_record(acct.did, "io.atcr.tag", legacy_tag_rkey, tag_record)
        else:
            tag_record = {
                "repository": repository,
                "tag": tag,
                "manifest": f"at://{acct.did}/io.atcr.manifest/{digest[7:]}",
                "createdAt": now(),
                "updatedAt": now(),
            }
            await client.put_record(acct.did, "io.atcr.tag", tag_rkey(repository, tag), tag_record)
    return digest
