"""Quotas on direct uploads (hold/oci_uploads.py): refused before the bytes are stored, and a
blob that fits is reserved exactly as a proxied upload's is (the manifest's check relies on it)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.integration.hold_crew.conftest import ALICE, CrewHold, MakeHold

pytestmark = pytest.mark.integration

NSID = "io.atcr.hold.initiateUpload"
TIERS = """
tiers:
  tiny:
    quota: 1000
defaults:
  new_crew_tier: tiny
"""


def staged_bytes(h: CrewHold) -> int:
    root = h.hold.settings.storage_root_dir / "uploads"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


async def start(h: CrewHold) -> str:
    r = await h.client.post(
        f"{h.url}/xrpc/{NSID}",
        json={"direct": {"repository": "app", "blobUrl": "https://appview.example/v2/alice.test/app/blobs/"}},
        headers=h.hold.auth(NSID),
    )
    assert r.status_code == 200, r.text
    return str(r.json()["url"])


async def test_direct_upload_over_quota_is_refused_before_storing(
    make_hold: MakeHold, quotas_file: Callable[[str], Path]
) -> None:
    async with make_hold(hold_allow_all_crew=True, hold_quotas_path=quotas_file(TIERS)) as h:
        big = random.Random(7).randbytes(1200)
        url = await start(h)
        # Declared length: refused before a byte is read.
        r = await h.client.patch(url, content=big, headers={"Content-Range": "0-1199"})
        assert r.status_code == 403, r.text
        assert r.json()["errors"][0]["code"] == "DENIED" and "quota" in r.json()["errors"][0]["message"]
        # Streamed without a length: cut off where it stops fitting, nothing kept.

        async def stream() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 100):
                yield big[i : i + 100]

        r = await h.client.patch(url, content=stream())
        assert r.status_code == 403, r.text
        assert (await h.client.get(url)).headers["Range"] == "0-0"
        assert staged_bytes(h) == 0

        # A blob that fits completes and is reserved like a proxied upload's.
        small = random.Random(8).randbytes(600)
        digest = "sha256:" + hashlib.sha256(small).hexdigest()
        r = await h.client.put(f"{url}?digest={digest}", content=small)
        assert r.status_code == 201, r.text
        q = (await h.query("io.atcr.hold.getQuota", userDid=ALICE)).json()
        assert q["reservedSize"] == 600 and q["limit"] == 1000
        # The reservation counts: 600 more no longer fit.
        r = await h.client.put(f"{await start(h)}?digest=sha256:{'0' * 64}", content=small[::-1])
        assert r.status_code == 403, r.text
