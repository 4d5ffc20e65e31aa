"""The loader against the real local PDS (through a counting proxy), with real Valkey."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from appview.cache import Loader
from appview.cache import loader as loader_module
from atcr.errors import HandleNotFound, UpstreamUnavailable
from atcr.http import SafeHttpClient
from atcr.identity import did_web_for_url
from atcr.readmodel import keys, stats_rkey
from atcr.xrpc import BearerAuth, XrpcClient
from tests.integration.readmodel.conftest import manifest_bytes, now, push
from tests.support.counting_proxy import CountingProxy
from tests.support.pdsnet import Account, TestNetwork, create_account
from tests.support.valkey_cluster import ON_SINGLE_AND_CLUSTER

pytestmark = pytest.mark.integration

LIST = "com.atproto.repo.listRecords"


@ON_SINGLE_AND_CLUSTER
async def test_cold_repository_resolves_from_pds_alone(
    valkey: Any, http: SafeHttpClient, pds_account: Account, make_loader: Callable[..., Loader], proxy: CountingProxy
) -> None:
    raw_v1, raw_old = manifest_bytes(), manifest_bytes()
    d1 = await push(http, pds_account, "app", "v1", raw_v1)
    # Written by an older ATCR AppView: tag by manifestDigest only under its own rkey, hold by URL.
    d_old = await push(
        http,
        pds_account,
        "app",
        "latest",
        raw_old,
        legacy_hold_url="https://hold01.atcr.io",
        legacy_tag_rkey="3kabcdefghij2",
    )
    await valkey.flushall()
    proxy.reset()
    loader = make_loader()

    ident = await loader.identity(pds_account.handle)
    assert ident.did == pds_account.did and ident.handle == pds_account.handle

    assert await loader.tags(ident.did, "app") == {"v1": d1, "latest": d_old}
    tag = await loader.tag(ident.did, "app", "latest")
    assert tag is not None and tag.rkey == "3kabcdefghij2" and tag.digest == d_old

    m1 = await loader.manifest(ident.did, "app", d1)
    assert m1 is not None
    assert m1.raw == raw_v1 and hashlib.sha256(m1.raw).hexdigest() == d1[7:]
    assert m1.hold_did == "did:web:hold.example" and m1.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert m1.size == len(raw_v1) and m1.cid

    legacy = await loader.manifest(ident.did, "app", d_old)
    assert legacy is not None and legacy.raw == raw_old
    assert legacy.hold_did == did_web_for_url("https://hold01.atcr.io") == "did:web:hold01.atcr.io"

    assert await loader.repositories(ident.did) == ["app"]
    assert {m.digest for m in await loader.manifests(ident.did, "app")} == {d1, d_old}
    assert await loader.manifest(ident.did, "app", "sha256:" + "0" * 64) is None
    assert await loader.tags(ident.did, "nothing-here") == {}
    # Everything came from PDS queries: the proxy saw them.
    assert proxy.count(LIST, keys.TAG) == 1 and proxy.count("com.atproto.sync.getBlob") == 2

    # A second loader (another replica) answers from Valkey alone.
    proxy.reset()
    other = make_loader()
    assert (await other.manifest(ident.did, "app", d1)).raw == raw_v1  # type: ignore[union-attr]
    assert await other.tags(ident.did, "app") == {"v1": d1, "latest": d_old}
    assert sum(proxy.calls.values()) == 0


@ON_SINGLE_AND_CLUSTER
async def test_hundred_concurrent_cold_requests_make_one_listing_per_collection(
    valkey: Any, http: SafeHttpClient, pds_account: Account, make_loader: Callable[..., Loader], proxy: CountingProxy
) -> None:
    raw = manifest_bytes()
    digest = await push(http, pds_account, "busy", "latest", raw)
    await push(http, pds_account, "busy", "v2", manifest_bytes())
    await valkey.flushall()
    proxy.reset()
    replicas = [make_loader() for _ in range(4)]

    async def request(i: int) -> tuple[dict[str, str], bytes, int]:
        loader = replicas[i % len(replicas)]
        ident = await loader.identity(pds_account.handle)
        tags = await loader.tags(ident.did, "busy")
        manifest = await loader.manifest(ident.did, "busy", tags["latest"])
        listed = await loader.manifests(ident.did, "busy")
        assert manifest is not None
        return tags, manifest.raw, len(listed)

    results = await asyncio.gather(*(request(i) for i in range(100)))
    assert all(r == results[0] for r in results)
    assert results[0][0]["latest"] == digest and results[0][1] == raw and results[0][2] == 2
    assert proxy.count(LIST, keys.TAG) == 1
    assert proxy.count(LIST, keys.MANIFEST) == 1
    assert proxy.count("com.atproto.repo.getRecord", keys.MANIFEST) <= 1
    assert proxy.count("com.atproto.sync.getBlob") == 1
    assert proxy.count("com.atproto.identity.resolveHandle") == 1


async def _refreshes_done(loader: Loader, within: float = 30.0) -> None:
    """Wait until the loader's background refreshes have all finished (a deadline that only bounds a hang)."""
    async with asyncio.timeout(within):
        while loader._tasks:
            await asyncio.sleep(0.01)


