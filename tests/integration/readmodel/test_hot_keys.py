"""The global indexes (catalog, recent, popular, search) are split into buckets with their own
hash tags, so a cluster spreads them over its shards; readers merge the buckets exactly."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from atcr.readmodel import apply_record, keys, read
from atcr.readmodel.apply import migrate_legacy_indexes
from atcr.readmodel.search import search
from atcr.valkey import is_cluster
from tests.support.valkey_cluster import ON_SINGLE_AND_CLUSTER

pytestmark = [pytest.mark.integration, ON_SINGLE_AND_CLUSTER]


def did(i: int) -> str:
    return f"did:plc:{i:024d}"


def manifest(repo: str, digest: str, minute: int) -> dict[str, Any]:
    return {
        "repository": repo,
        "digest": digest,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "schemaVersion": 2,
        "createdAt": f"2026-01-01T{minute // 60:02d}:{minute % 60:02d}:00Z",
        "holdDid": "did:web:hold.example",
        "manifestBlob": {"$type": "blob", "ref": {"$link": "bafkrei" + digest[7:20]}, "mimeType": "x", "size": 10},
    }


async def push(valkey: Any, i: int, repo: str) -> str:
    digest = "sha256:" + hashlib.sha256(f"{i}/{repo}".encode()).hexdigest()
    await apply_record(valkey, did(i), keys.MANIFEST, digest[7:], manifest(repo, digest, i), cid=f"c{i}", rev=None)
    return f"{did(i)}/{repo}"


async def test_feeds_spread_over_buckets_and_merge_exactly(valkey: Any) -> None:
    pushed = [await push(valkey, i, f"app{i % 7}") for i in range(60)]
    used = [k for k in keys.buckets(keys.RECENT) if await valkey.zcard(k)]
    assert len(used) >= keys.GLOBAL_BUCKETS - 2  # 60 members over 16 buckets
    if is_cluster(valkey):
        nodes = {valkey.get_node_from_key(k).name for k in used}
        assert len(nodes) == 3  # every primary holds part of the feed
    assert await read.read_top(valkey, keys.RECENT, 10) == pushed[::-1][:10]  # newest first, across buckets
    # The catalog pages through every bucket in byte order, without gaps or repeats.
    seen: list[str] = []
    start = b"-"
    while page := await read.read_catalog(valkey, start, 7):
        seen += page
        start = b"(" + page[-1].encode()
    assert seen == sorted(pushed)


async def test_search_tokens_are_split_by_first_character(valkey: Any) -> None:
    for i, repo in enumerate(["alpha-tools", "beta-server", "alphabet"]):
        await push(valkey, i, repo)
    assert keys.search_terms("alpha") != keys.search_terms("beta")
    assert await valkey.zcard(keys.search_terms("alpha")) >= 2
    found = await search(valkey, "alph")
    assert found.repositories == sorted([f"{did(0)}/alpha-tools", f"{did(2)}/alphabet"])
    assert (await search(valkey, "beta server")).repositories == [f"{did(1)}/beta-server"]


async def test_indexes_written_before_the_split_are_moved_into_buckets(valkey: Any) -> None:
    members = [f"{did(i)}/old{i}" for i in range(30)]
    await valkey.zadd(keys.RECENT, {m: 1000 + i for i, m in enumerate(members)})
    await valkey.zadd(keys.CATALOG, dict.fromkeys(members, 0))
    await valkey.zadd(keys.POPULAR_STARS, {members[3]: 9, members[4]: 2})
    await valkey.zadd(keys.SEARCH_TERMS, {b"old3\x00" + members[3].encode(): 0})
    assert await migrate_legacy_indexes(valkey, chunk=7) == 30 + 30 + 2 + 1
    assert await valkey.exists(keys.RECENT, keys.CATALOG, keys.POPULAR_STARS, keys.SEARCH_TERMS) == 0
    assert await read.read_top(valkey, keys.RECENT, 3) == members[::-1][:3]
    assert await read.read_catalog(valkey, b"-", 100) == sorted(members)
    assert await read.read_top(valkey, keys.POPULAR_STARS, 5) == [members[3], members[4]]
    assert (await search(valkey, "old3")).repositories == [members[3]]
    assert await migrate_legacy_indexes(valkey) == 0  # done: nothing left to move
