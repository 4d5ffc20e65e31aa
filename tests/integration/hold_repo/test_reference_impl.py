"""The reference implementation (@atproto/repo) accepts what the hold serves, byte for byte."""

from __future__ import annotations

import asyncio
import base64
import random
from typing import Any

import pytest

from atcr.dagcbor import Cid
from hold.repo import Create, Delete, Put, Update, ensure_bootstrapped
from tests.integration.hold_repo.conftest import Hold, Oracle
from tests.unit.hold_repo.support import CREW, HOLD_DID, LAYER, OWNER_DID, layer_record, make_signer
from tests.unit.hold_repo.test_mst import POOL

pytestmark = pytest.mark.integration

PROFILE = "app.bsky.actor.profile"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def _populate(hold: Hold) -> None:
    """Bootstrap plus enough churn for a tree several layers deep, and every data-model type."""
    repo = hold.repo
    await ensure_bootstrapped(repo, OWNER_DID, public=True, allow_all_crew=True)
    for batch in range(4):
        await repo.apply_writes([Create(LAYER, None, layer_record(batch * 50 + i)) for i in range(50)])
    page = await repo.list_records(LAYER, limit=100, reverse=True)
    rkeys = [r.rkey for r in page.records]
    await repo.apply_writes([Update(LAYER, k, layer_record(1000 + i)) for i, k in enumerate(rkeys[:20])])
    await repo.apply_writes([Delete(LAYER, k) for k in rkeys[20:45]])
    blob_cid = str(Cid.for_block(b"avatar", codec=0x55))
    await repo.apply_writes(
        [
            Put(
                PROFILE,
                "self",
                {
                    "displayName": "Hold ⚓ ünïcode",
                    "avatar": {"$type": "blob", "ref": {"$link": blob_cid}, "mimeType": "image/png", "size": 6},
                    "pinned": {"$link": str(Cid.for_block(b"x"))},
                    "raw": {"$bytes": b64(bytes((1, 0x71, 0x12, 0x20)) + bytes(60)).rstrip("=")},
                    "n": -(2**53) + 1,
                    "nested": [{"a": [], "b": {}}, None, True],
                },
            )
        ]
    )