async def test_pds_down_serves_cache_and_fails_fast_for_new_names(
    valkey: Any,
    http: SafeHttpClient,
    pds_account: Account,
    make_loader: Callable[..., Loader],
    proxy: CountingProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = manifest_bytes()
    digest = await push(http, pds_account, "web", "latest", raw)
    # fresh_ttl=0: every later read is stale and tries a background refresh against the dead PDS.
    # upstream_timeout=30 s: an answer within 10 s of a hanging upstream did not wait for it,
    # however busy the machine is (no stopwatch bound near the timeout).
    loader = make_loader(fresh_ttl=0.0, identity_fresh_ttl=0.0, upstream_timeout=30.0, failure_backoff=30.0)
    ident = await loader.identity(pds_account.handle)
    assert (await loader.manifest(ident.did, "web", digest)).raw == raw  # type: ignore[union-attr]
    assert await loader.tags(ident.did, "web") == {"latest": digest}

    proxy.set_mode("hang")
    caplog.set_level(logging.WARNING, logger="appview.cache")
    for _ in range(20):
        started = time.monotonic()
        assert (await loader.identity(pds_account.handle)).did == ident.did
        assert await loader.tags(ident.did, "web") == {"latest": digest}
        assert (await loader.manifest(ident.did, "web", digest)).raw == raw  # type: ignore[union-attr]
        assert time.monotonic() - started < 10, "a cached answer must not wait for the upstream (30 s timeout)"
        await asyncio.sleep(0.05)

    await proxy.stop()  # now the port refuses connections (and the hanging refreshes get a 503)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        await loader.identity("never-seen-2.test")
    assert time.monotonic() - started < 10, "a refused connection fails at once, not after the 30 s timeout"
    assert (await loader.manifest(ident.did, "web", digest)).raw == raw  # type: ignore[union-attr]
    await _refreshes_done(loader)  # the background refreshes have failed (and logged) by now

    down = [r for r in caplog.records if "unavailable" in r.getMessage()]
    hosts = {r.getMessage().split()[1] for r in down}
    assert len(down) == len(hosts) <= 2, [r.getMessage() for r in down]  # once per upstream, not per request

    proxy.set_mode("up")
    await proxy.start()


async def test_a_new_name_fails_within_the_upstream_timeout_and_then_at_once(
    valkey: Any, make_loader: Callable[..., Loader], proxy: CountingProxy
) -> None:
    loader = make_loader(upstream_timeout=1.0, failure_backoff=30.0)
    other = make_loader(upstream_timeout=30.0, failure_backoff=30.0)  # another replica
    proxy.set_mode("hang")  # accepts and never answers: only the 1 s upstream_timeout ends the wait
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        async with asyncio.timeout(30):  # bounds a hang only; the proxy itself never answers
            await loader.identity("never-seen-1.test")
    assert time.monotonic() - started < 1.0 + 10, "bounded by upstream_timeout (1 s)"
    asked = proxy.count("com.atproto.identity.resolveHandle")
    assert asked >= 1

    # A recent failure answers at once: no new upstream request, on this replica or another one
    # whose 30 s upstream_timeout a wait on the hanging upstream could not have finished within 10 s.
    for replica in (loader, other):
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable):
            await replica.identity("never-seen-1.test")
        assert time.monotonic() - started < 10, "a recent failure answers without the upstream"
    assert proxy.count("com.atproto.identity.resolveHandle") == asked
    proxy.set_mode("up")


