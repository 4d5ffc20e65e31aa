"""A real hold on loopback for tests: uvicorn in the test's own event loop, real Valkey,
local disk or moto S3 over HTTP, and service tokens signed by keys the test controls."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec

from atcr.runtime import Runtime
from atcr.serviceauth import MemoryReplayCache, ServiceAuthVerifier, mint_service_token, multikey_of
from atcr.settings import load
from hold.app import create_app
from hold.identity import HOLD_SERVICE_ID
from hold.service import HoldServices
from hold.settings import HoldSettings

ALICE = "did:plc:alicealicealicealice0000"
BOB = "did:plc:bobbobbobbobbobbobbob0000"
OWNER = "did:plc:captaincaptaincaptain000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KeyDirectory:
    """`SigningKeys` for tests: the #atproto key of each test DID, rotatable."""

    def __init__(self) -> None:
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.lookups: list[tuple[str, bool]] = []

    def key(self, did: str, curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
        if did not in self.keys:
            self.keys[did] = ec.generate_private_key(curve or ec.SECP256K1())
        return self.keys[did]

    async def signing_key(self, did: str, *, fresh: bool = False) -> str | None:
        self.lookups.append((did, fresh))
        key = self.keys.get(did)
        return multikey_of(key) if key is not None else None


@dataclass
class Hold:
    url: str
    settings: HoldSettings
    services: HoldServices
    keys: KeyDirectory
    client: httpx.AsyncClient
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def did(self) -> str:
        return self.services.identity.did

    def token(self, lxm: str | None, *, iss: str = ALICE, aud: str | None = None, **kw: Any) -> str:
        return mint_service_token(
            self.keys.key(iss), iss=iss, aud=aud or f"{self.did}#{HOLD_SERVICE_ID}", lxm=lxm, **kw
        )

    def auth(self, lxm: str, *, iss: str = ALICE, **kw: Any) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.token(lxm, iss=iss, **kw)}

    # --- XRPC helpers (raw responses; tests assert on status and body) ---------------------

    async def initiate(self, *, iss: str = ALICE, **body: Any) -> httpx.Response:
        nsid = "io.atcr.hold.initiateUpload"
        return await self.client.post(f"{self.url}/xrpc/{nsid}", json=body, headers=self.auth(nsid, iss=iss))

    async def upload_id(self, *, iss: str = ALICE, **body: Any) -> str:
        r = await self.initiate(iss=iss, **body)
        assert r.status_code == 200, r.text
        return str(r.json()["uploadId"])

    async def put_part(
        self, upload_id: str, number: int | str, data: Any, *, iss: str = ALICE, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.put(
            f"{self.url}/xrpc/io.atcr.hold.uploadPart",
            content=data,
            headers={
                **self.auth("io.atcr.hold.uploadPart", iss=iss),
                "X-Upload-Id": upload_id,
                "X-Part-Number": str(number),
                "Content-Type": "application/octet-stream",
                **(headers or {}),
            },
        )

    async def part_url(self, upload_id: str, number: Any, *, iss: str = ALICE) -> httpx.Response:
        return await self.client.post(
            f"{self.url}/xrpc/io.atcr.hold.getPartUploadUrl",
            json={"uploadId": upload_id, "partNumber": number},
            headers=self.auth("io.atcr.hold.getPartUploadUrl", iss=iss),
        )

    async def complete(self, upload_id: str, digest: str, parts: Any, *, iss: str = ALICE) -> httpx.Response:
        return await self.client.post(
            f"{self.url}/xrpc/io.atcr.hold.completeUpload",
            json={"uploadId": upload_id, "digest": digest, "parts": parts},
            headers=self.auth("io.atcr.hold.completeUpload", iss=iss),
        )

    async def abort(self, upload_id: str, *, iss: str = ALICE) -> httpx.Response:
        return await self.client.post(
            f"{self.url}/xrpc/io.atcr.hold.abortUpload",
            json={"uploadId": upload_id},
            headers=self.auth("io.atcr.hold.abortUpload", iss=iss),
        )

    async def get_blob(self, digest: str, *, method: str = "GET", headers: dict[str, str] | None = None,
                       **params: str) -> httpx.Response:
        return await self.client.request(
            method,
            f"{self.url}/xrpc/com.atproto.sync.getBlob",
            params={"did": self.did, "cid": digest, **params},
            headers=headers or {},
        )

    async def push(self, data: bytes, digest: str, part_size: int, *, iss: str = ALICE) -> httpx.Response:
        """initiate + uploadPart in order + complete; returns the completion response."""
        uid = await self.upload_id(iss=iss)
        parts = []
        for i, off in enumerate(range(0, max(len(data), 1), part_size), 1):
            r = await self.put_part(uid, i, data[off : off + part_size], iss=iss)
            assert r.status_code == 200, r.text
            parts.append({"partNumber": i, "etag": r.json()["etag"]})
        return await self.complete(uid, digest, parts, iss=iss)


@asynccontextmanager
async def serve(app: Any, port: int) -> AsyncIterator[None]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)


@asynccontextmanager
async def running_hold(
    workdir: Path,
    valkey_url: str,
    *,
    driver: str = "filesystem",
    s3: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    runtime_env: dict[str, str] | None = None,
    keys: KeyDirectory | None = None,
    public_host: str = "127.0.0.1",
) -> AsyncIterator[Hold]:
    port = free_port()
    environ = {
        "VALKEY_URL": valkey_url,
        "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
        "ATCR_LOG_LEVEL": "warning",
        "HOLD_HTTP_ADDR": f"127.0.0.1:{port}",
        "HOLD_PUBLIC_URL": f"http://{public_host}:{port}",
        "HOLD_PUBLIC": "true",
        "HOLD_ALLOW_ALL_CREW": "true",
        "HOLD_DATA_DIR": str(workdir / "hold"),
        "STORAGE_DRIVER": driver,
        "STORAGE_ROOT_DIR": str(workdir / "blobs"),
        "HOLD_UPLOAD_SWEEP_INTERVAL": "0",
        **(s3 or {}),
        **(runtime_env or {}),
        **(env or {}),
    }
    settings = load(HoldSettings, environ)
    runtime = Runtime.from_settings(settings)
    app = create_app(settings, runtime)
    services: HoldServices = app.state.hold
    directory = keys or KeyDirectory()
    if not (runtime_env or {}).get("ATCR_PLC_URL"):
        # Tokens from keys this test holds; the PDS tests keep the real resolver.
        services.auth.verifier = ServiceAuthVerifier(
            service_did=services.identity.did,
            keys=directory,
            replay=None if settings.allow_token_reuse else MemoryReplayCache(),
            service_fragment=HOLD_SERVICE_ID,
        )
    try:
        async with serve(app, port), httpx.AsyncClient(timeout=120) as client:
            url = f"http://127.0.0.1:{port}"
            yield Hold(url=url, settings=settings, services=services, keys=directory, client=client)
    finally:
        if runtime.valkey is not None:
            await runtime.valkey.flushdb()
        await runtime.aclose()


def s3_env(endpoint_url: str, bucket: str) -> dict[str, str]:
    return {
        "STORAGE_DRIVER": "s3",
        "S3_BUCKET": bucket,
        "S3_ENDPOINT": endpoint_url,
        "AWS_REGION": "us-east-1",
        "S3_FORCE_PATH_STYLE": "true",
    }
