"""A real hold (either storage driver, real Valkey) whose garbage collector asks users' real
PDS accounts (local PLC + PDS), and helpers that push images the way an AppView does:
blobs to the hold, notifyManifest, then the manifest and tag records to the user's PDS."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest

from atcr.digest import Digest
from atcr.readmodel.keys import manifest_rkey, tag_rkey
from atcr.runtime import Runtime
from atcr.serviceauth import MemoryReplayCache, ServiceAuthVerifier
from atcr.settings import load
from hold.app import create_app
from hold.gc.cli import run_gc
from hold.gc.service import GcService
from hold.identity import HOLD_SERVICE_ID
from hold.settings import HoldSettings
from tests.integration.hold.harness import Hold, KeyDirectory, free_port, s3_env, serve
from tests.support.fixtures_pds import pds_network  # noqa: F401
from tests.support.pdsnet import Account, TestNetwork, create_account

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(label: str, size: int = 2048) -> bytes:
    return (label.encode() + b":" + secrets.token_bytes(16)).ljust(size, b"x")


@dataclass
class Image:
    owner: Account
    repository: str
    tag: str
    layers: list[bytes]
    config: bytes
    manifest: bytes = b""

    def __post_init__(self) -> None:
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": self.config_desc,
                "layers": self.layer_descs,
            },
            sort_keys=True,
        ).encode()

    @property
    def config_desc(self) -> dict[str, Any]:
        return {"mediaType": CONFIG_TYPE, "digest": digest_of(self.config), "size": len(self.config)}

    @property
    def layer_descs(self) -> list[dict[str, Any]]:
        return [{"mediaType": LAYER_TYPE, "digest": digest_of(x), "size": len(x)} for x in self.layers]

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def rkey(self) -> str:
        return manifest_rkey(self.digest)

    @property
    def uri(self) -> str:
        return f"at://{self.owner.did}/io.atcr.manifest/{self.rkey}"

    @property
    def blob_digests(self) -> list[str]:
        return [digest_of(x) for x in self.layers] + [digest_of(self.config)]


@dataclass
class GcWorld:
    hold: Hold
    app: Any
    pds: TestNetwork
    down: set[str] = field(default_factory=set)  # DIDs whose PDS is unreachable for the GC

    @property
    def gc(self) -> GcService:
        gc: GcService = self.app.state.gc
        return gc

    async def upload(self, account: Account, data: bytes) -> None:
        r = await self.hold.push(data, digest_of(data), max(1, len(data)), iss=account.did)
        assert r.status_code == 200, r.text

    async def notify(self, image: Image) -> httpx.Response:
        nsid = "io.atcr.hold.notifyManifest"
        body = {
            "repository": image.repository,
            "userDid": image.owner.did,
            "manifestDigest": image.digest,
            "operation": "push",
            "manifest": {"mediaType": MANIFEST_TYPE, "config": image.config_desc, "layers": image.layer_descs},
            "manifestUri": image.uri,
            "tag": image.tag,
        }
        return await self.hold.client.post(
            f"{self.hold.url}/xrpc/{nsid}", json=body, headers=self.hold.auth(nsid, iss=image.owner.did)
        )

    async def write_records(self, image: Image) -> None:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        manifest = {
            "$type": "io.atcr.manifest",
            "repository": image.repository,
            "digest": image.digest,
            "mediaType": MANIFEST_TYPE,
            "schemaVersion": 2,
            "config": image.config_desc,
            "layers": image.layer_descs,
            "holdDid": self.hold.did,
            "createdAt": now,
        }
        tag = {
            "$type": "io.atcr.tag",
            "repository": image.repository,
            "tag": image.tag,
            "manifest": image.uri,
            "createdAt": now,
        }
        await self._pds(image.owner, "putRecord", "io.atcr.manifest", image.rkey, manifest)
        await self._pds(image.owner, "putRecord", "io.atcr.tag", tag_rkey(image.repository, image.tag), tag)

    async def push(self, image: Image, *, upload: bool = True) -> None:
        """What an AppView does: blobs, notifyManifest (before the record), then the records."""
        if upload:
            for data in [*image.layers, image.config]:
                await self.upload(image.owner, data)
        r = await self.notify(image)
        assert r.status_code == 200, r.text
        await self.write_records(image)

    async def delete(self, image: Image) -> None:
        """`DELETE` of the tag and the manifest, at the user's PDS."""
        await self._pds(image.owner, "deleteRecord", "io.atcr.tag", tag_rkey(image.repository, image.tag))
        await self._pds(image.owner, "deleteRecord", "io.atcr.manifest", image.rkey)

    async def _pds(self, account: Account, method: str, collection: str, rkey: str, value: Any = None) -> None:
        body: dict[str, Any] = {"repo": account.did, "collection": collection, "rkey": rkey}
        if value is not None:
            body["record"] = value
        async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
            r = await client.post(
                f"{account.pds_url}/xrpc/com.atproto.repo.{method}", json=body, headers=account.auth_headers
            )
        assert r.status_code == 200, r.text

    async def stored(self, digest: str) -> bool:
        return await self.hold.services.store.stat(Digest.parse(digest)) is not None

    async def run_gc(self, *, grace: int = 0, dry_run: bool = False) -> tuple[dict[str, Any], str]:
        """Through `atcr hold gc`'s code path: the CLI asks the running hold with a signed URL."""
        out = StringIO()
        await run_gc(self.hold.settings, dry_run=dry_run, grace=grace, out=out)
        runs = await self.gc.collector.runs() if self.gc.collector is not None else []
        return runs[0], out.getvalue()

    async def quota(self, account: Account) -> dict[str, Any]:
        r = await self.hold.client.get(
            f"{self.hold.url}/xrpc/io.atcr.hold.getQuota", params={"userDid": account.did}
        )
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    async def layer_records(self) -> list[dict[str, Any]]:
        repo = self.app.state.repo.get()
        page = await repo.list_records("io.atcr.hold.layer", limit=1000)
        return [r.value for r in page.records]

    def account(self, prefix: str) -> Account:
        return create_account(self.pds.pds_url, prefix)