async def test_unknown_handle_is_negatively_cached(
    valkey: Any, make_loader: Callable[..., Loader], proxy: CountingProxy
) -> None:
    loader = make_loader()
    for _ in range(50):
        with pytest.raises(HandleNotFound):
            await loader.identity("nobody-at-all.test")
    assert proxy.count("com.atproto.identity.resolveHandle") == 1


@ON_SINGLE_AND_CLUSTER
async def test_write_through_is_visible_without_a_listing(
    valkey: Any, http: SafeHttpClient, pds_account: Account, make_loader: Callable[..., Loader], proxy: CountingProxy
) -> None:
    await push(http, pds_account, "wt", "v1", manifest_bytes())
    loader = make_loader()
    did = pds_account.did
    first = await loader.tags(did, "wt")
    assert list(first) == ["v1"]
    proxy.reset()

    raw = manifest_bytes()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    client = XrpcClient(http, pds_account.pds_url, BearerAuth(pds_account.access_jwt))
    blob = await client.upload_blob(raw, "application/vnd.oci.image.manifest.v1+json")
    record = {
        "repository": "wt",
        "digest": digest,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "schemaVersion": 2,
        "manifestBlob": blob,
        "holdDid": "did:web:hold.example",
        "createdAt": now(),
    }
    out = await client.put_record(did, keys.MANIFEST, digest[7:], record)
    await loader.wrote_record(
        did, keys.MANIFEST, digest[7:], record, cid=out["cid"], raw_manifest=raw, rev=out.get("commit", {}).get("rev")
    )
    tag_record = {
        "repository": "wt",
        "tag": "v2",
        "manifest": f"at://{did}/{keys.MANIFEST}/{digest[7:]}",
        "createdAt": now(),
    }
    out = await client.put_record(did, keys.TAG, keys.tag_rkey("wt", "v2"), tag_record)
    await loader.wrote_record(
        did, keys.TAG, keys.tag_rkey("wt", "v2"), tag_record, cid=out["cid"], rev=out.get("commit", {}).get("rev")
    )

    assert (await loader.tags(did, "wt"))["v2"] == digest
    assert (await loader.manifest(did, "wt", digest)).raw == raw  # type: ignore[union-attr]
    assert sum(proxy.calls.values()) == 0

    await client.delete_record(did, keys.TAG, keys.tag_rkey("wt", "v2"))
    await loader.deleted_record(did, keys.TAG, keys.tag_rkey("wt", "v2"))
    assert "v2" not in await loader.tags(did, "wt")


