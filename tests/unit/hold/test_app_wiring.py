"""The hold app without Valkey still starts: downloads work, uploads say why they cannot."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from atcr.identity import did_web_for_url
from atcr.settings import load
from hold.app import create_app
from hold.settings import HoldSettings

pytestmark = pytest.mark.unit


async def test_no_valkey_means_uploads_unavailable(tmp_path: Path) -> None:
    settings = load(
        HoldSettings,
        {"HOLD_DATA_DIR": str(tmp_path / "hold"), "STORAGE_ROOT_DIR": str(tmp_path / "blobs"), "HOLD_PUBLIC": "true"},
    )
    app = create_app(settings)
    async with AsyncTestClient(app) as client:
        did = (await client.get("/.well-known/atproto-did")).text
        assert did == did_web_for_url(settings.public_url)
        r = await client.get("/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": "sha256:" + "0" * 64})
        assert r.status_code == 404 and r.json()["error"] == "BlobNotFound"
        r = await client.post("/xrpc/io.atcr.hold.initiateUpload", json={})
        assert r.status_code == 401  # authentication comes first
        assert (tmp_path / "hold" / "signing.key").exists()
        assert (tmp_path / "hold" / "url-signing.key").stat().st_mode & 0o777 == 0o600
