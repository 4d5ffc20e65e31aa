"""A real hold (uvicorn in the test's loop, real Valkey, local disk) with its crew, quota and
stats layer reachable, and helpers that speak its XRPC with service tokens the test signs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from atcr.runtime import Runtime
from atcr.serviceauth import MemoryReplayCache, ServiceAuthVerifier
from atcr.settings import load
from hold.app import create_app
from hold.identity import HOLD_SERVICE_ID
from hold.ledger import Ledger
from hold.settings import HoldSettings
from tests.integration.hold.harness import ALICE, BOB, OWNER, Hold, KeyDirectory, free_port, serve

__all__ = ["ALICE", "APPVIEW", "BOB", "OWNER", "CrewHold", "MakeHold"]

APPVIEW = "did:web:appview.example"
MiB = 1024 * 1024


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class CrewHold:
    hold: Hold
    ledger: Ledger

    @property
    def url(self) -> str:
        return self.hold.url

    @property
    def did(self) -> str:
        return self.hold.did

    @property
    def client(self) -> httpx.AsyncClient:
        return self.hold.client

    async def call(self, nsid: str, body: Any = None, *, iss: str | None = ALICE, **headers: str) -> httpx.Response:
        """POST an XRPC procedure; `iss=None` sends no token."""
        h = dict(headers)
        if iss is not None:
            h.update(self.hold.auth(nsid, iss=iss))
        return await self.client.post(f"{self.url}/xrpc/{nsid}", json=body if body is not None else {}, headers=h)

    async def query(self, nsid: str, **params: Any) -> httpx.Response:
        return await self.client.get(f"{self.url}/xrpc/{nsid}", params=params)

    async def record(self, collection: str, rkey: str) -> httpx.Response:
        return await self.query("com.atproto.repo.getRecord", repo=self.did, collection=collection, rkey=rkey)

    async def records(self, collection: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"repo": self.did, "collection": collection, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            r = await self.query("com.atproto.repo.listRecords", **params)
            assert r.status_code == 200, r.text
            out += r.json()["records"]
            cursor = r.json().get("cursor")
            if not cursor:
                return out

    async def push_blob(self, data: bytes, *, iss: str = ALICE, size: int | None = None) -> httpx.Response:
        """initiate (with `size` if given) + one part + complete; the completion (or refusal) response."""
        body: dict[str, Any] = {} if size is None else {"size": size}
        r = await self.hold.initiate(iss=iss, **body)
        if r.status_code != 200:
            return r
        uid = r.json()["uploadId"]
        part = await self.hold.put_part(uid, 1, data, iss=iss)
        assert part.status_code == 200, part.text
        return await self.hold.complete(uid, digest_of(data), [{"partNumber": 1, "etag": part.json()["etag"]}], iss=iss)

    async def notify_push(
        self, repository: str, layers: list[bytes | tuple[str, int]], *, iss: str = ALICE, user: str | None = None,
        manifest: bytes | None = None,
    ) -> httpx.Response:
        descs = []
        for x in layers:
            digest, size = (digest_of(x), len(x)) if isinstance(x, bytes) else x
            descs.append({"digest": digest, "size": size, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"})
        manifest_bytes = manifest or json.dumps(descs).encode()
        body = {
            "repository": repository,
            "userDid": user or iss,
            "manifestDigest": digest_of(manifest_bytes),
            "operation": "push",
            "manifest": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": descs},
            "tag": "latest",
        }
        return await self.call("io.atcr.hold.notifyManifest", body, iss=iss)

    async def notify_pull(
        self, owner: str, repository: str, count: int | None = None, *, iss: str | None = None, **headers: str
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "repository": repository,
            "userDid": owner,
            "manifestDigest": digest_of(b"m"),
            "operation": "pull",
        }
        if count is not None:
            body["count"] = count
        return await self.call("io.atcr.hold.notifyManifest", body, iss=iss, **headers)

    async def flush(self) -> None:
        assert self.ledger.stats is not None
        await self.ledger.stats.flush()


@asynccontextmanager
async def running_crew_hold(
    workdir: Path,
    valkey_url: str,
    env: dict[str, str] | None = None,
    keys: KeyDirectory | None = None,
    port: int | None = None,
    resolve_dids: bool = False,
) -> AsyncIterator[CrewHold]:
    """`resolve_dids`: verify tokens against real DID documents (the hold's own resolver)."""
    port = port or free_port()
    environ = {
        "VALKEY_URL": valkey_url,
        "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
        "ATCR_LOG_LEVEL": "warning",
        "HOLD_HTTP_ADDR": f"127.0.0.1:{port}",
        "HOLD_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "HOLD_PUBLIC": "true",
        "HOLD_ALLOW_ALL_CREW": "false",
        "HOLD_OWNER": OWNER,
        "HOLD_DATA_DIR": str(workdir / "hold"),
        "STORAGE_DRIVER": "filesystem",
        "STORAGE_ROOT_DIR": str(workdir / "blobs"),
        "HOLD_UPLOAD_SWEEP_INTERVAL": "0",
        "HOLD_UPLOAD_PART_MIN_SIZE": "1",
        "HOLD_STATS_FLUSH_INTERVAL": "3600",  # tests flush explicitly
        **(env or {}),
    }
    settings = load(HoldSettings, environ)
    runtime = Runtime.from_settings(settings)
    app = create_app(settings, runtime)
    services = app.state.hold
    directory = keys or KeyDirectory()
    if not resolve_dids:
        services.auth.verifier = ServiceAuthVerifier(
            service_did=services.identity.did,
            keys=directory,
            replay=MemoryReplayCache(),
            service_fragment=HOLD_SERVICE_ID,
        )
    try:
        async with serve(app, port), httpx.AsyncClient(timeout=60) as client:
            hold = Hold(url=f"http://127.0.0.1:{port}", settings=settings, services=services, keys=directory, client=client)
            yield CrewHold(hold, app.state.ledger)
    finally:
        await runtime.aclose()


MakeHold = Callable[..., AbstractAsyncContextManager[CrewHold]]


@pytest.fixture
async def make_hold(tmp_path: Path, valkey_url: str, valkey: Any) -> AsyncIterator[MakeHold]:
    """`async with make_hold(HOLD_PUBLIC="false", ...) as h:` a hold owned by OWNER; Valkey flushed after."""
    counter = iter(range(1000))
    ports: dict[str, int] = {}

    def factory(
        name: str | None = None, *, resolve_dids: bool = False, **env: Any
    ) -> AbstractAsyncContextManager[CrewHold]:
        """`name` reuses a data directory and port (a restart); without it each hold is new."""
        name = name or f"h{next(counter)}"
        port = ports.setdefault(name, free_port())
        return running_crew_hold(
            tmp_path / name,
            valkey_url,
            {k.upper(): str(v) for k, v in env.items()},
            port=port,
            resolve_dids=resolve_dids,
        )

    yield factory


@pytest.fixture
def quotas_file(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "quotas.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
