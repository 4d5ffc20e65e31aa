"""Shared pieces of the consumer's integration and e2e tests: records, writers, waiting."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from atcr.http import SafeHttpClient, SsrfPolicy
from atcr.readmodel import keys
from atcr.settings import load
from atcr.xrpc import BearerAuth, XrpcClient
from jetstream.settings import JetstreamSettings
from tests.support.pdsnet import Account

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def new_digest() -> str:
    return "sha256:" + hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def manifest_record(repository: str, digest: str, **extra: Any) -> dict[str, Any]:
    return {
        "repository": repository,
        "digest": digest,
        "mediaType": OCI_MANIFEST,
        "schemaVersion": 2,
        "createdAt": now_iso(),
        **extra,
    }


def tag_record(did: str, repository: str, tag: str, digest: str) -> dict[str, Any]:
    return {
        "repository": repository,
        "tag": tag,
        "manifest": f"at://{did}/{keys.MANIFEST}/{keys.manifest_rkey(digest)}",
        "createdAt": now_iso(),
    }


class Writer:
    """Writes records to an account's PDS, as any client of the user's PDS would."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.did = account.did
        self.http = SafeHttpClient(policy=SsrfPolicy(allow_private=True), timeout=30)
        self.xrpc = XrpcClient(self.http, account.pds_url, BearerAuth(account.access_jwt))

    async def put(self, collection: str, rkey: str, record: dict[str, Any]) -> dict[str, Any]:
        return await self.xrpc.put_record(self.did, collection, rkey, record)

    async def delete(self, collection: str, rkey: str) -> None:
        await self.xrpc.delete_record(self.did, collection, rkey)

    async def push(self, repository: str, tag: str, digest: str | None = None) -> str:
        """A manifest record and a tag pointing at it; returns the digest."""
        digest = digest or new_digest()
        await self.put(keys.MANIFEST, keys.manifest_rkey(digest), manifest_record(repository, digest))
        await self.put(keys.TAG, keys.tag_rkey(repository, tag), tag_record(self.did, repository, tag, digest))
        return digest

    async def apply_writes(self, writes: list[dict[str, Any]]) -> None:
        await self.xrpc.procedure("com.atproto.repo.applyWrites", {"repo": self.did, "writes": writes})

    async def aclose(self) -> None:
        await self.http.aclose()


def consumer_settings(
    *, valkey_url: str, plc_url: str, pds_url: str, jetstream_url: str, relay_url: str, **env: str
) -> JetstreamSettings:
    base = {
        "VALKEY_URL": valkey_url,
        "ATCR_PLC_URL": plc_url,
        "ATCR_HANDLE_RESOLVER_URL": pds_url,
        "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
        "JETSTREAM_URL": jetstream_url,
        "ATCR_RELAY_ENDPOINT": relay_url,
        "ATCR_JETSTREAM_CURSOR_SECONDS": "0.2",
        "ATCR_JETSTREAM_CURSOR_EVERY": "50",
        "ATCR_JETSTREAM_BACKOFF_MIN": "0.05",
        "ATCR_JETSTREAM_BACKOFF_MAX": "0.5",
        "ATCR_JETSTREAM_STATUS_ADDR": "127.0.0.1:0",
    }
    return load(JetstreamSettings, {**base, **env})


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0, interval: float = 0.02) -> float:
    """Poll `check` until true; returns the seconds it took. Raises AssertionError on timeout.

    The timeout only bounds a hang: a loaded CI machine may take far longer than a laptop."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