async def _all_records(hold: Hold) -> list[dict[str, Any]]:
    """Every record as the hold's own XRPC lists it."""
    out = []
    collections = (await hold.xrpc("com.atproto.repo.describeRepo", repo=HOLD_DID)).json()["collections"]
    for collection in collections:
        cursor = None
        while True:
            params: dict[str, Any] = {"repo": HOLD_DID, "collection": collection, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            body = (await hold.xrpc("com.atproto.repo.listRecords", **params)).json()
            for rec in body["records"]:
                rkey = rec["uri"].rsplit("/", 1)[1]
                out.append({"collection": collection, "rkey": rkey, "cid": rec["cid"], "value": rec["value"]})
            cursor = body.get("cursor")
            if not cursor:
                break
    return sorted(out, key=lambda r: (r["collection"], r["rkey"]))


async def test_get_repo_car_verifies_and_lists_the_same_records(hold: Hold, oracle: Oracle) -> None:
    await _populate(hold)
    resp = await hold.xrpc("com.atproto.sync.getRepo", did=HOLD_DID)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/vnd.ipld.car"
    result = await oracle.acall("verifyRepo", car=b64(resp.content), did=HOLD_DID, didKey=hold.signer.did_key)
    head = (await hold.xrpc("com.atproto.sync.getLatestCommit", did=HOLD_DID)).json()
    assert result["commit"] == head
    assert result["did"] == HOLD_DID and result["version"] == 3
    ours = await _all_records(hold)
    theirs = sorted(result["records"], key=lambda r: (r["collection"], r["rkey"]))
    assert len(ours) == 1 + 1 + 200 - 25 + 1
    assert theirs == ours
    assert sorted((c["collection"], c["rkey"], c["cid"]) for c in result["creates"]) == [
        (r["collection"], r["rkey"], r["cid"]) for r in ours
    ]


async def test_wrong_key_or_tampering_is_caught(hold: Hold, oracle: Oracle) -> None:
    await hold.repo.apply_writes([Create(LAYER, "a", layer_record(1))])
    car = (await hold.xrpc("com.atproto.sync.getRepo", did=HOLD_DID)).content
    other = make_signer().did_key
    answer = await oracle_try(oracle, "verifyRepo", car=b64(car), did=HOLD_DID, didKey=other)
    assert not answer["ok"] and "Invalid signature" in answer["error"]
    answer = await oracle_try(
        oracle, "verifyRepo", car=b64(car), did="did:web:someone.else", didKey=hold.signer.did_key
    )
    assert not answer["ok"] and "Invalid repo did" in answer["error"]
    tampered = car.replace(b"sha256:", b"sha257:", 1)
    assert tampered != car
    answer = await oracle_try(oracle, "verifyRepo", car=b64(tampered), did=HOLD_DID, didKey=hold.signer.did_key)
    assert not answer["ok"]


async def oracle_try(oracle: Oracle, op: str, **request: Any) -> dict[str, Any]:
    return await asyncio.to_thread(oracle.try_call, op, **request)


async def test_sync_get_record_proofs_verify(hold: Hold, oracle: Oracle) -> None:
    await _populate(hold)
    captain = (
        await hold.xrpc("com.atproto.repo.getRecord", repo=HOLD_DID, collection="io.atcr.hold.captain", rkey="self")
    ).json()
    for rkey, cid in (("self", captain["cid"]), ("missing", None)):
        car = (
            await hold.xrpc("com.atproto.sync.getRecord", did=HOLD_DID, collection="io.atcr.hold.captain", rkey=rkey)
        ).content
        claims = [{"collection": "io.atcr.hold.captain", "rkey": rkey, "cid": cid}]
        result = await oracle.acall(
            "verifyProofs", car=b64(car), did=HOLD_DID, didKey=hold.signer.did_key, claims=claims
        )
        assert result == {"verified": claims, "unverified": []}
        records = (await oracle.acall("verifyRecords", car=b64(car), did=HOLD_DID, didKey=hold.signer.did_key))[
            "records"
        ]
        assert records == (
            [{"collection": "io.atcr.hold.captain", "rkey": "self", "value": captain["value"]}] if cid else []
        )
    # A claim the proof contradicts is reported as unverified.
    car = (await hold.xrpc("com.atproto.sync.getRecord", did=HOLD_DID, collection=CREW, rkey="nobody")).content
    claims = [{"collection": CREW, "rkey": "nobody", "cid": captain["cid"]}]
    result = await oracle.acall("verifyProofs", car=b64(car), did=HOLD_DID, didKey=hold.signer.did_key, claims=claims)
    assert result["unverified"] == claims


async def test_firehose_commits_verify_as_diffs_and_proofs(hold: Hold, oracle: Oracle) -> None:
    """Each #commit's blocks, applied to the previous repo, give exactly the announced ops
    (`verifyDiffCar`), and authenticate every op the way @atproto/sync's firehose does."""
    from atproto_firehose import parse_subscribe_repos_message
    from atproto_subscription.frames import Frame

    repo = hold.repo
    await repo.apply_writes([Create(LAYER, f"r{i:03d}", layer_record(i)) for i in range(120)])
    rng = random.Random(7)
    present = {f"r{i:03d}" for i in range(120)}
    for step in range(12):
        before = await repo.export_car()
        writes: list[Any] = []
        for key in rng.sample(sorted(present), 4):
            if rng.random() < 0.5:
                writes.append(Delete(LAYER, key))
                present.discard(key)
            else:
                writes.append(Update(LAYER, key, layer_record(5000 + step * 10 + len(writes))))
        fresh = f"n{step:03d}"
        writes.append(Create(LAYER, fresh, layer_record(9000 + step)))
        present.add(fresh)
        info = await repo.apply_writes(writes)
        ((_, frame),) = await repo.events_after(info.seq - 1)
        event = parse_subscribe_repos_message(Frame.from_bytes(frame))
        blocks = b64(event.blocks)
        diff = await oracle.acall(
            "verifyDiff", prevCar=b64(before), car=blocks, did=HOLD_DID, didKey=hold.signer.did_key
        )
        assert diff["rev"] == info.rev
        got = sorted((w["action"], w["collection"], w["rkey"]) for w in diff["writes"])
        assert got == sorted((op.action, op.collection, op.rkey) for op in info.ops)
        claims = [{"collection": op.collection, "rkey": op.rkey, "cid": op.cid} for op in info.ops]
        proofs = await oracle.acall("verifyProofs", car=blocks, did=HOLD_DID, didKey=hold.signer.did_key, claims=claims)
        assert proofs["unverified"] == [] and len(proofs["verified"]) == len(claims)
        sig = await oracle.acall("verifySig", commitCar=blocks, didKey=hold.signer.did_key)
        assert sig == {"valid": True}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_mst_roots_match_the_reference_step_by_step(oracle: Oracle, seed: int) -> None:
    """The same random puts and deletes give the same root CID after every step."""
    from hold.repo.mst import MST, NodeStore

    rng = random.Random(seed)
    no_blocks: dict[Cid, bytes] = {}
    mst = MST.empty(NodeStore(no_blocks.get))
    present: set[str] = set()
    steps: list[list[str]] = []
    ours: list[str] = []
    for i in range(250):
        if present and rng.random() < 0.3:
            key = rng.choice(sorted(present))
            present.discard(key)
            mst = mst.delete(key)
            steps.append(["del", key])
        else:
            key = rng.choice(POOL)
            value = Cid.for_block(f"{key}:{i}".encode())
            present.add(key)
            mst = mst.put(key, value)
            steps.append(["put", key, str(value)])
        ours.append(str(mst.finalize()[0]))
    theirs = (await oracle.acall("mst", steps=steps))["roots"]
    assert theirs == ours
