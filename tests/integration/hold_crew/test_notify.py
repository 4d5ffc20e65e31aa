"""`notifyManifest` push and pull, who may send them, and the stats queries."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from atcr.readmodel.keys import stats_rkey
from atcr.serviceauth import mint_service_token
from tests.integration.hold_crew.conftest import ALICE, APPVIEW, BOB, OWNER, CrewHold, MakeHold
from tests.support.didweb import serving_did_web

pytestmark = pytest.mark.integration

NOTIFY = "io.atcr.hold.notifyManifest"


async def stats(h: CrewHold, owner: str, repository: str) -> dict[str, Any]:
    r = await h.query("io.atcr.hold.getStats", ownerDid=owner, repository=repository)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_pulls_and_pushes_reach_the_stats_record(make_hold: MakeHold) -> None:
    async with make_hold(hold_allow_all_crew=True, hold_trusted_appviews=APPVIEW) as h:
        for count in (None, 1, 5):
            r = await h.notify_pull(OWNER, "tools/app", count, iss=APPVIEW)
            assert r.status_code == 200 and r.json() == {"success": True, "operation": "pull", "statsUpdated": True}
        assert (await h.push_blob(b"x", iss=ALICE)).status_code == 200
        assert (await h.notify_push("tools/app", [b"x"], iss=ALICE, user=ALICE)).status_code == 200
        r = await h.query("io.atcr.hold.getStats", ownerDid=OWNER, repository="tools/app")
        assert r.status_code == 404 and r.json()["error"] == "StatsNotFound"  # not flushed yet
        await h.flush()

        got = await h.record("io.atcr.hold.stats", stats_rkey(OWNER, "tools/app"))
        assert got.status_code == 200, got.text
        value = got.json()["value"]
        today = datetime.now(UTC).date().isoformat()
        assert value == {
            "$type": "io.atcr.hold.stats",
            "ownerDid": OWNER,
            "repository": "tools/app",
            "pullCount": 7,
            "pushCount": 0,
            "lastPull": value["lastPull"],
            "updatedAt": value["updatedAt"],
            "dailyPulls": [{"day": today, "count": 7}],
            "flushId": value["flushId"],
        }
        assert value == await stats(h, OWNER, "tools/app")
        pushed = await stats(h, ALICE, "tools/app")
        assert (pushed["pushCount"], pushed["pullCount"]) == (1, 0) and "lastPush" in pushed and "lastPull" not in pushed

        # Counts accumulate across flushes (unsigned ones too, now that the hold stores the
        # repository); an empty flush writes nothing.
        assert (await h.notify_pull(OWNER, "tools/app", 3)).json()["statsUpdated"] is True
        await h.flush()
        rev = (await h.query("com.atproto.sync.getLatestCommit", did=h.did)).json()["rev"]
        await h.flush()
        assert (await h.query("com.atproto.sync.getLatestCommit", did=h.did)).json()["rev"] == rev
        after = await stats(h, OWNER, "tools/app")
        assert after["pullCount"] == 10 and after["dailyPulls"] == [{"day": today, "count": 10}]

        # listStats: all, by owner, paged.
        for i in range(5):
            await h.notify_pull(BOB, f"r{i}", iss=APPVIEW)
        await h.flush()
        everything = (await h.query("io.atcr.hold.listStats")).json()
        assert len(everything["stats"]) == 7 and "cursor" not in everything
        bobs, cursor = [], None
        while True:
            params: dict[str, Any] = {"ownerDid": BOB, "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await h.query("io.atcr.hold.listStats", **params)).json()
            bobs += [s["repository"] for s in page["stats"]]
            cursor = page.get("cursor")
            if not cursor:
                break
        assert sorted(bobs) == [f"r{i}" for i in range(5)]


async def test_idempotency_key_counts_a_retried_notification_once(make_hold: MakeHold) -> None:
    async with make_hold(hold_trusted_appviews=APPVIEW) as h:
        first = await h.notify_pull(OWNER, "app", 4, iss=APPVIEW, **{"Idempotency-Key": "batch-1"})
        retry = await h.notify_pull(OWNER, "app", 4, iss=APPVIEW, **{"Idempotency-Key": "batch-1"})
        other = await h.notify_pull(OWNER, "app", 4, iss=APPVIEW, **{"Idempotency-Key": "batch-2"})
        assert [r.json()["statsUpdated"] for r in (first, retry, other)] == [True, False, True]
        await h.flush()
        assert (await stats(h, OWNER, "app"))["pullCount"] == 8


async def test_who_may_send_pull_notifications(make_hold: MakeHold) -> None:
    async with make_hold(hold_trust_pull_notifications=False, hold_trusted_appviews=APPVIEW) as h:
        r = await h.notify_pull(OWNER, "app")
        assert r.status_code == 401 and r.json()["error"] == "AuthRequired"
        r = await h.notify_pull(OWNER, "app", iss=ALICE)
        assert r.status_code == 403 and "trusted AppView" in r.json()["message"]
        r = await h.notify_pull(OWNER, "app", 2, iss=APPVIEW)
        assert r.status_code == 200, r.text
        r = await h.notify_pull(OWNER, "app", Authorization="Bearer not.a.jwt")
        assert r.status_code == 401 and r.json()["error"] == "BadJwt"
        await h.flush()
        assert (await stats(h, OWNER, "app"))["pullCount"] == 2
    async with make_hold(hold_trusted_appviews=APPVIEW) as h:  # trusting: any caller counts ...
        # ... but unsigned counts only for repositories the hold stores: not yet for this one.
        r = await h.notify_pull(OWNER, "app")
        assert r.status_code == 200 and r.json()["statsUpdated"] is False
        for iss in (APPVIEW, None, ALICE):  # the trusted AppView's count makes it known
            r = await h.notify_pull(OWNER, "app", iss=iss)
            assert r.status_code == 200 and r.json()["statsUpdated"] is True
        # ... even one whose token does not verify (it could have sent none at all).
        r = await h.notify_pull(OWNER, "app", Authorization="Bearer not.a.jwt")
        assert r.status_code == 200 and r.json()["statsUpdated"] is True
        await h.flush()
        assert (await stats(h, OWNER, "app"))["pullCount"] == 4


async def test_unsigned_pull_notifications_for_unknown_repositories_write_no_record(make_hold: MakeHold) -> None:
    """Default settings (HOLD_TRUST_PULL_NOTIFICATIONS=true): made-up names must not grow the repo."""
    async with make_hold(hold_allow_all_crew=True) as h:
        rev = (await h.query("com.atproto.sync.getLatestCommit", did=h.did)).json()["rev"]
        for i in range(300):
            r = await h.notify_pull(f"did:plc:{uuid.uuid4().hex[:24]}", f"junk/{i}-{uuid.uuid4().hex[:8]}")
            assert r.status_code == 200 and r.json() == {"success": True, "operation": "pull", "statsUpdated": False}
        await h.flush()
        assert await h.records("io.atcr.hold.stats") == []
        assert (await h.query("com.atproto.sync.getLatestCommit", did=h.did)).json()["rev"] == rev

        # A repository pushed through this hold is stored here: unsigned pulls of it count.
        assert (await h.push_blob(b"layer", iss=ALICE)).status_code == 200
        assert (await h.notify_push("tools/app", [b"layer"], iss=ALICE)).status_code == 200
        r = await h.notify_pull(ALICE, "tools/app", 2)
        assert r.status_code == 200 and r.json()["statsUpdated"] is True
        await h.flush()
        counted = [(x["value"]["repository"], x["value"]["pullCount"]) for x in await h.records("io.atcr.hold.stats")]
        assert counted == [("tools/app", 2)]
        r = await h.notify_pull(ALICE, "tools/other")  # the same owner, another (unknown) repository
        assert r.json()["statsUpdated"] is False


async def test_push_naming_layers_not_in_storage_is_refused(make_hold: MakeHold) -> None:
    async with make_hold(hold_allow_all_crew=True) as h:
        fake = [("sha256:" + hashlib.sha256(f"fake-{i}".encode()).hexdigest(), 2**40) for i in range(150)]
        r = await h.notify_push("app", fake, iss=ALICE)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "LayerNotStored" and "150 layer(s)" in r.json()["message"]
        # One real layer among fakes changes nothing: the push is refused as a whole.
        assert (await h.push_blob(b"real", iss=ALICE)).status_code == 200
        r = await h.notify_push("app", [b"real", fake[0]], iss=ALICE)
        assert r.status_code == 400 and r.json()["error"] == "LayerNotStored" and fake[0][0] in r.json()["message"]
        assert await h.records("io.atcr.hold.layer") == []
        usage = (await h.query("io.atcr.hold.getQuota", userDid=ALICE)).json()
        assert (usage["totalSize"], usage["uniqueBlobs"]) == (0, 0), usage  # no usage from layers never stored
        # A non-distributable layer (fetched from its urls, never pushed) is left out, not refused.
        foreign = {
            "digest": fake[1][0], "size": 10, "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        body = {
            "repository": "app", "userDid": ALICE, "manifestDigest": "sha256:" + "d" * 64, "operation": "push",
            "manifest": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": [
                {"digest": "sha256:" + hashlib.sha256(b"real").hexdigest(), "size": 4,
                 "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"},
                foreign,
            ]},
        }
        r = await h.call(NOTIFY, body, iss=ALICE)
        assert r.status_code == 200 and r.json()["layersCreated"] == 1, r.text
        recorded = [x["value"]["digest"] for x in await h.records("io.atcr.hold.layer")]
        assert recorded == ["sha256:" + hashlib.sha256(b"real").hexdigest()]


async def test_deeply_nested_json_is_a_400(make_hold: MakeHold) -> None:
    async with make_hold() as h:
        for body in (b"[" * 5000 + b"]" * 5000, b'{"repository": ' + b"[" * 1000 + b"]" * 1000 + b"}"):
            headers = {"Content-Type": "application/json"}
            r = await h.client.post(f"{h.url}/xrpc/{NOTIFY}", content=body, headers=headers)
            assert r.status_code == 400 and r.json()["error"] == "InvalidRequest", r.text
            assert "nested deeper" in r.json()["message"]


async def test_push_rules(make_hold: MakeHold) -> None:
    async with make_hold(hold_allow_all_crew=False) as h:
        r = await h.notify_push("app", [b"x"], iss=ALICE, user=BOB)
        assert r.status_code == 403 and r.json()["error"] == "UserMismatch"
        r = await h.notify_push("app", [b"x"], iss=ALICE)
        assert r.status_code == 403 and r.json()["error"] == "Forbidden"  # not crew
        r = await h.call(NOTIFY, {"repository": "app", "userDid": ALICE, "manifestDigest": "x", "operation": "push"},
                         iss=None)
        assert r.status_code == 401
        base = {"repository": "app", "userDid": OWNER, "manifestDigest": "sha256:" + "a" * 64}
        r = await h.call(NOTIFY, {**base, "operation": "delete"}, iss=OWNER)
        assert r.status_code == 400 and r.json()["error"] == "InvalidOperation"
        r = await h.call(NOTIFY, {**base, "operation": "pull", "count": 0})
        assert r.status_code == 400 and "count" in r.json()["message"]
        r = await h.call(NOTIFY, {**base, "operation": "pull", "userDid": "alice"})
        assert r.status_code == 400 and "userDid" in r.json()["message"]
        r = await h.call(NOTIFY, {**base, "operation": "push", "manifestDigest": "nope"}, iss=OWNER)
        assert r.status_code == 400 and r.json()["error"] == "InvalidDigest"
        # An index (children, no layers) counts a push and writes no layer records.
        body = {**base, "operation": "push", "manifest": {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"digest": "sha256:" + "b" * 64, "size": 10, "platform": {"os": "linux", "architecture": "arm64"}}],
        }}
        r = await h.call(NOTIFY, body, iss=OWNER)
        assert r.status_code == 200 and r.json()["layersCreated"] == 0
        await h.flush()
        assert (await stats(h, OWNER, "app"))["pushCount"] == 1


async def test_stats_without_valkey_say_why(tmp_path: Any) -> None:
    from litestar.testing import AsyncTestClient

    from atcr.settings import load
    from hold.app import create_app
    from hold.settings import HoldSettings

    settings = load(HoldSettings, {"HOLD_DATA_DIR": str(tmp_path / "d"), "STORAGE_ROOT_DIR": str(tmp_path / "b")})
    async with AsyncTestClient(create_app(settings)) as client:
        body = {"repository": "app", "userDid": OWNER, "manifestDigest": "sha256:" + "a" * 64, "operation": "pull"}
        r = await client.post(f"/xrpc/{NOTIFY}", json=body)
        assert r.status_code == 503 and r.json()["error"] == "StatsUnavailable"
        r = await client.get("/xrpc/io.atcr.hold.getQuota", params={"userDid": OWNER})
        assert r.status_code == 503 and r.json()["error"] == "QuotaUnavailable"
        assert (await client.get("/xrpc/io.atcr.hold.listTiers")).json() == {"tiers": []}


# --- the AppView's own did:web, resolved for real ----------------------------------------------


@pytest.fixture
def appview_did_web() -> Iterator[tuple[str, ec.EllipticCurvePrivateKey]]:
    """An AppView identity served at http://localhost:<port>/.well-known/did.json."""
    with serving_did_web() as served:
        yield served


async def test_pull_counts_signed_by_the_appview_did_web(
    make_hold: MakeHold, appview_did_web: tuple[str, ec.EllipticCurvePrivateKey]
) -> None:
    did, key = appview_did_web
    env = {"hold_trust_pull_notifications": False, "hold_trusted_appviews": did}
    async with make_hold(resolve_dids=True, **env) as h:
        def token(k: ec.EllipticCurvePrivateKey = key) -> dict[str, str]:
            return {"Authorization": "Bearer " + mint_service_token(k, iss=did, aud=h.did, lxm=NOTIFY)}

        for _ in range(3):
            r = await h.notify_pull(OWNER, "app", 10, **token())
            assert r.status_code == 200, r.text
        forged = await h.notify_pull(OWNER, "app", 10, **token(ec.generate_private_key(ec.SECP256R1())))
        assert forged.status_code == 401 and forged.json()["error"] == "BadJwtSignature"
        await h.flush()
        assert (await stats(h, OWNER, "app"))["pullCount"] == 30
