"""Apply-functions on real Valkey: ordering by rev, tombstones, idempotency, listings vs writes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atcr.errors import DigestMismatch
from atcr.readmodel import apply_record, apply_snapshot, keys, read, store_manifest_bytes
from atcr.readmodel.search import search
from atcr.valkey import connect
from tests.support.valkey_cluster import ON_SINGLE_AND_CLUSTER

pytestmark = pytest.mark.integration

DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
OTHER = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"


def digest_of(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def tag(repo: str, name: str, digest: str, when: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"repository": repo, "tag": name, "manifest": f"at://{DID}/io.atcr.manifest/{digest[7:]}", "createdAt": when}


def manifest(repo: str, digest: str, **extra: Any) -> dict[str, Any]:
    return {
        "repository": repo,
        "digest": digest,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "schemaVersion": 2,
        "createdAt": "2026-01-01T00:00:00Z",
        "holdDid": "did:web:hold.example",
        "manifestBlob": {"$type": "blob", "ref": {"$link": "bafkrei" + digest[7:20]}, "mimeType": "x", "size": 10},
        **extra,
    }


async def server_ms(v: Any) -> int:
    sec, usec = await v.time()
    return int(sec) * 1000 + int(usec) // 1000


@ON_SINGLE_AND_CLUSTER
async def test_older_rev_is_ignored_and_duplicates_are_noops(valkey: Any) -> None:
    a, b = digest_of("a"), digest_of("b")
    assert await apply_record(valkey, DID, keys.TAG, "r1", tag("app", "latest", b), cid="c2", rev="3l0000000000b")
    assert not await apply_record(valkey, DID, keys.TAG, "r1", tag("app", "latest", a), cid="c1", rev="3l0000000000a")
    assert await apply_record(valkey, DID, keys.TAG, "r1", tag("app", "latest", b), cid="c2", rev="3l0000000000b")
    tags, _ = await read.read_tags(valkey, DID, "app")
    assert {t: e.digest for t, e in tags.items()} == {"latest": b}


@ON_SINGLE_AND_CLUSTER
async def test_delete_leaves_a_tombstone_that_stops_late_creates(valkey: Any) -> None:
    d = digest_of("x")
    await apply_record(valkey, DID, keys.TAG, "r1", tag("app", "v1", d), cid="c1", rev="3l0000000000a")
    assert await apply_record(valkey, DID, keys.TAG, "r1", None, cid=None, rev="3l0000000000c")
    assert not await apply_record(valkey, DID, keys.TAG, "r1", tag("app", "v1", d), cid="c1", rev="3l0000000000b")
    assert (await read.read_tags(valkey, DID, "app"))[0] == {}
    # The repository disappears with its last tag and manifest, from every index.
    assert await read.read_repositories(valkey, DID) == ([], None)
    assert await read.read_catalog(valkey, b"-", 100) == []
    assert await apply_record(valkey, DID, keys.TAG, "r1", tag("app", "v1", d), cid="c9", rev="3l0000000000d")
    assert list((await read.read_tags(valkey, DID, "app"))[0]) == ["v1"]


@ON_SINGLE_AND_CLUSTER
async def test_listing_floor_ignores_replays_older_than_the_listing(valkey: Any) -> None:
    d = digest_of("y")
    await apply_snapshot(
        valkey, DID, keys.TAG, [], rev="3l0000000000m", started_ms=await server_ms(valkey), complete=True
    )
    # A replayed create from before the listing: the listing already showed it is gone.
    assert not await apply_record(valkey, DID, keys.TAG, "r1", tag("app", "v1", d), cid="c", rev="3l0000000000k")
    assert await apply_record(valkey, DID, keys.TAG, "r1", tag("app", "v1", d), cid="c", rev="3l0000000000n")


@ON_SINGLE_AND_CLUSTER
async def test_listing_never_clobbers_a_write_made_after_it_started(valkey: Any) -> None:
    d_old, d_new = digest_of("old"), digest_of("new")
    await apply_record(valkey, DID, keys.TAG, "r1", tag("app", "v1", d_old), cid="c1", rev=None)
    started = await server_ms(valkey)
    await asyncio.sleep(0.01)
    # The AppView's own push lands while the listing is in flight (no rev known).
    await apply_record(valkey, DID, keys.TAG, "r2", tag("app", "v2", d_new), cid="c2", rev=None)
    # The listing (started before the push) shows only r1, with an older state.
    changed = await apply_snapshot(
        valkey, DID, keys.TAG, [("r1", tag("app", "v1", d_old), "c1")], rev=None, started_ms=started, complete=True
    )
    tags, at = await read.read_tags(valkey, DID, "app")
    assert {t: e.digest for t, e in tags.items()} == {"v1": d_old, "v2": d_new}
    assert at == started and changed == 0


@ON_SINGLE_AND_CLUSTER
async def test_tags_from_any_writer_resolve_alike(valkey: Any) -> None:
    d1, d2, d3 = digest_of("1"), digest_of("2"), digest_of("3")
    await apply_record(valkey, DID, keys.MANIFEST, "3kmanifest0002", manifest("app", d3), cid="m3", rev="3l00000000001")
    await apply_record(
        valkey, DID, keys.TAG, keys.tag_rkey("app", "a"), tag("app", "a", d1), cid="1", rev="3l00000000002"
    )
    legacy = {"repository": "app", "tag": "b", "manifestDigest": d2, "createdAt": "2025-01-01T00:00:00Z"}
    await apply_record(valkey, DID, keys.TAG, "anything-goes", legacy, cid="2", rev="3l00000000003")
    by_tid = {
        "repository": "app",
        "tag": "c",
        "manifest": f"at://{DID}/io.atcr.manifest/3kmanifest0002",
        "createdAt": "x",
    }
    await apply_record(valkey, DID, keys.TAG, "3ktag00000002", by_tid, cid="3", rev="3l00000000004")
    # Two records for one tag (two AppViews): the most recently updated wins.
    newer = tag("app", "a", d2, when="2026-06-01T00:00:00Z")
    await apply_record(valkey, DID, keys.TAG, "other-rkey", newer, cid="4", rev="3l00000000005")
    tags, _ = await read.read_tags(valkey, DID, "app")
    assert {t: e.digest for t, e in tags.items()} == {"a": d2, "b": d2, "c": d3}


@ON_SINGLE_AND_CLUSTER
async def test_manifest_indexes_referrers_and_bytes(valkey: Any) -> None:
    raw = b'{"schemaVersion":2}'
    d = "sha256:" + hashlib.sha256(raw).hexdigest()
    sig = digest_of("sig")
    await apply_record(
        valkey, DID, keys.MANIFEST, d[7:], manifest("app", d), cid="m", rev="3l00000000001", raw_manifest=raw
    )
    ref = manifest("app", sig, subject={"mediaType": "x", "digest": d, "size": 19}, artifactType="application/x-sig")
    await apply_record(valkey, DID, keys.MANIFEST, sig[7:], ref, cid="s", rev="3l00000000002")
    entry, _, applied = await read.read_manifest(valkey, DID, "app", d)
    assert entry is not None and entry.raw == raw and entry.size == len(raw) and applied
    found = await read.read_referrers(valkey, DID, "app", d)
    assert [(e.digest, e.artifact_type) for e in found] == [(sig, "application/x-sig")]
    await apply_record(valkey, DID, keys.MANIFEST, sig[7:], None, cid=None, rev="3l00000000003")
    assert await read.read_referrers(valkey, DID, "app", d) == []
    with pytest.raises(DigestMismatch):
        await store_manifest_bytes(valkey, DID, d, raw + b" ")
    assert (await read.read_manifest(valkey, DID, "app", d))[0].raw == raw  # type: ignore[union-attr]


@ON_SINGLE_AND_CLUSTER
async def test_stars_counted_per_repository_and_listed_per_user(valkey: Any) -> None:
    subject = f"at://{DID}/io.atcr.repo.page/app"
    await apply_record(valkey, OTHER, keys.STAR, "s1", {"subject": subject, "createdAt": "x"}, cid="a", rev="3l1")
    legacy = {"subject": {"did": DID, "repository": "app"}, "createdAt": "x"}
    await apply_record(valkey, OTHER, keys.STAR, "s2", legacy, cid="b", rev="3l2")  # same starrer, twice
    await apply_record(valkey, DID, keys.STAR, "s1", {"subject": subject, "createdAt": "x"}, cid="c", rev="3l3")
    assert await valkey.scard(keys.stars(DID, "app")) == 2
    await apply_record(valkey, OTHER, keys.STAR, "s1", None, cid=None, rev="3l4")
    assert await valkey.scard(keys.stars(DID, "app")) == 2  # OTHER still stars it through s2
    await apply_record(valkey, OTHER, keys.STAR, "s2", None, cid=None, rev="3l5")
    assert await valkey.scard(keys.stars(DID, "app")) == 1
    assert await valkey.zscore(keys.bucket(keys.POPULAR_STARS, f"{DID}/app"), f"{DID}/app") == 1
    assert (await read.read_starred(valkey, DID))[0] == [f"{DID}/app"]


@ON_SINGLE_AND_CLUSTER
async def test_stats_are_summed_across_holds(valkey: Any) -> None:
    for i, hold in enumerate(("did:web:h1.example", "did:web:h2.example")):
        rec = {"ownerDid": DID, "repository": "app", "pullCount": 5 + i, "pushCount": 1, "updatedAt": "x"}
        await apply_record(valkey, hold, keys.STATS, keys.stats_rkey(DID, "app"), rec, cid=f"c{i}", rev="3l1")
    stats, _ = await read.read_stats(valkey, DID, "app")
    assert (stats.pull_count, stats.push_count, len(stats.holds)) == (11, 2, 2)
    assert await valkey.zscore(keys.bucket(keys.POPULAR_PULLS, f"{DID}/app"), f"{DID}/app") == 11


@ON_SINGLE_AND_CLUSTER
async def test_crew_and_pages_and_search(valkey: Any) -> None:
    hold = "did:web:hold.example"
    crew = {"member": DID, "role": "write", "permissions": ["blob:write"], "addedAt": "x"}
    await apply_record(valkey, hold, keys.CREW, "c1", crew, cid="a", rev="3l1")
    assert (await read.read_crew_member(valkey, hold, DID))[0].role == "write"  # type: ignore[union-attr]
    await apply_record(valkey, hold, keys.CREW, "c1", None, cid=None, rev="3l2")
    assert (await read.read_crew_member(valkey, hold, DID))[0] is None

    await apply_record(valkey, DID, keys.TAG, "t", tag("web-server", "v1", digest_of("w")), cid="t", rev="3l1")
    page = {"repository": "web-server", "description": "Fast static files", "createdAt": "x"}
    await apply_record(valkey, DID, keys.REPO_PAGE, "web-server", page, cid="p", rev="3l2")
    assert (await search(valkey, "stat")).repositories == [f"{DID}/web-server"]
    assert (await search(valkey, "web fast")).repositories == [f"{DID}/web-server"]
    page["description"] = "Something else"
    await apply_record(valkey, DID, keys.REPO_PAGE, "web-server", page, cid="p2", rev="3l3")
    assert (await search(valkey, "fast")).repositories == []
    assert (await search(valkey, "server")).repositories == [f"{DID}/web-server"]


Event = tuple[int, str | None]  # (rev number, digest seed or None for delete)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    events=st.lists(
        st.tuples(st.integers(1, 500), st.one_of(st.none(), st.sampled_from("abc"))),
        min_size=1,
        max_size=8,
        unique_by=lambda e: e[0],
    ),
    order=st.randoms(use_true_random=False),
)
def test_any_delivery_order_converges_to_the_newest_rev(valkey_url: str, events: list[Event], order: Any) -> None:
    """At-least-once, out-of-order delivery (with duplicates) ends where the newest event says."""

    async def run() -> None:
        v = connect(valkey_url)
        try:
            await v.flushdb()
            deliveries = events + events[: len(events) // 2]
            order.shuffle(deliveries)
            for rev_no, seed in deliveries:
                rec = tag("app", "t", digest_of(seed)) if seed else None
                await apply_record(v, DID, keys.TAG, "r", rec, cid=f"c{seed}" if seed else None, rev=f"3l{rev_no:011d}")
            newest = max(events)[1]
            tags, _ = await read.read_tags(v, DID, "app")
            assert {t: e.digest for t, e in tags.items()} == ({"t": digest_of(newest)} if newest else {})
            entry = json.loads(await v.hget(keys.records(DID, keys.TAG), "r"))
            assert entry["r"] == f"3l{max(events)[0]:011d}"
        finally:
            await v.flushdb()
            await v.aclose()

    asyncio.run(run())


@ON_SINGLE_AND_CLUSTER
async def test_one_digest_in_several_repositories_and_records(valkey: Any) -> None:
    """docs/records.md: each (repository, digest) has its own record; several records of one
    pair (other AppViews' rkeys) keep it until the last goes; a record rewritten for another
    repository (the old scheme) moves it."""
    d = digest_of("shared")
    hexkey, second = keys.manifest_rkey(d), keys.repo_manifest_rkey("second", d)
    assert await apply_record(valkey, DID, keys.MANIFEST, hexkey, manifest("first", d), cid="c1", rev="3l0000000000a")
    assert await apply_record(valkey, DID, keys.MANIFEST, second, manifest("second", d), cid="c2", rev="3l0000000000b")

    async def held(repo: str) -> set[str]:
        entries, _ = await read.read_manifests(valkey, DID, repo)
        return {e.digest for e in entries}

    assert await held("first") == {d} and await held("second") == {d}
    # Another writer's record for (first, d) under a TID: deleting ours keeps `first` holding d.
    assert await apply_record(valkey, DID, keys.MANIFEST, "3kabcdefghij2", manifest("first", d), cid="c3",
                              rev="3l0000000000c")
    assert await read.read_manifest_rkeys(valkey, DID, "first", d) == sorted([hexkey, "3kabcdefghij2"])
    assert await apply_record(valkey, DID, keys.MANIFEST, hexkey, None, cid=None, rev="3l0000000000d")
    assert await held("first") == {d} and await held("second") == {d}
    assert await apply_record(valkey, DID, keys.MANIFEST, "3kabcdefghij2", None, cid=None, rev="3l0000000000e")
    assert await held("first") == set() and await held("second") == {d}
    # The old scheme: the hex record rewritten to name another repository moves the digest.
    assert await apply_record(valkey, DID, keys.MANIFEST, hexkey, manifest("third", d), cid="c4", rev="3l0000000000f")
    assert await apply_record(valkey, DID, keys.MANIFEST, hexkey, manifest("fourth", d), cid="c5", rev="3l0000000000g")
    assert await held("third") == set() and await held("fourth") == {d} and await held("second") == {d}


@ON_SINGLE_AND_CLUSTER
async def test_entries_stored_before_the_rkey_sets_keep_their_record(valkey: Any) -> None:
    """An `m:` entry from before `mo:` sets existed names its record in the payload: a second
    record of the same pair arriving later must not make the first one's delete drop it."""
    d = digest_of("legacy")
    hexkey = keys.manifest_rkey(d)
    assert await apply_record(valkey, DID, keys.MANIFEST, hexkey, manifest("app", d), cid="c1", rev="3l0000000000a")
    await valkey.delete(keys.manifest_rkeys(DID, "app", d))  # as written by the previous version
    assert await apply_record(valkey, DID, keys.MANIFEST, "3kabcdefghij2", manifest("app", d), cid="c2",
                              rev="3l0000000000b")
    assert await apply_record(valkey, DID, keys.MANIFEST, "3kabcdefghij2", None, cid=None, rev="3l0000000000c")
    entries, _ = await read.read_manifests(valkey, DID, "app")
    assert [e.digest for e in entries] == [d]


def test_manifest_rkeys_are_valid_and_name_their_digest() -> None:
    from atcr.syntax import is_record_key

    for seed in ("a", "b"):
        d = digest_of(seed)
        for repo in ("app", "team/app", "a" * 255):
            rk = keys.repo_manifest_rkey(repo, d)
            assert is_record_key(rk) and keys.digest_from_rkey(rk) == d
        assert keys.digest_from_rkey(keys.manifest_rkey(d)) == d
    assert keys.repo_manifest_rkey("app", digest_of("a")) != keys.repo_manifest_rkey("app2", digest_of("a"))
    assert keys.digest_from_rkey("3kabcdefghij2") is None
    assert keys.digest_from_rkey(digest_of("a")[7:] + "-short") is None
