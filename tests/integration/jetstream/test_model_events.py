"""`atcr.readmodel.events` on real Valkey: batch apply == one-by-one apply; accounts; identity."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from atcr.readmodel import apply_record, keys, read
from atcr.readmodel.events import RecordChange, account_marker, apply_account, apply_identity, apply_records
from tests.integration.jetstream.test_delivery import digest, tid
from tests.support.valkey_cluster import ON_SINGLE_AND_CLUSTER

pytestmark = [pytest.mark.integration, ON_SINGLE_AND_CLUSTER]


def changes_for(did: str, seed: int) -> list[RecordChange]:
    """Tags and manifests with duplicates, stale revs and deletes, in a shuffled order."""
    rng = random.Random(seed)
    out: list[RecordChange] = []
    for n in range(60):
        rev = tid(rng.randrange(1, 40))
        rkey = f"t{rng.randrange(8)}"
        if rng.random() < 0.2:
            out.append(RecordChange(did, keys.TAG, rkey, None, None, rev))
            continue
        d = digest(rng.randrange(5))
        record = {
            "repository": "app",
            "tag": rkey,
            "manifest": f"at://{did}/{keys.MANIFEST}/{keys.manifest_rkey(d)}",
            "createdAt": "2026-01-01T00:00:00Z",
        }
        out.append(RecordChange(did, keys.TAG, rkey, record, f"bafy{n}", rev))
        manifest = {
            "repository": "app",
            "digest": d,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "schemaVersion": 2,
            "createdAt": "2026-01-01T00:00:00Z",
        }
        out.append(RecordChange(did, keys.MANIFEST, keys.manifest_rkey(d), manifest, f"bafym{n}", rev))
    out += out[:10]  # duplicates
    return out


async def _state(valkey: Any, did: str) -> tuple[dict[str, str], list[str]]:
    tags, _ = await read.read_tags(valkey, did, "app")
    manifests, _ = await read.read_manifests(valkey, did, "app")
    return {t: e.digest for t, e in tags.items()}, sorted(m.digest for m in manifests)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_batch_apply_equals_one_by_one(valkey: Any, seed: int) -> None:
    x, y = "did:plc:" + "x" * 24, "did:plc:" + "y" * 24
    batch = changes_for(x, seed)
    results = await apply_records(valkey, batch)
    single = []
    for ch in changes_for(y, seed):
        single.append(await apply_record(valkey, ch.did, ch.collection, ch.rkey, ch.record, cid=ch.cid, rev=ch.rev))
    assert results == single
    assert await _state(valkey, x) == await _state(valkey, y)
    # Applying the whole batch again changes nothing.
    before = await _state(valkey, x)
    await apply_records(valkey, batch)
    assert await _state(valkey, x) == before


async def test_uncollected_collections_are_ignored(valkey: Any) -> None:
    did = "did:web:hold.example"
    out = await apply_records(
        valkey, [RecordChange(did, "io.atcr.hold.layer", "3abc", {"digest": "sha256:x"}, "bafy", "1")]
    )
    assert out == [False]


async def test_accounts_hide_purge_restore(valkey: Any) -> None:
    did = "did:plc:" + "h" * 24
    await apply_records(valkey, changes_for(did, 9))
    assert await valkey.zscore(keys.bucket(keys.CATALOG, f"{did}/app"), f"{did}/app") is not None
    assert await apply_account(valkey, did, False, "throttled") == "ignored"
    assert await apply_account(valkey, did, True, None) == "ignored"
    assert await apply_account(valkey, did, False, "takendown") == "hidden"
    assert await valkey.get(account_marker(did)) == b"takendown"
    assert await _state(valkey, did) == ({}, [])
    assert await valkey.zscore(keys.bucket(keys.CATALOG, f"{did}/app"), f"{did}/app") is None
    assert await valkey.zscore(keys.bucket(keys.RECENT, f"{did}/app"), f"{did}/app") is None
    assert await apply_account(valkey, did, True, None) == "restored"
    assert await valkey.get(account_marker(did)) is None
    assert await apply_account(valkey, did, False, "deleted") == "purged"
    # An account we never saw only gets the marker (no scan of the keyspace).
    stranger = "did:plc:" + "u" * 24
    assert await apply_account(valkey, stranger, False, None) == "hidden"
    assert await valkey.get(account_marker(stranger)) == b"deactivated"


async def test_identity_drops_did_and_handles(valkey: Any) -> None:
    did = "did:plc:" + "i" * 24
    entry = json.dumps({"did": did, "handle": "Old.test"})
    await valkey.set(keys.identity(did), entry)
    await valkey.set(keys.identity("old.test"), entry)
    await valkey.set(keys.negative_identity("new.test"), "1")
    await apply_identity(valkey, [(did, "new.test"), (did, "new.test")])
    assert await valkey.exists(keys.identity(did), keys.identity("old.test"), keys.negative_identity("new.test")) == 0
    await apply_identity(valkey, [])