async def test_profiles_pages_stars_and_hold_records(
    valkey: Any, http: SafeHttpClient, pds_network: TestNetwork, make_loader: Callable[..., Loader]
) -> None:
    owner = create_account(pds_network.pds_url, "owner")
    fan = create_account(pds_network.pds_url, "fan")
    holds = [create_account(pds_network.pds_url, "hold"), create_account(pds_network.pds_url, "hold")]
    oc = XrpcClient(http, owner.pds_url, BearerAuth(owner.access_jwt))

    await push(http, owner, "tool", "latest", manifest_bytes(), hold=holds[0].did)
    await push(http, owner, "tool", "old", manifest_bytes(), hold=holds[1].did)
    await oc.put_record(owner.did, keys.PROFILE, "self", {"defaultHold": holds[0].did, "createdAt": now()})
    await oc.put_record(
        owner.did,
        keys.REPO_PAGE,
        "tool",
        {"repository": "tool", "description": "A shiny build tool", "createdAt": now()},
    )
    avatar = await oc.upload_blob(b"\x89PNG\r\n\x1a\n" + b"0" * 32, "image/png")
    await oc.put_record(owner.did, keys.BSKY_PROFILE, "self", {"displayName": "Owner", "avatar": avatar})
    fc = XrpcClient(http, fan.pds_url, BearerAuth(fan.access_jwt))
    await fc.put_record(
        fan.did, keys.STAR, "3kstar0000002", {"subject": f"at://{owner.did}/io.atcr.repo.page/tool", "createdAt": now()}
    )
    for i, hold in enumerate(holds):
        hc = XrpcClient(http, hold.pds_url, BearerAuth(hold.access_jwt))
        await hc.put_record(
            hold.did,
            keys.CAPTAIN,
            "self",
            {"owner": hold.did, "public": True, "allowAllCrew": i == 0, "deployedAt": now()},
        )
        await hc.put_record(
            hold.did,
            keys.CREW,
            "3kcrew000000" + str(i + 2),
            {"member": owner.did, "role": "write", "permissions": ["blob:read", "blob:write"], "addedAt": now()},
        )
        await hc.put_record(
            hold.did,
            keys.STATS,
            stats_rkey(owner.did, "tool"),
            {
                "ownerDid": owner.did,
                "repository": "tool",
                "pullCount": 10 * (i + 1),
                "pushCount": i + 1,
                "updatedAt": now(),
            },
        )
    await valkey.flushall()
    loader = make_loader()

    assert (await loader.profile(owner.did)) == {
        "$type": keys.PROFILE,
        "defaultHold": holds[0].did,
        "createdAt": (await loader.profile(owner.did) or {})["createdAt"],
    }
    assert await loader.profile(fan.did) is None
    page = await loader.repo_page(owner.did, "tool")
    assert page is not None and page["description"] == "A shiny build tool"
    user = await loader.user(owner.did)
    assert user.display_name == "Owner" and user.avatar_cid == avatar["ref"]["$link"]
    assert user.avatar_url and user.avatar_url.startswith("http://127.0.0.1:")

    assert await loader.starred(fan.did) == [f"{owner.did}/tool"]
    assert await loader.star_count(owner.did, "tool") == 1

    captain = await loader.captain(holds[0].did)
    assert captain is not None and captain["allowAllCrew"] is True
    member = await loader.crew_member(holds[1].did, owner.did)
    assert member is not None and member.role == "write" and "blob:write" in member.permissions
    assert await loader.crew_member(holds[1].did, fan.did) is None

    stats = await loader.stats(owner.did, "tool")
    assert (stats.pull_count, stats.push_count) == (30, 3)
    assert set(stats.holds) == {h.did for h in holds}
    assert await loader.popular(5, by="pulls") == [f"{owner.did}/tool"]
    assert await loader.popular(5, by="stars") == [f"{owner.did}/tool"]

    results = await loader.search("shiny")
    assert results.repositories == [f"{owner.did}/tool"]
    prefix = owner.handle.split(".")[0][:-2]  # "owner-c12"
    results = await loader.search(prefix + " tool")  # owner's handle + repository name
    assert results.repositories == [f"{owner.did}/tool"] and results.users == []
    results = await loader.search(prefix)
    assert results.users == [owner.did] and results.repositories == [f"{owner.did}/tool"]
    cards = await loader.summaries([f"{owner.did}/tool"])
    assert cards[0].description == "A shiny build tool" and cards[0].star_count == 1 and cards[0].pull_count == 30
    assert cards[0].handle == owner.handle
    assert await loader.catalog(None, 10) == [f"{owner.handle}/tool"]


