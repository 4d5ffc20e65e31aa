"""Quotas refuse a push at the first point the size is known: initiateUpload with a size,
completeUpload (before the blob becomes visible), notifyManifest (ATCR-NOTES §5.5)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.hold_crew.conftest import ALICE, APPVIEW, BOB, OWNER, CrewHold, MakeHold, digest_of

pytestmark = pytest.mark.integration

TIERS = """
tiers:
  tiny:
    quota: 1000
  roomy:
    quota: 1MB
    scan_on_push: true
defaults:
  new_crew_tier: tiny
"""


@pytest.fixture
def tiers(quotas_file: Callable[[str], Path]) -> Path:
    return quotas_file(TIERS)


async def quota(h: CrewHold, did: str) -> dict[str, object]:
    r = await h.query("io.atcr.hold.getQuota", userDid=did)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_refused_at_initiate_when_the_size_is_declared(make_hold: MakeHold, tiers: Path) -> None:
    async with make_hold(hold_allow_all_crew=True, hold_quotas_path=tiers) as h:
        r = await h.hold.initiate(size=1001)
        assert r.status_code == 403 and r.json()["error"] == "QuotaExceeded", r.text
        assert "tiny" in r.json()["message"]
        assert (await h.hold.initiate(size=1000)).status_code == 200
        assert (await h.hold.initiate(size=5000, iss=OWNER)).status_code == 200  # the captain is unlimited


async def test_refused_at_complete_before_the_blob_is_visible(make_hold: MakeHold, tiers: Path) -> None:
    async with make_hold(hold_allow_all_crew=True, hold_quotas_path=tiers) as h:
        big = os.urandom(1200)
        uid = await h.hold.upload_id()  # no size: the AppView did not know it
        part = await h.hold.put_part(uid, 1, big)
        r = await h.hold.complete(uid, digest_of(big), [{"partNumber": 1, "etag": part.json()["etag"]}])
        assert r.status_code == 403 and r.json()["error"] == "QuotaExceeded", r.text
        assert (await h.hold.get_blob(digest_of(big), method="HEAD")).status_code == 404
        # The upload is gone with its parts, not left open.
        again = await h.hold.complete(uid, digest_of(big), [{"partNumber": 1, "etag": part.json()["etag"]}])
        assert again.status_code == 404 and again.json()["error"] == "InvalidUploadId"
        assert not any((h.hold.settings.storage_root_dir / "uploads").iterdir())

        # Completed blobs are reserved until a manifest uses them: 600 + 600 > 1000.
        a, b = os.urandom(600), os.urandom(600)
        assert (await h.push_blob(a)).status_code == 200
        r = await h.push_blob(b)
        assert r.status_code == 403 and r.json()["error"] == "QuotaExceeded"
        # The reservation becomes usage when the manifest arrives (not counted twice).
        r = await h.notify_push("app", [a])
        assert r.status_code == 200, r.text
        assert await quota(h, ALICE) == {
            "userDid": ALICE, "uniqueBlobs": 1, "totalSize": 600, "reservedSize": 0, "limit": 1000, "tier": "tiny"
        }
        # Re-uploading a blob the user already has costs nothing.
        assert (await h.push_blob(a)).status_code == 200


async def test_refused_at_notify_manifest(make_hold: MakeHold, tiers: Path) -> None:
    async with make_hold(hold_allow_all_crew=True, hold_quotas_path=tiers) as h:
        # Blobs the captain stored (unlimited) that ALICE then references in her manifest.
        small, large = os.urandom(400), os.urandom(700)
        for blob in (small, large):
            assert (await h.push_blob(blob, iss=OWNER)).status_code == 200
        assert (await h.call("io.atcr.hold.requestCrew", {}, iss=ALICE)).status_code == 200

        r = await h.notify_push("app", [small])
        assert r.status_code == 200 and r.json() == {
            "success": True, "operation": "push", "statsUpdated": True, "layersCreated": 1
        }
        # A declared size smaller than the stored blob does not make usage smaller.
        r = await h.notify_push("app", [(digest_of(large), 1)])
        assert r.status_code == 403 and r.json()["error"] == "QuotaExceeded", r.text
        layers = await h.records("io.atcr.hold.layer")
        assert [x["value"]["digest"] for x in layers] == [digest_of(small)]
        # Nothing of the refused push was counted.
        await h.flush()
        stats = (await h.query("io.atcr.hold.getStats", ownerDid=ALICE, repository="app")).json()
        assert stats["pushCount"] == 1

        # The same layer in a second manifest: a layer record for that manifest, no new usage.
        r = await h.notify_push("app", [small], manifest=b"another manifest")
        assert r.json()["layersCreated"] == 1
        r = await h.notify_push("app", [small], manifest=b"another manifest")
        assert r.json()["layersCreated"] == 0  # a re-push writes no duplicate record
        assert await quota(h, ALICE) == {
            "userDid": ALICE, "uniqueBlobs": 1, "totalSize": 400, "reservedSize": 0, "limit": 1000, "tier": "tiny"
        }
        value = (await h.records("io.atcr.hold.layer"))[0]["value"]
        assert value["userDid"] == ALICE and value["size"] == 400
        assert value["manifest"].startswith(f"at://{ALICE}/io.atcr.manifest/")

        # The captain is unlimited and has no tier.
        r = await h.notify_push("big", [large, small], iss=OWNER)
        assert r.status_code == 200
        assert await quota(h, OWNER) == {"userDid": OWNER, "uniqueBlobs": 2, "totalSize": 1100, "reservedSize": 0}


async def test_tiers_follow_the_crew_record(make_hold: MakeHold, tiers: Path) -> None:
    env = {"hold_quotas_path": tiers, "hold_trusted_appviews": APPVIEW}
    async with make_hold(**env) as h:
        r = await h.query("io.atcr.hold.listTiers")
        assert r.json() == {
            "tiers": [
                {"name": "tiny", "quotaBytes": 1000, "quotaFormatted": "1 KB", "scanOnPush": False},
                {"name": "roomy", "quotaBytes": 1_000_000, "quotaFormatted": "1 MB", "scanOnPush": True},
            ]
        }
        r = await h.call("io.atcr.hold.addCrew", {"member": BOB, "role": "write", "tier": "roomy"}, iss=OWNER)
        assert r.status_code == 200
        assert (await quota(h, BOB))["limit"] == 1_000_000
        assert (await h.hold.initiate(iss=BOB, size=5000)).status_code == 200
        r = await h.call("io.atcr.hold.addCrew", {"member": BOB, "tier": "gold"}, iss=OWNER)
        assert r.status_code == 400

        # Billing: only a trusted AppView (or the captain) moves a member between tiers.
        body = {"userDid": BOB, "tierRank": 0}
        r = await h.call("io.atcr.hold.updateCrewTier", body, iss=BOB)
        assert r.status_code == 403
        r = await h.call("io.atcr.hold.updateCrewTier", body, iss=APPVIEW)
        assert r.status_code == 200 and r.json() == {"tierName": "tiny"}
        assert (await quota(h, BOB))["tier"] == "tiny"
        assert (await h.hold.initiate(iss=BOB, size=5000)).status_code == 403
        r = await h.call("io.atcr.hold.updateCrewTier", {"userDid": BOB, "tierRank": 7}, iss=OWNER)
        assert r.status_code == 400
        r = await h.call("io.atcr.hold.updateCrewTier", {"userDid": ALICE, "tierRank": 1}, iss=OWNER)
        assert r.status_code == 404 and r.json()["error"] == "NotCrew"


async def test_no_quotas_file_means_nothing_is_refused(make_hold: MakeHold) -> None:
    async with make_hold(hold_allow_all_crew=True) as h:
        blob = os.urandom(3000)
        assert (await h.push_blob(blob, size=3000)).status_code == 200
        assert (await h.notify_push("app", [blob])).status_code == 200
        assert await quota(h, ALICE) == {"userDid": ALICE, "uniqueBlobs": 1, "totalSize": 3000, "reservedSize": 0}
        assert (await h.query("io.atcr.hold.listTiers")).json() == {"tiers": []}
        assert (await h.query("io.atcr.hold.getQuota")).status_code == 400


async def test_usage_index_is_rebuilt_from_layer_records(make_hold: MakeHold, tiers: Path, valkey: object) -> None:
    async with make_hold("same", hold_allow_all_crew=True, hold_quotas_path=tiers) as h:
        blobs = [os.urandom(100 + i) for i in range(3)]
        for blob in blobs:
            assert (await h.push_blob(blob)).status_code == 200
        assert (await h.notify_push("app", blobs)).status_code == 200
        before = await quota(h, ALICE)
    await valkey.flushdb()  # type: ignore[attr-defined]
    async with make_hold("same", hold_allow_all_crew=True, hold_quotas_path=tiers) as h:
        deadline = asyncio.get_running_loop().time() + 30  # the rebuild runs in the background
        while await quota(h, ALICE) != before and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert await quota(h, ALICE) == before == {
            "userDid": ALICE, "uniqueBlobs": 3, "totalSize": 303, "reservedSize": 0, "limit": 1000, "tier": "tiny"
        }
        # And the recorded (manifest, layer) pairs too: a re-push writes nothing.
        assert (await h.notify_push("app", blobs)).json()["layersCreated"] == 0


def test_bad_quota_file_stops_the_hold(tmp_path: Path, quotas_file: Callable[[str], Path]) -> None:
    from atcr.errors import ConfigError
    from atcr.settings import load
    from hold.app import create_app
    from hold.settings import HoldSettings

    bad = quotas_file("tiers:\n  a: {quota: lots}\n")
    settings = load(
        HoldSettings,
        {"HOLD_DATA_DIR": str(tmp_path / "d"), "STORAGE_ROOT_DIR": str(tmp_path / "b"), "HOLD_QUOTAS_PATH": str(bad)},
    )
    with pytest.raises(ConfigError, match="HOLD_QUOTAS_PATH"):
        create_app(settings)


async def test_a_refused_push_locks_nobody_out(make_hold: MakeHold, tiers: Path) -> None:
    """Blobs admitted before a refusal are released with it: usage and reservations are as
    before, and the next push that fits goes through at once (not a day later)."""
    async with make_hold(hold_allow_all_crew=True, hold_quotas_path=tiers) as h:
        first, second = os.urandom(600), os.urandom(600)
        assert (await h.push_blob(first)).status_code == 200
        assert (await quota(h, ALICE))["reservedSize"] == 600
        r = await h.push_blob(second)  # 600 + 600 > 1000: the push is refused partway
        assert r.status_code == 403 and r.json()["error"] == "QuotaExceeded"
        after = await quota(h, ALICE)
        assert after["totalSize"] == 0 and after["reservedSize"] == 0
        small = os.urandom(900)
        assert (await h.push_blob(small)).status_code == 200
        assert (await h.notify_push("app", [small])).status_code == 200
        assert await quota(h, ALICE) == {
            "userDid": ALICE, "uniqueBlobs": 1, "totalSize": 900, "reservedSize": 0, "limit": 1000, "tier": "tiny"
        }


async def test_a_manifest_releases_every_blob_it_names_and_a_refused_one_too(
    make_hold: MakeHold, tiers: Path
) -> None:
    async with make_hold(hold_allow_all_crew=True, hold_quotas_path=tiers) as h:
        config, layer = os.urandom(50), os.urandom(300)
        for blob in (config, layer):
            assert (await h.push_blob(blob)).status_code == 200
        body = {
            "repository": "app", "userDid": ALICE, "manifestDigest": digest_of(b"cfg-manifest"), "operation": "push",
            "manifest": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                         "config": {"digest": digest_of(config), "size": 50},
                         "layers": [{"digest": digest_of(layer), "size": 300,
                                     "mediaType": "application/vnd.oci.image.layer.v1.tar"}]},
        }
        assert (await h.call("io.atcr.hold.notifyManifest", body, iss=ALICE)).status_code == 200
        got = await quota(h, ALICE)
        assert got["totalSize"] == 300 and got["reservedSize"] == 0  # the config no longer reserved
        # A manifest the quota refuses releases what its own blobs had reserved.
        big = os.urandom(600)
        assert (await h.push_blob(big)).status_code == 200
        assert (await quota(h, ALICE))["reservedSize"] == 600
        r = await h.notify_push("app", [big, os.urandom(200)])
        assert r.status_code in (400, 403), r.text
        r = await h.notify_push("app2", [big])  # 300 + 600 fits; then more does not
        assert r.status_code == 200, r.text
        r = await h.notify_push("app3", [(digest_of(big), 600), (digest_of(layer), 300)])
        assert r.status_code == 200  # nothing new: both already counted
        assert (await quota(h, ALICE))["reservedSize"] == 0


async def test_uploaded_blobs_no_manifest_uses_are_deleted_after_the_grace(
    make_hold: MakeHold, tiers: Path
) -> None:
    async with make_hold(hold_allow_all_crew=True, hold_quotas_path=tiers, hold_staged_grace=3600,
                         hold_reservation_ttl=1) as h:
        used, unused = os.urandom(100), os.urandom(120)
        for blob in (used, unused):
            assert (await h.push_blob(blob)).status_code == 200
        assert (await h.notify_push("app", [used])).status_code == 200
        assert await h.ledger.sweep_staged_once() == (0, 0)  # within the grace: nothing goes
        # Two hours later (the index's clock moved on, not the test's): the grace has passed.
        index = h.ledger.quota.index
        assert index is not None
        later = index.now() + 7200
        index.now = lambda: later  # type: ignore[method-assign]
        await h.hold.services.valkey.delete(f"hold:staged-sweep:{{{h.did}}}")  # type: ignore[union-attr]
        assert await h.ledger.sweep_staged_once() == (1, 1)  # `unused` deleted, `used` kept (referenced)
        assert (await h.hold.get_blob(digest_of(unused), method="HEAD")).status_code == 404
        assert (await h.hold.get_blob(digest_of(used), method="HEAD")).status_code in (200, 307)
        # The unused blob's reservation lapses on its own (1 s here): waited for, not slept on.
        deadline = asyncio.get_running_loop().time() + 30
        while (await quota(h, ALICE))["reservedSize"] != 0:
            assert asyncio.get_running_loop().time() < deadline, await quota(h, ALICE)
            await asyncio.sleep(0.2)
