"""At-least-once delivery: duplicates, out-of-order revs and garbage leave the model right."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import pytest

from atcr.readmodel import keys, read
from tests.integration.jetstream.conftest import ConsumerFactory
from tests.integration.jetstream.helpers import eventually
from tests.support.jetstream_server import JetstreamServer

pytestmark = pytest.mark.integration

_TID = "234567abcdefghijklmnopqrstuvwxyz"


def tid(n: int) -> str:
    out = ""
    value = 1_700_000_000_000_000 * 1024 + n
    for _ in range(13):
        out = _TID[value & 31] + out
        value >>= 5
    return out


def digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def tag_event(did: str, repo: str, tag: str, n: int, rev: int, op: str = "create") -> dict[str, Any]:
    commit: dict[str, Any] = {"rev": tid(rev), "operation": op, "collection": keys.TAG, "rkey": f"{repo}-{tag}"}
    if op != "delete":
        commit["cid"] = f"bafyrei{n:020d}"
        commit["record"] = {
            "$type": keys.TAG,
            "repository": repo,
            "tag": tag,
            "manifest": f"at://{did}/{keys.MANIFEST}/{keys.manifest_rkey(digest(n))}",
            "createdAt": "2026-01-01T00:00:00Z",
        }
    return {"did": did, "kind": "commit", "commit": commit}


def manifest_event(did: str, repo: str, n: int, rev: int) -> dict[str, Any]:
    d = digest(n)
    return {
        "did": did,
        "kind": "commit",
        "commit": {
            "rev": tid(rev),
            "operation": "create",
            "collection": keys.MANIFEST,
            "rkey": keys.manifest_rkey(d),
            "cid": f"bafyreim{n:020d}",
            "record": {
                "$type": keys.MANIFEST,
                "repository": repo,
                "digest": d,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "schemaVersion": 2,
                "createdAt": "2026-01-01T00:00:00Z",
            },
        },
    }


async def test_duplicates_and_out_of_order_revs(
    make_consumer: ConsumerFactory, jetstream_server: JetstreamServer, valkey: Any
) -> None:
    did = "did:plc:" + "d" * 24
    consumer = await make_consumer(ATCR_BACKFILL_ENABLED="false")

    async def up() -> bool:
        return consumer.sources[0].status.connected

    await eventually(up)
    sequence = [
        tag_event(did, "app", "latest", 1, rev=10),
        tag_event(did, "app", "latest", 1, rev=10),  # duplicate
        tag_event(did, "app", "latest", 3, rev=30),  # newer update
        tag_event(did, "app", "latest", 2, rev=20),  # older update arriving late: ignored
        tag_event(did, "app", "old", 4, rev=40, op="delete"),  # delete before its create...
        tag_event(did, "app", "old", 4, rev=35),  # ...whose create is older: stays deleted
        tag_event(did, "app", "new", 5, rev=50),
        tag_event(did, "app", "new", 5, rev=50),
        manifest_event(did, "app", 3, rev=31),
        manifest_event(did, "app", 3, rev=31),
    ]
    for event in sequence:
        jetstream_server.inject(event)
    marker = jetstream_server.inject(tag_event(did, "app", "marker", 9, rev=90))

    async def done() -> bool:
        tags, _ = await read.read_tags(valkey, did, "app")
        return "marker" in tags

    await eventually(done)
    tags, _ = await read.read_tags(valkey, did, "app")
    assert {t: e.digest for t, e in tags.items()} == {"latest": digest(3), "new": digest(5), "marker": digest(9)}
    manifests, _ = await read.read_manifests(valkey, did, "app")
    assert [m.digest for m in manifests] == [digest(3)]
    assert await valkey.zscore(keys.bucket(keys.CATALOG, f"{did}/app"), f"{did}/app") is not None
    assert consumer.checkpoints["jetstream"].applied == marker

    # The same events again, shuffled (a rewind after a reconnect replays like this).
    shuffled = list(sequence)
    random.Random(7).shuffle(shuffled)
    for event in shuffled:
        jetstream_server.inject(event)
    marker2 = jetstream_server.inject(tag_event(did, "app", "marker", 9, rev=90))

    async def replayed() -> bool:
        return consumer.checkpoints["jetstream"].applied == marker2

    await eventually(replayed)
    again, _ = await read.read_tags(valkey, did, "app")
    assert {t: e.digest for t, e in again.items()} == {t: e.digest for t, e in tags.items()}
    assert await valkey.hlen(keys.tags(did, "app")) == 3
    assert await valkey.hlen(keys.manifests(did, "app")) == 1


async def test_malformed_events_are_skipped_not_fatal(
    make_consumer: ConsumerFactory, jetstream_server: JetstreamServer, valkey: Any
) -> None:
    did = "did:plc:" + "e" * 24
    consumer = await make_consumer(ATCR_BACKFILL_ENABLED="false")

    async def up() -> bool:
        return consumer.sources[0].status.connected

    await eventually(up)
    garbage = [
        "not json",
        json.dumps([1, 2, 3]),
        json.dumps({"did": "nope", "time_us": 1, "kind": "commit"}),
        json.dumps({"did": did, "time_us": 5, "kind": "commit", "commit": {"operation": "create"}}),
        json.dumps({"did": did, "time_us": 5, "kind": "account", "account": {}}),
    ]
    for text in garbage:
        jetstream_server.inject(text)
    # Well-formed JSON whose record the model cannot use (no repository): ignored, not fatal.
    bad = tag_event(did, "app", "x", 1, rev=1)
    del bad["commit"]["record"]["repository"]
    jetstream_server.inject(bad)
    jetstream_server.inject(tag_event(did, "app", "ok", 2, rev=2))

    async def arrived() -> bool:
        tags, _ = await read.read_tags(valkey, did, "app")
        return "ok" in tags

    await eventually(arrived)
    assert consumer.sources[0].status.malformed == len(garbage)
    assert consumer.sources[0].status.connected
