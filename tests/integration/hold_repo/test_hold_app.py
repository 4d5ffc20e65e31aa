"""The repository inside the real hold app (hold.app.create_app): key from the hold's identity,
first-start records from its settings, and a CAR the reference verifies with the key the hold's
own DID document publishes."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar

from atcr.identity import did_web_for_url
from atcr.runtime import Runtime
from atcr.settings import load
from hold.app import create_app
from hold.repo import crew_rkey
from hold.settings import HoldSettings
from tests.integration.hold_repo.conftest import Oracle, serve_app
from tests.unit.hold_repo.support import OWNER_DID

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def running_hold(workdir: Path, port: int = 0) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """The whole hold app, lifespan included; yields (its DID, a client on it)."""

    def build(bound: int) -> Litestar:
        settings = load(
            HoldSettings,
            {
                "HOLD_HTTP_ADDR": f"127.0.0.1:{bound}",
                "HOLD_PUBLIC_URL": f"http://127.0.0.1:{bound}",
                "HOLD_OWNER": OWNER_DID,
                "HOLD_PUBLIC": "true",
                "HOLD_DATA_DIR": str(workdir / "hold"),
                "STORAGE_DRIVER": "filesystem",
                "STORAGE_ROOT_DIR": str(workdir / "blobs"),
                "HOLD_UPLOAD_SWEEP_INTERVAL": "0",
                "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
            },
        )
        return create_app(settings, Runtime.from_settings(settings))

    async with (
        serve_app(build, lifespan=True, port=port) as url,
        httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as http,
    ):
        yield did_web_for_url(url), http


async def test_hold_serves_a_bootstrapped_repo_that_verifies(tmp_path: Path, oracle: Oracle) -> None:
    async with running_hold(tmp_path) as (did, http):
        port = int(str(http.base_url).rstrip("/").rsplit(":", 1)[1])
        doc = (await http.get("/.well-known/did.json")).json()
        assert doc["id"] == did
        did_key = "did:key:" + doc["verificationMethod"][0]["publicKeyMultibase"]
        assert (await http.get("/xrpc/_health")).status_code == 200
        described = (await http.get("/xrpc/com.atproto.repo.describeRepo", params={"repo": did})).json()
        assert described["collections"] == ["io.atcr.hold.captain", "io.atcr.hold.crew"]
        assert described["didDoc"] == doc
        params = {"repo": did, "collection": "io.atcr.hold.captain", "rkey": "self"}
        captain = (await http.get("/xrpc/com.atproto.repo.getRecord", params=params)).json()
        assert captain["value"]["owner"] == OWNER_DID and captain["value"]["public"] is True
        car = (await http.get("/xrpc/com.atproto.sync.getRepo", params={"did": did})).content
        result = await oracle.acall("verifyRepo", car=base64.b64encode(car).decode(), did=did, didKey=did_key)
        assert {(r["collection"], r["rkey"]) for r in result["records"]} == {
            ("io.atcr.hold.captain", "self"),
            ("io.atcr.hold.crew", crew_rkey(OWNER_DID)),
        }
        head = (await http.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": did})).json()
        bad = await http.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": "did:web:nope.example"})
        assert bad.status_code == 400 and bad.json()["error"] == "RepoNotFound"

    # A restart (same URL, same data dir) keeps the head: bootstrap runs on first start only.
    async with running_hold(tmp_path, port) as (did_again, http):
        assert did_again == did
        again = (await http.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": did})).json()
        assert again == head
