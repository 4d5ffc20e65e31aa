"""`io.atcr.hold.exportUserData` / `deleteUserData` (ATCR-NOTES §5.2): each store read after the
delete (repo records, Valkey usage), the other user untouched."""

from __future__ import annotations

from typing import Any

import pytest

from atcr.lexicon import validate_xrpc_output
from hold.repo.repo import Put
from hold.userdata import NSID_DELETE, NSID_EXPORT
from tests.integration.hold_crew.conftest import ALICE, BOB, OWNER, CrewHold, MakeHold

pytestmark = pytest.mark.integration


async def export(h: CrewHold, iss: str) -> dict[str, Any]:
    r = await h.client.get(f"{h.url}/xrpc/{NSID_EXPORT}", headers=h.hold.auth(NSID_EXPORT, iss=iss))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_export_then_delete_leaves_other_users_alone(make_hold: MakeHold) -> None:
    async with make_hold(hold_allow_all_crew=True) as h:
        for who, blob in ((ALICE, b"alice-layer"), (BOB, b"bob-layer")):
            assert (await h.call("io.atcr.hold.requestCrew", {}, iss=who)).status_code == 200
            assert (await h.push_blob(blob, iss=who)).status_code == 200
            assert (await h.notify_push("tools/app", [blob], iss=who)).status_code == 200
        await h.flush()
        # A scan record, as the scanner writes them (rkey: the manifest digest's hex).
        scan = {"$type": "io.atcr.hold.scan", "manifest": f"at://{ALICE}/io.atcr.manifest/abc", "repository": "tools/app",
                "userDid": ALICE, "critical": 0, "high": 1, "medium": 0, "low": 0, "total": 1,
                "scannerVersion": "test", "scannedAt": "2026-01-01T00:00:00Z"}
        await h.ledger.repo.get().apply_writes([Put("io.atcr.hold.scan", "ab" * 32, scan)])

        got = await export(h, ALICE)
        validate_xrpc_output(NSID_EXPORT, got)
        assert got["userDid"] == ALICE and got["holdDid"] == h.did and got["isCaptain"] is False
        assert got["crewRecord"]["role"] == "member" and "blob:write" in got["crewRecord"]["permissions"]
        assert [r["userDid"] for r in got["layerRecords"]] == [ALICE]
        assert [(r["ownerDid"], r["pushCount"]) for r in got["statsRecords"]] == [(ALICE, 1)]
        assert got["blueskyPosts"] == [] and [s["high"] for s in got["scanRecords"]] == [1]
        usage = await h.query("io.atcr.hold.getQuota", userDid=ALICE)
        assert usage.json()["totalSize"] > 0

        # Without a token: the lexicon's AuthRequired-family answer, nothing exported or deleted.
        anon = await h.client.post(f"{h.url}/xrpc/{NSID_DELETE}")
        assert anon.status_code == 401

        r = await h.call(NSID_DELETE, None, iss=ALICE)
        assert r.status_code == 200, r.text
        validate_xrpc_output(NSID_DELETE, r.json())
        assert r.json() == {"success": True, "crewDeleted": True, "layersDeleted": 1, "statsDeleted": 1,
                            "scansDeleted": 1, "postsDeleted": 0}

        # Each store, read directly: the repo's records and the Valkey usage index.
        layers = await h.records("io.atcr.hold.layer")
        assert [rec["value"]["userDid"] for rec in layers] == [BOB]
        stats = await h.records("io.atcr.hold.stats")
        assert [rec["value"]["ownerDid"] for rec in stats] == [BOB]
        assert await h.records("io.atcr.hold.scan") == []
        crew = [rec["value"]["member"] for rec in await h.records("io.atcr.hold.crew")]
        assert ALICE not in crew and BOB in crew
        assert (await h.query("io.atcr.hold.getQuota", userDid=ALICE)).json()["totalSize"] == 0
        assert (await h.query("io.atcr.hold.getQuota", userDid=BOB)).json()["totalSize"] > 0
        assert h.hold.services.valkey is not None
        index = h.ledger.quota.index
        assert index is not None
        assert await h.hold.services.valkey.exists(*index.keys(ALICE)) == 0

        after = await export(h, ALICE)
        assert after["layerRecords"] == [] and after["statsRecords"] == [] and "crewRecord" not in after
        bob = await export(h, BOB)
        assert len(bob["layerRecords"]) == 1 and len(bob["statsRecords"]) == 1 and bob["crewRecord"]

        # A second delete finds nothing; the captain keeps their crew entry.
        again = await h.call(NSID_DELETE, None, iss=ALICE)
        assert again.json() == {"success": True, "crewDeleted": False, "layersDeleted": 0, "statsDeleted": 0,
                            "scansDeleted": 0, "postsDeleted": 0}
        owner = await h.call(NSID_DELETE, None, iss=OWNER)
        assert owner.status_code == 200 and owner.json()["crewDeleted"] is False
        assert (await export(h, OWNER))["isCaptain"] is True
