"""The repository inside the real hold app (hold.app.create_app): key from the hold's identity,
first-start records from its settings, and a CAR the reference verifies with the key the hold's
own DID document publishes."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
from litestar import Litestar

from atcr.runtime import Runtime
from atcr.settings import load
from hold.app import create_app
from hold.repo import crew_rkey
from hold.settings import HoldSettings
from tests.integration.hold_repo.conftest import Oracle, serve_app
from tests.unit.hold_repo.support import OWNER_DID

pytestmark = pytest.mark.integration


def _app_factory(workdir: Path, holder: dict[str, str]) -> object:
    def build(port: int) -> Litestar:
        settings = load(
            HoldSettings,
            {
                "HOLD_HTTP_ADDR": f"127.0.0.1:{port}",
                "HOLD_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "HOLD_OWNER": OWNER_DID,
                "HOLD_PUBLIC": "true",
                "HOLD_DATA_DIR": str(workdir / "hold"),
                "STORAGE_DRIVER": "filesystem",
                "STORAGE_ROOT_DIR": str(workdir / "blobs"),
                "HOLD_UPLOAD_SWEEP_INTERVAL": "0",
                "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
            },
        )
        holder["did"] = f"did:web:127.0.0.1%3A{port}"
        return create_app(settings, Runtime.from_settings(settings))

    return build


async def test_hold_serves_a_bootstrapped_repo_that_verifies(tmp_path: Path, oracle: Oracle) -> None:
    holder: dict[str, str] = {}
    async with serve_app(_app_factory(tmp_path, holder), lifespan=True) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as http:
            did = holder["did"]
            doc = (await http.get("/.well-known/did.json")).json()
            assert doc["id"] == did
            did_key = "did:key:" + doc["verificationMethod"][0]["publicKeyMultibase"]
            assert (await http.get("/xrpc/_health")).status_code == 200
            described = (await http.get("/xrpc/com.atproto.repo.describeRepo", params={"repo": did})).json()
            assert described["collections"] == ["io.atcr.hold.captain", "io.atcr.hold.crew"]
            assert described["didDoc"] == doc
            captain = (
                await http.get(
                    "/xrpc/com.atproto.repo.getRecord",
                    params={"repo": did, "collection": "io.atcr.hold.captain", "rkey": "self"},
                )
            ).json()
            assert captain["value"]["owner"] == OWNER_DID and captain["value"]["public"] is True
            car = (await http.get("/xrpc/com.atproto.sync.getRepo", params={"did": did})).content
            result = await oracle.acall("verifyRepo", car=base64.b64encode(car).decode(), did=did, didKey=did_key)
            assert {(r["collection"], r["rkey"]) for r in result["records"]} == {
                ("io.atcr.hold.captain", "self"),
                ("io.atcr.hold.crew", crew_rkey(OWNER_DID)),
            }
            head = (await http.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": did})).json()
            # Wrong-method and unknown-route answers stay XRPC-shaped.
            bad = await http.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": "did:web:nope.example"})
            assert bad.status_code == 400 and bad.json()["error"] == "RepoNotFound"

    # A restart with the same data dir keeps the head: bootstrap runs on first start only.
    async with serve_app(_app_factory(tmp_path, holder), lifespan=True) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as http:
            again = (await http.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": holder["did"]})).json()
            if holder["did"] == did:
                assert again == head