async def test_stale_entries_are_served_while_one_refresh_runs(
    valkey: Any, http: SafeHttpClient, pds_account: Account, make_loader: Callable[..., Loader], proxy: CountingProxy
) -> None:
    digest = await push(http, pds_account, "swr", "latest", manifest_bytes())
    loader = make_loader(fresh_ttl=0.0)
    assert await loader.tags(pds_account.did, "swr") == {"latest": digest}
    proxy.reset()
    results = await asyncio.gather(*(loader.tags(pds_account.did, "swr") for _ in range(50)))
    assert all(r == {"latest": digest} for r in results)
    await _refreshes_done(loader)  # every refresh those reads started has run to its end
    assert proxy.count(LIST, keys.TAG) == 1


async def test_staleness_is_bounded_when_the_pds_is_down(
    valkey: Any,
    http: SafeHttpClient,
    pds_account: Account,
    make_loader: Callable[..., Loader],
    proxy: CountingProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digest = await push(http, pds_account, "bounded", "latest", manifest_bytes())
    loader = make_loader(fresh_ttl=10.0, max_stale=60.0, upstream_timeout=1.0)
    assert await loader.tags(pds_account.did, "bounded") == {"latest": digest}
    proxy.set_mode("error")
    # The loader's clock is moved rather than slept on: entries' ages no longer depend on how
    # fast a busy machine runs the steps in between.
    real_now_ms, ahead = loader_module._now_ms, [0]
    monkeypatch.setattr(loader_module, "_now_ms", lambda: real_now_ms() + ahead[0])
    ahead[0] = 20_000  # past fresh_ttl (10 s), well within max_stale (60 s)
    assert await loader.tags(pds_account.did, "bounded") == {"latest": digest}  # stale, served
    ahead[0] = 61_000  # past max_stale
    with pytest.raises(UpstreamUnavailable):
        await loader.tags(pds_account.did, "bounded")  # too old to serve


async def test_a_failed_load_is_shared_with_waiting_replicas(
    valkey: Any, http: SafeHttpClient, pds_account: Account, make_loader: Callable[..., Loader], proxy: CountingProxy
) -> None:
    await push(http, pds_account, "fail", "latest", manifest_bytes())
    a, b = make_loader(), make_loader()
    await a.identity(pds_account.did)
    proxy.reset()
    proxy.set_mode("error")
    outcomes = await asyncio.gather(
        *(loader.tags(pds_account.did, "fail") for loader in (a, b, a, b)), return_exceptions=True
    )
    assert all(isinstance(o, UpstreamUnavailable) for o in outcomes), outcomes
    assert sum(proxy.calls.values()) == 1  # the first call of the one load failed; nobody retried it


async def test_bytes_that_do_not_match_the_digest_are_refused(
    valkey: Any, http: SafeHttpClient, pds_account: Account, make_loader: Callable[..., Loader]
) -> None:
    from atcr.errors import DigestMismatch

    raw = manifest_bytes()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    client = XrpcClient(http, pds_account.pds_url, BearerAuth(pds_account.access_jwt))
    wrong_blob = await client.upload_blob(manifest_bytes(), "application/vnd.oci.image.manifest.v1+json")
    record = {
        "repository": "evil",
        "digest": digest,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "schemaVersion": 2,
        "manifestBlob": wrong_blob,
        "holdDid": "did:web:hold.example",
        "createdAt": now(),
    }
    await client.put_record(pds_account.did, keys.MANIFEST, digest[7:], record)
    loader = make_loader()
    with pytest.raises(DigestMismatch):
        await loader.manifest(pds_account.did, "evil", digest)
    assert await valkey.get(keys.manifest_bytes(pds_account.did, digest)) is None