@asynccontextmanager
async def running_gc_hold(
    workdir: Path, valkey_url: str, pds: TestNetwork, *, driver: str, s3: dict[str, str] | None, env: dict[str, str]
) -> AsyncIterator[GcWorld]:
    port = free_port()
    environ = {
        "VALKEY_URL": valkey_url,
        "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
        "ATCR_LOG_LEVEL": "warning",
        "ATCR_PLC_URL": pds.plc_url,
        "HOLD_HTTP_ADDR": f"127.0.0.1:{port}",
        "HOLD_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "HOLD_PUBLIC": "true",
        "HOLD_ALLOW_ALL_CREW": "true",
        "HOLD_DATA_DIR": str(workdir / "hold"),
        "STORAGE_DRIVER": driver,
        "STORAGE_ROOT_DIR": str(workdir / "blobs"),
        "HOLD_UPLOAD_SWEEP_INTERVAL": "0",
        "HOLD_STATS_FLUSH_INTERVAL": "3600",
        "HOLD_GC_INTERVAL": "0",
        **(s3 or {}),
        **env,
    }
    settings = load(HoldSettings, environ)
    runtime = Runtime.from_settings(settings)
    app = create_app(settings, runtime)
    services = app.state.hold
    keys = KeyDirectory()
    # Tokens signed by keys this test holds; the collector resolves the users' real DIDs.
    services.auth.verifier = ServiceAuthVerifier(
        service_did=services.identity.did, keys=keys, replay=MemoryReplayCache(), service_fragment=HOLD_SERVICE_ID
    )
    world: GcWorld | None = None

    async def endpoint(did: str) -> str:
        # The user's real PDS from their DID document; a port nobody listens on while the test
        # has taken that user's PDS "down".
        assert world is not None
        doc = await runtime.resolver.resolve_did(did)
        assert doc.pds_endpoint is not None
        return f"http://127.0.0.1:{free_port()}" if did in world.down else doc.pds_endpoint

    collector = app.state.gc.collector
    assert collector is not None
    collector.checker._endpoint = endpoint
    try:
        async with serve(app, port), httpx.AsyncClient(timeout=120) as client:
            hold = Hold(url=f"http://127.0.0.1:{port}", settings=settings, services=services, keys=keys, client=client)
            world = GcWorld(hold, app, pds)
            yield world
    finally:
        if runtime.valkey is not None:
            await runtime.valkey.flushdb()
        await runtime.aclose()


MakeWorld = Callable[..., AbstractAsyncContextManager[GcWorld]]


@pytest.fixture(params=["filesystem", "s3"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_world(
    tmp_path: Path, valkey_url: str, pds_network: TestNetwork, driver: str,  # noqa: F811
    request: pytest.FixtureRequest,
) -> MakeWorld:
    counter = iter(range(1000))

    def factory(**env: Any) -> AbstractAsyncContextManager[GcWorld]:
        s3 = None
        if driver == "s3":
            endpoint = request.getfixturevalue("s3_endpoint")
            bucket = request.getfixturevalue("s3_bucket")
            s3 = s3_env(endpoint.url, bucket)
        return running_gc_hold(
            tmp_path / f"w{next(counter)}", valkey_url, pds_network, driver=driver, s3=s3,
            env={k.upper(): str(v) for k, v in env.items()},
        )

    return factory
